"""The OpenAI-compatible proxy end to end: openai / LangChain clients → proxy → FakeOpenAIServer, all real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from langchain_openai import ChatOpenAI
from polling import until

from pacore_graph import VLLMClient
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest, Fault

PROBLEM = "What is 17 * 23?"
ANSWER = "The final answer is 391, since 17 times 23 is 391."
MARKER = "Reference Responses:"


def is_synthesis(request: FakeRequest) -> bool:
    return MARKER in (request.last_user_content or "")


def script(request: FakeRequest) -> FakeReply:
    """Explorers think then conclude; a request that sees references answers with ANSWER (after thinking)."""
    if is_synthesis(request):
        return FakeReply(
            content=f"<think>weighing the references</think>{ANSWER}", prompt_tokens=50, completion_tokens=9
        )
    return FakeReply(
        content=f"<think>work {request.index}</think>conclusion {request.index}: 391",
        prompt_tokens=10,
        completion_tokens=20,
    )


@contextlib.asynccontextmanager
async def stack(
    upstream_script=script, *, settings: ProxySettings | None = None, read_timeout: float = 30.0
) -> AsyncIterator[tuple[FakeOpenAIServer, PaCoReProxy]]:
    """A fake upstream, a pooled client for it, and the proxy on a free loopback port."""
    settings = settings or ProxySettings(port=0, shutdown_grace=2.0)
    async with FakeOpenAIServer(upstream_script) as server:
        async with VLLMClient(server.base_url, max_retries=0, read_timeout=read_timeout) as client:
            async with PaCoReProxy(client, settings) as proxy:
                yield server, proxy


_clients: list[openai.AsyncOpenAI] = []


def openai_client(proxy: PaCoReProxy, api_key: str = "unused") -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=api_key, max_retries=0, timeout=20)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def messages(problem: str = PROBLEM) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem}]


async def test_models_list_one_model_per_graph():
    async with stack() as (_, proxy):
        models = await openai_client(proxy).models.list()
    ids = [model.id for model in models.data]
    assert {"pacore-low", "pacore-medium", "pacore-high", "self-consistency", "sequential"} <= set(ids)
    high = next(model for model in models.data if model.id == "pacore-high")
    assert high.model_extra["pacore"]["schedule"] == [32, 4]


async def test_openai_client_gets_the_conclusion_and_the_round_pattern():
    async with stack() as (server, proxy):
        completion = await openai_client(proxy).chat.completions.create(
            model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": "3,2"}}
        )
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    # Round pattern at the upstream: 3 explorers on the bare problem, 2 on their references, 1 synthesis.
    plain = [r for r in server.requests if r.last_user_content == PROBLEM]
    referenced = [r for r in server.requests if is_synthesis(r)]
    assert (len(plain), len(referenced), len(server.requests)) == (3, 3, 6)
    assert all(r.body["model"] == "fake-model" for r in server.requests)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 3 * 10 + 2 * 50 + 50
    assert usage.completion_tokens == 3 * 20 + 2 * 9 + 9
    assert usage.model_extra["effective_ttc_tokens"] == usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.model_extra["pacore"]["schedule"] == [3, 2]
    assert [row["k"] for row in completion.model_extra["pacore"]["rounds"]] == [3, 2, 1]


async def test_sampling_fields_reach_every_round_and_pacore_overrides_them():
    async with stack() as (server, proxy):
        await openai_client(proxy).chat.completions.create(
            model="pacore-low",
            messages=messages(),
            temperature=0.3,
            max_tokens=77,
            extra_body={"pacore": {"schedule": [2], "temperature": 0.7}},
        )
    assert len(server.requests) == 3
    assert {r.body["temperature"] for r in server.requests} == {0.7}
    assert {r.body["max_tokens"] for r in server.requests} == {77}


async def test_multi_turn_keeps_earlier_turns_and_replaces_only_the_last_user_message():
    chat = [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": PROBLEM},
    ]
    async with stack() as (server, proxy):
        await openai_client(proxy).chat.completions.create(
            model="pacore-low", messages=chat, extra_body={"pacore": {"schedule": 2}}
        )
    final = server.requests[-1].messages
    assert final[:3] == chat[:3]
    assert MARKER in final[3]["content"] and PROBLEM in final[3]["content"]
    assert server.requests[0].messages == chat


async def test_stream_sends_true_synthesis_deltas_and_a_usage_chunk():
    async with stack() as (server, proxy):
        stream = await openai_client(proxy).chat.completions.create(
            model="pacore-low",
            messages=messages(),
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"pacore": {"schedule": 2}},
        )
        chunks = [c async for c in stream]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == ANSWER
    assert len(deltas) > 3  # word by word, as the upstream streamed them, not one block
    assert "think" not in "".join(deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == 2 * 20 + 9
    assert usage.model_extra["effective_ttc_tokens"] == 49
    # The synthesis itself was streamed from the upstream; the explorers were not.
    assert [r.stream for r in server.requests] == [False, False, True]


async def test_stream_sends_progress_as_sse_comments():
    async with stack() as (_, proxy):
        async with aiohttp.ClientSession() as session:
            body = {"model": "pacore-low", "messages": messages(), "stream": True, "pacore": {"schedule": 2}}
            async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                text = await response.text()
    comments = [line for line in text.splitlines() if line.startswith(":")]
    assert ": pacore round 1 started: k=2" in comments[0]
    assert any("final synthesis started" in line for line in comments)
    assert text.rstrip().endswith("data: [DONE]")


async def test_langchain_chat_openai_invoke_and_stream():
    async with stack() as (_, proxy):
        llm = ChatOpenAI(
            model="pacore-low",
            base_url=proxy.base_url,
            api_key="unused",
            max_retries=0,
            extra_body={"pacore": {"schedule": 2}},
        )
        message = await llm.ainvoke(PROBLEM)
        pieces = [piece.content async for piece in llm.astream(PROBLEM)]
    assert message.content == ANSWER
    assert "".join(str(p) for p in pieces) == ANSWER
    assert len([p for p in pieces if p]) > 3


async def test_self_consistency_streams_its_voted_answer():
    def boxed(request: FakeRequest) -> FakeReply:
        return FakeReply(content="<think>hm</think>so \\boxed{391}")

    async with stack(boxed) as (_, proxy):
        stream = await openai_client(proxy).chat.completions.create(
            model="self-consistency", messages=messages(), stream=True, extra_body={"pacore": {"schedule": 3}}
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "391"


async def test_wrong_key_401_and_right_key_200():
    settings = ProxySettings(port=0, api_key="s3cret")
    async with stack(settings=settings) as (server, proxy):
        with pytest.raises(openai.AuthenticationError) as info:
            await openai_client(proxy, "wrong").chat.completions.create(model="pacore-low", messages=messages())
        assert info.value.status_code == 401
        assert info.value.body["code"] == "invalid_api_key"
        completion = await openai_client(proxy, "s3cret").chat.completions.create(
            model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": 1}}
        )
    assert completion.choices[0].message.content == ANSWER
    assert len(server.requests) == 2  # the refused request never reached the upstream


async def test_oversized_body_is_413_json():
    async with stack(settings=ProxySettings(port=0, max_body_bytes=2048)) as (server, proxy):
        with pytest.raises(openai.APIStatusError) as info:
            await openai_client(proxy).chat.completions.create(model="pacore-low", messages=messages("x" * 5000))
    assert info.value.status_code == 413
    assert "2048 bytes" in info.value.body["message"]
    assert server.requests == []


@pytest.mark.parametrize(
    ("pacore", "fragment"),
    [
        ({"schedule": "4,zero"}, "invalid schedule '4,zero'"),
        ({"schedule": [0]}, "every K must be at least 1"),
        ({"schedule": "200,100"}, "runs 301 trajectories"),
        ({"schedul": "4"}, "pacore.schedul: Extra inputs are not permitted"),
    ],
)
async def test_bad_schedule_is_400_with_a_clear_message(pacore, fragment):
    async with stack() as (server, proxy):
        with pytest.raises(openai.BadRequestError) as info:
            await openai_client(proxy).chat.completions.create(
                model="pacore-low", messages=messages(), extra_body={"pacore": pacore}
            )
    assert fragment in info.value.body["message"]
    assert info.value.body["type"] == "invalid_request_error"
    assert server.requests == []


async def test_messages_without_a_user_question_are_400_even_when_streaming():
    async with stack() as (server, proxy):
        with pytest.raises(openai.BadRequestError, match="the problem is empty"):
            await openai_client(proxy).chat.completions.create(
                model="pacore-low", messages=[{"role": "user", "content": " "}], stream=True
            )
    assert server.requests == []


async def test_unknown_model_is_404_and_n_above_one_is_400():
    async with stack() as (_, proxy):
        client = openai_client(proxy)
        with pytest.raises(openai.NotFoundError, match="pacore-high"):
            await client.chat.completions.create(model="gpt-4o", messages=messages())
        with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
            await client.chat.completions.create(model="pacore-low", messages=messages(), n=2)


async def test_overload_is_429_with_retry_after():
    gate = asyncio.Event()

    async def slow(request: FakeRequest) -> FakeReply:
        await gate.wait()
        return script(request)

    settings = ProxySettings(port=0, max_concurrent_runs=1, retry_after=3)
    async with stack(slow, settings=settings) as (_, proxy):
        client = openai_client(proxy)
        first = asyncio.create_task(
            client.chat.completions.create(
                model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": 1}}
            )
        )
        await until(lambda: proxy.in_flight > 0)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="pacore-low", messages=messages())
        gate.set()
        assert (await first).choices[0].message.content == ANSWER
    assert info.value.response.headers["Retry-After"] == "3"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault.http_error(500), 502, "upstream_failed"),
        (Fault.http_error(400, "prompt too long"), 400, "upstream_rejected"),
    ],
)
async def test_upstream_errors_map_to_openai_errors(fault, status, code):
    async with stack(lambda request: FakeReply(fault=fault)) as (_, proxy):
        with pytest.raises(openai.APIStatusError) as info:
            await openai_client(proxy).chat.completions.create(model="pacore-low", messages=messages())
    assert info.value.status_code == status
    assert info.value.body["code"] == code


async def test_upstream_timeout_is_504():
    async with stack(lambda request: FakeReply(delay=2.0), read_timeout=0.2) as (_, proxy):
        with pytest.raises(openai.APIStatusError) as info:
            await openai_client(proxy).chat.completions.create(
                model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": 1}}
            )
    assert info.value.status_code == 504


async def test_stream_reports_an_upstream_failure_as_an_error_event():
    def failing_synthesis(request: FakeRequest) -> FakeReply:
        return FakeReply(fault=Fault.http_error(500)) if is_synthesis(request) else script(request)

    async with stack(failing_synthesis) as (_, proxy):
        stream = await openai_client(proxy).chat.completions.create(
            model="pacore-low", messages=messages(), stream=True, extra_body={"pacore": {"schedule": 2}}
        )
        with pytest.raises(openai.APIError, match="HTTP 500"):
            async for _ in stream:
                pass


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnected_client_cancels_its_upstream_requests(stream):
    # Each explorer's reply drips in 8 pieces over ~1.6 s; the client gives up after 0.3 s.
    slow = FakeReply(content="<think>w</think>c", fault=Fault.slow_drip(0.2))
    async with stack(lambda request: slow) as (server, proxy):
        async with aiohttp.ClientSession() as session:
            body = {"model": "pacore-low", "messages": messages(), "stream": stream, "pacore": {"schedule": 3}}
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                        await response.read()
        await until(lambda: proxy.in_flight == 0)
        assert proxy.in_flight == 0
        await asyncio.sleep(1.8)  # past the time the replies would have completed
    assert len(server.requests) == 3  # the explorers started; no synthesis followed
    # Usage is counted only for replies sent whole: none was, since the proxy dropped every connection.
    assert server.total_usage.completion_tokens == 0


async def test_graceful_shutdown_finishes_in_flight_and_refuses_new_requests():
    gate = asyncio.Event()

    async def slow(request: FakeRequest) -> FakeReply:
        await gate.wait()
        return script(request)

    async with FakeOpenAIServer(slow) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            proxy = PaCoReProxy(client, ProxySettings(port=0, shutdown_grace=5))
            await proxy.start()
            api = openai_client(proxy)
            first = asyncio.create_task(
                api.chat.completions.create(
                    model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": 1}}
                )
            )
            await until(lambda: proxy.in_flight > 0)
            stopping = asyncio.create_task(proxy.shutdown())
            await asyncio.sleep(0.05)
            with pytest.raises(openai.APIStatusError) as info:
                await api.chat.completions.create(model="pacore-low", messages=messages())
            assert info.value.status_code == 503
            gate.set()
            assert (await first).choices[0].message.content == ANSWER
            await stopping


async def test_health():
    async with stack() as (_, proxy):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy.url}/health") as response:
                assert response.status == 200
                assert json.loads(await response.text())["status"] == "ok"


def test_pacore_serve_command_serves_and_drains_on_sigint():
    with FakeOpenAIServer(script).in_thread() as server:
        command = [sys.executable, "-m", "pacore_graph.cli", "serve", "--upstream", server.base_url, "--port", "0"]
        proxy = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.stderr is not None
            line = proxy.stderr.readline()
            base_url = re.search(r"PaCoRe proxy on (http://127\.0\.0\.1:\d+/v1)", line).group(1)
            client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)
            with client:
                completion = client.chat.completions.create(
                    model="pacore-low", messages=messages(), extra_body={"pacore": {"schedule": 2}}
                )
            assert completion.choices[0].message.content == ANSWER
        finally:
            proxy.send_signal(signal.SIGINT)
            _, rest = proxy.communicate(timeout=20)
    assert proxy.returncode == 0, rest
    assert "draining" in rest


async def test_concurrent_requests_share_one_window_and_later_rounds_go_first():
    # Two chat requests at once through a proxy whose upstream client holds 2 sequences: the upstream never sees
    # more than 2, and the first request's synthesis overtakes the second one's remaining explorers.
    live = peak = 0
    arrived = asyncio.Event()  # the first request reached the server

    async def slow(request: FakeRequest) -> FakeReply:
        nonlocal live, peak
        arrived.set()
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.05)
        live -= 1
        return script(request)

    async with (
        FakeOpenAIServer(slow) as server,
        VLLMClient(server.base_url, max_concurrency=2, adaptive_concurrency=False) as client,
        PaCoReProxy(client, ProxySettings(port=0, shutdown_grace=2.0)) as proxy,
    ):
        api = openai_client(proxy)

        async def ask(problem: str, after_first_request: bool) -> None:
            if after_first_request:  # B starts once A's explorers reached the server, however slow the machine is
                await arrived.wait()
            await api.chat.completions.create(
                model="pacore-low", messages=messages(problem), extra_body={"pacore": {"schedule": "4"}}
            )

        await asyncio.gather(ask("Problem A: 1 + 1?", False), ask("Problem B: 2 + 2?", True))
    assert peak == 2 and len(server.requests) == 10
    order = [
        ("S" if is_synthesis(r) else "E") + r.body["messages"][-1]["content"].split("Problem ")[1][0]
        for r in server.requests
    ]
    assert order.index("SA") < max(i for i, step in enumerate(order) if step == "EB"), order
