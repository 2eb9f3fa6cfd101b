"""The proxy's defences, attacked over real HTTP: code-executing graphs, slow clients, foreign hosts and origins,
pathological JSON, huge upstream events, and sample-test extraction that must stay linear."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pacore_graph import ConfigError, SamplingParams, VLLMClient
from pacore_graph.graphs.code_verified import sample_tests_from_text
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

PROBLEM = "What is 17 * 23?"


def script(request: FakeRequest) -> FakeReply:
    return FakeReply(content=f"<think>w</think>conclusion {request.index}: 391")


@contextlib.asynccontextmanager
async def stack(settings: ProxySettings) -> AsyncIterator[tuple[FakeOpenAIServer, PaCoReProxy]]:
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            async with PaCoReProxy(client, settings) as proxy:
                yield server, proxy


def body(model: str = "pacore-low") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": PROBLEM}], "pacore": {"schedule": 1}}


async def post(proxy: PaCoReProxy, payload: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{proxy.base_url}/chat/completions",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response:
            return response.status, json.loads(await response.text())


# -- graphs that execute code ------------------------------------------------------------------------------------


async def test_code_executing_graphs_are_disabled_by_default_and_listed_with_the_reason():
    async with stack(ProxySettings(port=0)) as (server, proxy):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy.base_url}/models") as response:
                models = await response.json()
            async with session.get(f"{proxy.base_url}/models/pacore-code-verified") as response:
                one = (response.status, await response.json())
        status, error = await post(proxy, body("pacore-code-verified"))
    served = [model["id"] for model in models["data"]]
    assert "pacore-code-verified" not in served and "pacore-low" in served
    assert all(model["pacore"]["executes_code"] is False for model in models["data"])
    disabled = {entry["id"]: entry["reason"] for entry in models["disabled"]}
    assert "--allow-code-execution" in disabled["pacore-code-verified"]
    assert one[0] == 403 and one[1]["error"]["code"] == "model_disabled"
    assert status == 403 and error["error"]["code"] == "model_disabled"
    assert "executes model-written code" in error["error"]["message"]
    assert server.requests == []


async def test_allow_code_execution_serves_them():
    async with stack(ProxySettings(port=0, allow_code_execution=True)) as (_, proxy):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy.base_url}/models") as response:
                models = await response.json()
    entry = next(model for model in models["data"] if model["id"] == "pacore-code-verified")
    assert entry["pacore"]["executes_code"] is True
    assert models["disabled"] == []


def test_naming_a_code_executing_graph_without_allowing_it_is_a_config_error():
    with pytest.raises(ConfigError, match="--allow-code-execution"):
        PaCoReProxy(VLLMClient("http://127.0.0.1:9/v1"), ProxySettings(graphs=("pacore-code-verified",)))


# -- slow clients ------------------------------------------------------------------------------------------------


async def _raw(proxy: PaCoReProxy, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_a_slow_body_gets_408_and_never_holds_a_run_place():
    settings = ProxySettings(port=0, max_concurrent_runs=1, body_timeout=1.0)
    async with stack(settings) as (_, proxy):
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        slow = [await _raw(proxy, head) for _ in range(3)]  # three clients trickle bodies they never finish
        await asyncio.sleep(0.2)
        assert proxy.in_flight == 0
        status, reply = await post(proxy, body())  # the one place is free for a real request
        assert status == 200, reply
        started = time.monotonic()
        answers = [await asyncio.wait_for(reader.readuntil(b"}}"), 10) for reader, _ in slow]
        assert time.monotonic() - started < 5
        for _, writer in slow:
            await close(writer)
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    assert b"request_timeout" in answers[0]


async def test_an_incomplete_request_head_is_dropped_after_the_header_timeout():
    async with stack(ProxySettings(port=0, header_timeout=1.0)) as (_, proxy):
        reader, writer = await _raw(proxy, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        for _ in range(4):  # a slowloris: one byte at a time, never finishing the head
            await asyncio.sleep(0.2)
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
        data = await asyncio.wait_for(reader.read(), 10)
        elapsed = time.monotonic() - started
        await close(writer)
    assert data == b""  # closed without a response
    assert elapsed < 5


# -- hosts, origins, CORS ----------------------------------------------------------------------------------------


async def test_a_foreign_host_is_refused_without_an_api_key():
    async with stack(ProxySettings(port=0)) as (server, proxy):
        status, error = await post(proxy, body(), {"Host": "rebound.attacker.example"})
        ok, _ = await post(proxy, body(), {"Host": f"localhost:{proxy.url.rsplit(':', 1)[1]}"})
    assert status == 403 and error["error"]["code"] == "host_not_allowed"
    assert "--allowed-host" in error["error"]["message"]
    assert ok == 200
    assert len(server.requests) == 2  # only the allowed request ran (one explorer, one synthesis)


async def test_allowed_hosts_and_an_api_key_lift_the_host_check():
    async with stack(ProxySettings(port=0, allowed_hosts=("proxy.internal",))) as (_, proxy):
        assert (await post(proxy, body(), {"Host": "proxy.internal:8080"}))[0] == 200
        assert (await post(proxy, body(), {"Host": "other.example"}))[0] == 403
    async with stack(ProxySettings(port=0, api_key="k")) as (_, proxy):
        status, _ = await post(proxy, body(), {"Host": "any.example", "Authorization": "Bearer k"})
    assert status == 200


async def test_a_page_of_another_origin_is_refused_and_no_cors_is_sent():
    async with stack(ProxySettings(port=0)) as (server, proxy):
        status, error = await post(proxy, body(), {"Origin": "https://evil.example"})
        async with aiohttp.ClientSession() as session:
            async with session.options(
                f"{proxy.base_url}/chat/completions",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            ) as response:
                preflight = (response.status, response.headers.get("Access-Control-Allow-Origin"))
            async with session.get(f"{proxy.base_url}/models", headers={"Origin": proxy.url}) as response:
                same_origin = (response.status, response.headers.get("Access-Control-Allow-Origin"))
    assert status == 403 and error["error"]["code"] == "origin_not_allowed"
    assert preflight == (403, None)
    assert same_origin == (200, None)
    assert server.requests == []


async def test_a_configured_cors_origin_gets_cors_headers_and_its_preflight():
    settings = ProxySettings(port=0, cors_origins=("https://app.example",))
    async with stack(settings) as (_, proxy):
        async with aiohttp.ClientSession() as session:
            async with session.options(
                f"{proxy.base_url}/chat/completions",
                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
            ) as response:
                preflight = (response.status, dict(response.headers))
            async with session.post(
                f"{proxy.base_url}/chat/completions", json=body(), headers={"Origin": "https://app.example"}
            ) as response:
                posted = (response.status, response.headers.get("Access-Control-Allow-Origin"))
    assert preflight[0] == 204
    assert preflight[1]["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in preflight[1]["Access-Control-Allow-Methods"]
    assert posted == (200, "https://app.example")


# -- pathological JSON -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 500])
async def test_deeply_nested_json_is_a_400_in_openai_shape(depth):
    nested = b'{"model": "pacore-low", "messages": [{"role": "user", "content": "q", "x": ' + b"[" * depth
    payload = nested + b"]" * depth + b"}]}"
    async with stack(ProxySettings(port=0)) as (server, proxy):
        status, error = await post(proxy, payload)
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "invalid_json"
    assert "levels deep" in error["error"]["message"]
    assert server.requests == []


# -- huge upstream events ----------------------------------------------------------------------------------------


async def test_the_client_reads_upstream_sse_events_of_several_mib():
    big = "x" * (4 << 20)  # one word, so the fake server sends it as one 4 MiB event

    async with FakeOpenAIServer(lambda request: FakeReply(content=big)) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            text = "".join(
                [
                    chunk.content
                    async for chunk in client.stream_chat([{"role": "user", "content": "q"}], SamplingParams())
                ]
            )
    assert text == big


# -- sample-test extraction --------------------------------------------------------------------------------------


def test_sample_test_extraction_is_linear_on_headers_without_outputs():
    text = "Sample Input\nx\n" * 4000  # 60 KB: quadratic scanning took seconds here, and grows fourfold per doubling
    started = time.perf_counter()
    assert sample_tests_from_text(text) == []
    assert time.perf_counter() - started < 1.0


def test_sample_test_extraction_reads_at_most_its_cap():
    from pacore_graph.graphs.code_verified import MAX_SAMPLE_TEXT_CHARS

    sample = "Sample Input\n1 2\nSample Output\n3\n\n"
    text = sample + "filler\n" * (MAX_SAMPLE_TEXT_CHARS // 7) + sample
    started = time.perf_counter()
    tests = sample_tests_from_text(text)
    assert time.perf_counter() - started < 2.0
    assert len(tests) == 1 and tests[0].output == "3\n"


def test_pacore_serve_refuses_to_serve_a_named_code_executing_graph_without_the_flag():
    import subprocess
    import sys

    with FakeOpenAIServer(script).in_thread() as server:
        command = [
            sys.executable, "-m", "pacore_graph.cli", "serve", "--upstream", server.base_url, "--port", "0",
            "--graphs", "pacore-code-verified",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 2
    message = result.stderr.decode().strip()
    assert "execute model-written code; pass --allow-code-execution" in message and len(message.splitlines()) == 1
