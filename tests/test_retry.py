"""The retry policy (pacore_graph.clients.retry): one path for JSON and streamed requests, real HTTP throughout."""

import email.utils
import time

import pytest

from pacore_graph import ConnectError, SamplingParams, UpstreamError, VLLMClient
from pacore_graph.clients.retry import retry_after_seconds
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault, fail_first

USER = [{"role": "user", "content": "What is 2+2?"}]


def fast_client(url: str, **kwargs) -> VLLMClient:
    kwargs.setdefault("backoff_base", 0.01)
    return VLLMClient(url, model="m", **kwargs)


async def ask(client: VLLMClient, stream: bool) -> str:
    if stream:
        return "".join([c.content async for c in client.stream_chat(USER, SamplingParams())])
    return (await client.chat(USER, SamplingParams())).completions[0].content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_on_both_paths(stream, status):
    fault = Fault.http_error(status, retry_after=0.4)
    async with FakeOpenAIServer(fail_first(1, fault, then=FakeReply(content="ok"))) as server:
        async with fast_client(server.base_url) as client:
            started = time.perf_counter()
            assert await ask(client, stream) == "ok"
            waited = time.perf_counter() - started
        assert len(server.requests) == 2
    assert waited >= 0.4


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_retry_after_is_capped_at_backoff_max(stream):
    async with FakeOpenAIServer(fail_first(1, Fault.rate_limited(retry_after=30), then=FakeReply(content="ok"))) as s:
        async with fast_client(s.base_url, backoff_max=0.1) as client:
            started = time.perf_counter()
            assert await ask(client, stream) == "ok"
            assert time.perf_counter() - started < 5


async def test_retry_after_on_a_500_is_not_a_wait_order():
    # Retry-After only means "come back then" on 429 and 503; a 500 backs off by the jittered schedule.
    async with FakeOpenAIServer(fail_first(1, Fault.http_error(500, retry_after=30))) as server:
        async with fast_client(server.base_url, backoff_max=10) as client:
            started = time.perf_counter()
            assert await ask(client, False) == "ok"
            assert time.perf_counter() - started < 5


async def test_stream_opening_retries_a_connection_reset():
    async with FakeOpenAIServer(fail_first(1, Fault.reset(), then=FakeReply(content="ok then"))) as server:
        async with fast_client(server.base_url) as client:
            assert await ask(client, True) == "ok then"
        assert len(server.requests) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_giving_up_names_the_attempts_on_both_paths(stream):
    async with FakeOpenAIServer() as server:
        url = server.base_url
    async with fast_client(url, max_retries=2) as client:
        with pytest.raises(ConnectError, match=r"after 3 attempts.*--base-url or PACORE_BASE_URL"):
            await ask(client, stream)


async def test_stream_gives_up_with_the_last_status():
    async with FakeOpenAIServer(lambda r: FakeReply(fault=Fault.http_error(502, "bad gateway"))) as server:
        async with fast_client(server.base_url, max_retries=1) as client:
            with pytest.raises(UpstreamError) as info:
                await ask(client, True)
        assert len(server.requests) == 2
    assert info.value.status == 502 and "bad gateway" in info.value.body


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < (retry_after_seconds(later) or 0) <= 60
