"""VLLMClient through real HTTP against the fake OpenAI server."""

import asyncio
import time

import pytest

from pacore_graph import (
    ConnectError,
    ProtocolError,
    SamplingParams,
    UpstreamError,
    UpstreamTimeoutError,
    VLLMClient,
)
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault, fail_first, reply_sequence

USER = [{"role": "user", "content": "What is 2+2?"}]


def fast_client(url: str, **kwargs) -> VLLMClient:
    kwargs.setdefault("backoff_base", 0.01)
    return VLLMClient(url, **kwargs)


async def test_request_body_carries_params_and_vllm_extras():
    async with FakeOpenAIServer() as server, fast_client(server.base_url, model="m") as client:
        params = SamplingParams(
            temperature=0.6, top_p=0.95, max_tokens=64, seed=7, stop=["\n\n"], extra={"top_k": 20, "min_p": 0.1}
        )
        await client.chat(USER, params)
        body = server.requests[0].body
    assert body == {
        "model": "m",
        "messages": USER,
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 64,
        "seed": 7,
        "stop": ["\n\n"],
        "top_k": 20,
        "min_p": 0.1,
    }


async def test_reads_content_reasoning_finish_reason_and_usage():
    reply = FakeReply(content="four", reasoning="2+2 is 4", finish_reason="stop", prompt_tokens=11, completion_tokens=5)
    async with FakeOpenAIServer(lambda r: reply) as server, fast_client(server.base_url) as client:
        result = await client.chat(USER, SamplingParams())
    assert result.completions[0].content == "four"
    assert result.completions[0].reasoning == "2+2 is 4"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 5)
    assert result.model == "fake-model"


async def test_legacy_reasoning_content_key():
    reply = FakeReply(content="x", reasoning="old style", reasoning_key="reasoning_content")
    async with FakeOpenAIServer(lambda r: reply) as server, fast_client(server.base_url) as client:
        assert (await client.chat(USER, SamplingParams())).completions[0].reasoning == "old style"


async def test_model_is_discovered_from_the_server():
    async with FakeOpenAIServer(model="served-name") as server, fast_client(server.base_url) as client:
        await client.chat(USER, SamplingParams())
        assert server.requests[0].body["model"] == "served-name"


async def test_n_returns_n_completions_in_one_request():
    replies = [FakeReply(content=f"c{i}", completion_tokens=3) for i in range(3)]
    async with FakeOpenAIServer(lambda r: replies) as server, fast_client(server.base_url) as client:
        result = await client.chat(USER, SamplingParams(), n=3)
    assert [c.content for c in result.completions] == ["c0", "c1", "c2"]
    assert len(server.requests) == 1 and server.requests[0].body["n"] == 3
    assert result.usage.completion_tokens == 9


async def test_one_pooled_connection_is_reused():
    async with FakeOpenAIServer() as server, fast_client(server.base_url, model="m") as client:
        for _ in range(3):
            await client.chat(USER, SamplingParams())
    peers = {r.peer for r in server.requests}
    assert len(server.requests) == 3
    assert len(peers) == 1 and None not in peers, "keep-alive: all requests share one TCP connection"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_then_succeeds(status):
    async with FakeOpenAIServer(fail_first(2, Fault.http_error(status))) as server:
        async with fast_client(server.base_url, model="m") as client:
            result = await client.chat(USER, SamplingParams())
    assert result.completions[0].content == "ok"
    assert len(server.requests) == 3


async def test_429_honours_retry_after():
    async with FakeOpenAIServer(fail_first(1, Fault.rate_limited(retry_after=0.5))) as server:
        async with fast_client(server.base_url, model="m") as client:
            started = time.perf_counter()
            await client.chat(USER, SamplingParams())
            waited = time.perf_counter() - started
    assert len(server.requests) == 2
    assert waited >= 0.5


async def test_connection_reset_is_retried():
    async with FakeOpenAIServer(fail_first(1, Fault.reset())) as server:
        async with fast_client(server.base_url, model="m") as client:
            assert (await client.chat(USER, SamplingParams())).completions[0].content == "ok"
    assert len(server.requests) == 2


