"""Nothing the HTTP pieces open outlives them: once a run and its event loop have ended, the collector finds no
socket, transport or session left open.

Each case runs on a loop of its own (``asyncio.run``) and collects after it ends, so a connection left open shows
here, in the test that opened it: while its loop is alive the selector still holds it, and otherwise it would
surface, as a ResourceWarning, in whichever later test the collector happens to run.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable

import aiohttp
import openai
from typer.testing import CliRunner

from pacore_graph import VLLMClient, build_pacore_graph, run_graph
from pacore_graph.cli.main import app
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer

PROBLEM = [{"role": "user", "content": "What is 17 * 23?"}]


def left_open(run: Callable[[], object]) -> list[str]:
    """The ResourceWarnings raised during ``run()``, or by the collector after it, for what it left open."""
    gc.collect()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        run()
        gc.collect()
    return [str(warning.message) for warning in seen if issubclass(warning.category, ResourceWarning)]


def assert_nothing_left_running() -> None:
    """No task but the caller's is left: ``asyncio.run`` would cancel a leftover one, hiding what it holds open."""
    assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()


def script(request):
    return FakeReply(content=f"<think>work</think>Attempt {request.index}: 391")


def test_a_client_that_follows_the_servers_load_leaves_nothing_open():
    async def run() -> None:
        # The simulator serves vLLM's /metrics, so the client's load watcher runs and has a session of its own.
        async with SimulatorServer(SimulatorConfig(time_scale=0)) as server, VLLMClient(server.base_url) as client:
            result = await run_graph(build_pacore_graph(client, "4,2"), {"messages": PROBLEM})
        assert result.answer and len(server.requests) == 7
        assert_nothing_left_running()

    assert left_open(lambda: asyncio.run(run())) == []


def test_a_run_cancelled_with_requests_in_flight_leaves_nothing_open():
    async def run() -> None:
        all_sent = asyncio.Event()

        def slow(request):
            if request.index == 3:
                all_sent.set()  # the round's four explorers have reached the server
            return FakeReply(content="<think>w</think>391", delay=30)

        async with FakeOpenAIServer(slow) as server, VLLMClient(server.base_url, max_retries=0) as client:
            task = asyncio.ensure_future(run_graph(build_pacore_graph(client, "4"), {"messages": PROBLEM}))
            await asyncio.wait_for(all_sent.wait(), 30)
            assert len(server.requests) == 4
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert_nothing_left_running()

    assert left_open(lambda: asyncio.run(run())) == []


def test_the_cli_against_a_server_in_a_thread_leaves_nothing_open():
    def run() -> None:
        with FakeOpenAIServer(script).in_thread() as server:
            result = CliRunner().invoke(app, ["run", "What is 17 * 23?", "-s", "2", "--base-url", server.base_url])
        assert result.exit_code == 0, result.output

    assert left_open(run) == []


def test_the_proxy_and_its_clients_leave_nothing_open():
    async def run() -> None:
        settings = ProxySettings(port=0, shutdown_grace=2.0)
        async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
            async with PaCoReProxy(client, settings) as proxy:
                body = {"model": "pacore-low", "messages": PROBLEM, "pacore": {"schedule": "2"}}
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                        assert response.status == 200, await response.text()
                async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0) as sdk:
                    answer = await sdk.chat.completions.create(
                        model="pacore-low", messages=PROBLEM, extra_body={"pacore": {"schedule": "2"}}
                    )
        assert answer.choices[0].message.content
        assert_nothing_left_running()

    assert left_open(lambda: asyncio.run(run())) == []
