"""VLLMClient.stream_chat: real SSE over real HTTP against the fake OpenAI server, faults included."""

import pytest

from pacore_graph import (
    ChatChunk,
    ProtocolError,
    SamplingParams,
    StreamingChatBackend,
    UpstreamError,
    UpstreamTimeoutError,
    VLLMClient,
    build_pacore_graph,
)
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault, FunctionBackend, fail_first

USER = [{"role": "user", "content": "What is 2+2?"}]


def fast_client(url: str, **kwargs) -> VLLMClient:
    kwargs.setdefault("backoff_base", 0.01)
    return VLLMClient(url, model="m", **kwargs)


async def collect(client, params=None):
    return [chunk async for chunk in client.stream_chat(USER, params or SamplingParams())]


def test_streaming_is_an_optional_capability():
    assert isinstance(VLLMClient("http://127.0.0.1:1/v1"), StreamingChatBackend)
    assert isinstance(FunctionBackend(lambda m, p: "x"), StreamingChatBackend)

    class ChatOnly:
        async def chat(self, messages, params, *, n=1): ...

    assert not isinstance(ChatOnly(), StreamingChatBackend)


async def test_stream_joins_to_the_reply_with_reasoning_finish_reason_and_usage():
    reply = FakeReply(
        content="The answer is 4, of course.", reasoning="two plus two", prompt_tokens=9, completion_tokens=17
    )
    async with FakeOpenAIServer(lambda r: reply) as server, fast_client(server.base_url) as client:
        chunks = await collect(client, SamplingParams(max_tokens=50, seed=3))
        body = server.requests[0].body
    assert all(isinstance(c, ChatChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1  # really streamed, not one blob
    assert "".join(c.content for c in chunks) == "The answer is 4, of course."
    assert "".join(c.reasoning for c in chunks) == "two plus two"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    assert usage[0].prompt_tokens == 9 and usage[0].completion_tokens == 17
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 50 and body["seed"] == 3


async def test_stream_opening_is_retried_on_503_then_succeeds():
    async with FakeOpenAIServer(fail_first(2, Fault.http_error(503), then=FakeReply(content="ok then"))) as server:
        async with fast_client(server.base_url) as client:
            chunks = await collect(client)
        assert len(server.requests) == 3
    assert "".join(c.content for c in chunks) == "ok then"


async def test_stream_http_400_fails_at_once_with_status():
    async with FakeOpenAIServer(lambda r: FakeReply(fault=Fault.http_error(400, "bad prompt"))) as server:
        async with fast_client(server.base_url) as client:
            with pytest.raises(UpstreamError) as info:
                await collect(client)
        assert len(server.requests) == 1
    assert info.value.status == 400 and "bad prompt" in str(info.value)


@pytest.mark.parametrize("abort", [False, True])
async def test_cut_stream_is_a_protocol_error_not_a_silent_short_answer(abort):
    fault = Fault.truncated_stream(after_chunks=2, abort=abort)
    async with FakeOpenAIServer(lambda r: FakeReply(content="one two three four five", fault=fault)) as server:
        async with fast_client(server.base_url) as client:
            with pytest.raises(ProtocolError, match="stream"):
                await collect(client)
        assert len(server.requests) == 1  # text already handed out is never re-requested


async def test_malformed_stream_event_is_a_protocol_error():
    async with FakeOpenAIServer(lambda r: FakeReply(fault=Fault.malformed_json())) as server:
        async with fast_client(server.base_url) as client:
            with pytest.raises(ProtocolError, match="not JSON"):
                await collect(client)


async def test_stalled_stream_times_out():
    async with FakeOpenAIServer(lambda r: FakeReply(content="a b c", fault=Fault.slow_drip(0.5))) as server:
        async with fast_client(server.base_url, read_timeout=0.1, max_retries=0) as client:
            with pytest.raises(UpstreamTimeoutError):
                await collect(client)


async def test_graph_streams_only_the_synthesis_over_http():
    def script(request):
        return FakeReply(content=f"<think>t</think>conclusion {request.index}")

    async with FakeOpenAIServer(script) as server, fast_client(server.base_url) as client:
        state = await build_pacore_graph(client, "3").ainvoke({"problem": "Q"})
        streamed = [r.stream for r in server.requests]
    assert streamed == [False, False, False, True]
    assert state["answer"] == "conclusion 3"
    assert state["usage"]["rounds"][-1]["completion_tokens"] > 0  # usage came from include_usage