async def test_retries_give_up_with_status_and_body():
    async with FakeOpenAIServer(lambda r: FakeReply(fault=Fault.http_error(503, "engine overloaded"))) as server:
        async with fast_client(server.base_url, model="m", max_retries=2) as client:
            with pytest.raises(UpstreamError) as info:
                await client.chat(USER, SamplingParams())
    assert len(server.requests) == 3
    assert info.value.status == 503
    assert "engine overloaded" in info.value.body
    assert "HTTP 503" in str(info.value)


async def test_4xx_fails_at_once_with_the_server_message():
    fault = Fault.http_error(400, "maximum context length is 8192 tokens", error_type="BadRequestError")
    async with FakeOpenAIServer(lambda r: FakeReply(fault=fault)) as server:
        async with fast_client(server.base_url, model="m") as client:
            with pytest.raises(UpstreamError, match="HTTP 400: maximum context length is 8192 tokens"):
                await client.chat(USER, SamplingParams())
    assert len(server.requests) == 1


async def test_api_key_is_sent_and_never_shown():
    async with FakeOpenAIServer(api_key="sk-secret") as server:
        async with fast_client(server.base_url, model="m", api_key="sk-secret") as client:
            await client.chat(USER, SamplingParams())
            assert "sk-secret" not in repr(client)
        async with fast_client(server.base_url, model="m", api_key="wrong") as client:
            with pytest.raises(UpstreamError) as info:
                await client.chat(USER, SamplingParams())
    assert info.value.status == 401
    assert "--api-key" in str(info.value)
    assert "wrong" not in str(info.value)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.malformed_json(), "not JSON"),
        (Fault.html_error(), "HTTP 502"),
        (Fault.no_choices(), "asked for 1 completion"),
    ],
)
async def test_malformed_answers_fail_precisely(fault, message):
    async with FakeOpenAIServer(lambda r: FakeReply(fault=fault)) as server:
        async with fast_client(server.base_url, model="m", max_retries=0) as client:
            with pytest.raises((ProtocolError, UpstreamError), match=message):
                await client.chat(USER, SamplingParams())


async def test_null_content_is_an_empty_conclusion():
    async with FakeOpenAIServer(lambda r: FakeReply(content=None, reasoning="thinking", finish_reason="length")) as s:
        async with fast_client(s.base_url, model="m") as client:
            completion = (await client.chat(USER, SamplingParams())).completions[0]
    assert completion.content == "" and completion.finish_reason == "length"


async def test_read_timeout_is_retried_then_reported():
    async with FakeOpenAIServer(lambda r: FakeReply(delay=1.0)) as server:
        async with fast_client(server.base_url, model="m", read_timeout=0.2, max_retries=1) as client:
            with pytest.raises(UpstreamTimeoutError, match="did not answer in time after 2 attempts"):
                await client.chat(USER, SamplingParams())
    assert len(server.requests) == 2


async def test_unreachable_server_is_a_connect_error_with_a_hint():
    async with FakeOpenAIServer() as server:
        url = server.base_url
    async with fast_client(url, model="m", max_retries=1) as client:
        with pytest.raises(ConnectError, match="--base-url or PACORE_BASE_URL"):
            await client.chat(USER, SamplingParams())


async def test_concurrency_cap_limits_requests_in_flight():
    in_flight = 0
    peak = 0

    async def script(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return FakeReply()

    async with FakeOpenAIServer(script) as server, fast_client(server.base_url, model="m", max_concurrency=3) as c:
        await asyncio.gather(*(c.chat(USER, SamplingParams()) for _ in range(10)))
    assert len(server.requests) == 10
    assert peak == 3


async def test_sequence_scripts_drive_a_whole_round_trip():
    async with FakeOpenAIServer(reply_sequence([FakeReply(content="a"), FakeReply(content="b")])) as server:
        async with fast_client(server.base_url, model="m") as client:
            first = await client.chat(USER, SamplingParams())
            second = await client.chat(USER, SamplingParams())
    assert (first.completions[0].content, second.completions[0].content) == ("a", "b")
