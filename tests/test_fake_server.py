"""FakeOpenAIServer, observed from the client side through real HTTP (aiohttp.ClientSession)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import aiohttp
import pytest

from pacore_graph.clients.base import TokenUsage
from pacore_graph.testing.fake_server import (
    FakeOpenAIServer,
    FakeReply,
    FakeRequest,
    Fault,
    fail_first,
    reply_sequence,
)

USER = [{"role": "user", "content": "what is two plus two"}]  # 5 words


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, **extra}


async def post(server: FakeOpenAIServer, body: Any, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    """POST to the chat endpoint and return (status, headers, text)."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/chat/completions", data=data, **kwargs) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def post_json(server: FakeOpenAIServer, body: Any, **kwargs: Any) -> dict[str, Any]:
    status, _, text = await post(server, body, **kwargs)
    assert status == 200, text
    result: dict[str, Any] = json.loads(text)
    return result


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    assert text.endswith("\n\n") or text == "", repr(text[-20:])
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


def stream_text(chunks: list[dict[str, Any]], key: str, index: int = 0) -> str:
    return "".join(
        choice["delta"].get(key) or "" for chunk in chunks for choice in chunk["choices"] if choice["index"] == index
    )


# -- JSON responses ----------------------------------------------------------------------------------


async def test_default_script_replies_ok_with_openai_shape() -> None:
    async with FakeOpenAIServer(model="my-model") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.base_url == server.url + "/v1"
        data = await post_json(server, chat_body())
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "my-model"
    assert data["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}


async def test_usage_is_computed_from_words_and_summed_into_total_usage() -> None:
    reply = FakeReply(content="four is the answer", reasoning="two and two")
    messages = [{"role": "system", "content": "be brief"}, *USER]
    async with FakeOpenAIServer(lambda request: reply) as server:
        first = await post_json(server, chat_body(messages=messages))
        second = await post_json(server, chat_body())
        assert server.total_usage == TokenUsage(prompt_tokens=7 + 5, completion_tokens=7 + 7)
    assert first["usage"] == {"prompt_tokens": 7, "completion_tokens": 7, "total_tokens": 14}
    assert second["usage"]["prompt_tokens"] == 5
    assert first["choices"][0]["message"] == {
        "role": "assistant",
        "content": "four is the answer",
        "reasoning": "two and two",
    }


async def test_explicit_token_counts_override_the_word_count() -> None:
    reply = FakeReply(content="a b c", prompt_tokens=100, completion_tokens=42, finish_reason="length")
    async with FakeOpenAIServer(lambda request: reply) as server:
        data = await post_json(server, chat_body())
    assert data["usage"] == {"prompt_tokens": 100, "completion_tokens": 42, "total_tokens": 142}
    assert data["choices"][0]["finish_reason"] == "length"


async def test_multipart_content_counts_text_parts() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "image_url"}]}]
    async with FakeOpenAIServer() as server:
        data = await post_json(server, chat_body(messages=messages))
        assert server.requests[0].last_user_content == "one two"
    assert data["usage"]["prompt_tokens"] == 2


async def test_reasoning_key_variants() -> None:
    replies = [
        FakeReply(content="x", reasoning="r1", reasoning_key="reasoning_content"),
        FakeReply(content="y", reasoning="r2"),
    ]
    async with FakeOpenAIServer(reply_sequence(replies)) as server:
        old = (await post_json(server, chat_body()))["choices"][0]["message"]
        new = (await post_json(server, chat_body()))["choices"][0]["message"]
    assert old == {"role": "assistant", "content": "x", "reasoning_content": "r1"}
    assert new == {"role": "assistant", "content": "y", "reasoning": "r2"}


async def test_null_content() -> None:
    async with FakeOpenAIServer(lambda request: FakeReply(content=None)) as server:
        data = await post_json(server, chat_body())
    assert data["choices"][0]["message"]["content"] is None
    assert data["usage"]["completion_tokens"] == 1  # minimum 1


# -- n > 1 ---------------------------------------------------------------------------------------------


async def test_single_reply_is_replicated_for_n() -> None:
    async with FakeOpenAIServer(lambda request: FakeReply(content="same two")) as server:
        data = await post_json(server, chat_body(n=3))
        assert server.total_usage == TokenUsage(prompt_tokens=5, completion_tokens=6)
    assert [choice["index"] for choice in data["choices"]] == [0, 1, 2]
    assert {choice["message"]["content"] for choice in data["choices"]} == {"same two"}
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


async def test_list_of_replies_gives_one_choice_each() -> None:
    def script(request: FakeRequest) -> list[FakeReply]:
        return [FakeReply(content=f"answer {i}", finish_reason="length" if i else "stop") for i in range(request.n)]

    async with FakeOpenAIServer(script) as server:
        data = await post_json(server, chat_body(n=2))
    assert [c["message"]["content"] for c in data["choices"]] == ["answer 0", "answer 1"]
    assert [c["finish_reason"] for c in data["choices"]] == ["stop", "length"]
    assert data["usage"]["completion_tokens"] == 4


async def test_wrong_number_of_replies_is_a_500_and_raised_on_exit() -> None:
    script = lambda request: [FakeReply(), FakeReply()]  # noqa: E731
    with pytest.raises(RuntimeError, match="script failed 1 time") as caught:
        async with FakeOpenAIServer(script) as server:
            status, _, text = await post(server, chat_body(n=3))
            assert status == 500
            assert json.loads(text)["error"]["type"] == "server_error"
    assert isinstance(caught.value.__cause__, ValueError)
    assert "n=3" in str(caught.value.__cause__)


# -- recording and scripts ---------------------------------------------------------------------------


async def test_requests_are_recorded_in_arrival_order_with_fields() -> None:
    async with FakeOpenAIServer() as server:
        for i in range(3):
            messages = [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": "earlier"},
            ]
            body = chat_body(messages=messages, n=1 + i % 2, temperature=0.5)
            await post_json(server, body, headers={"X-Trace": f"t{i}", "Content-Type": "application/json"})
        requests = list(server.requests)
    assert [r.index for r in requests] == [0, 1, 2]
    assert [r.last_user_content for r in requests] == ["question 0", "question 1", "question 2"]
    assert [r.headers["x-trace"] for r in requests] == ["t0", "t1", "t2"]
    assert [r.n for r in requests] == [1, 2, 1]
    first = requests[0]
    assert first.path == "/v1/chat/completions"
    assert first.body["temperature"] == 0.5
    assert first.messages[0] == {"role": "system", "content": "sys"}
    assert first.stream is False


async def test_async_script_sees_the_request() -> None:
    async def script(request: FakeRequest) -> FakeReply:
        await asyncio.sleep(0)
        return FakeReply(content=f"echo {request.last_user_content}")

    async with FakeOpenAIServer(script) as server:
        data = await post_json(server, chat_body())
    assert data["choices"][0]["message"]["content"] == "echo what is two plus two"


async def test_reply_sequence_in_order_then_fallback_or_error() -> None:
    async with FakeOpenAIServer(reply_sequence([FakeReply("a"), FakeReply("b")], then=FakeReply("z"))) as server:
        contents = [(await post_json(server, chat_body()))["choices"][0]["message"]["content"] for _ in range(4)]
    assert contents == ["a", "b", "z", "z"]

    with pytest.raises(RuntimeError) as caught:
        async with FakeOpenAIServer(reply_sequence([FakeReply("only")])) as server:
            await post_json(server, chat_body())
            status, _, _ = await post(server, chat_body())
            assert status == 500
    assert isinstance(caught.value.__cause__, IndexError)


async def test_fail_first_then_succeed() -> None:
    async with FakeOpenAIServer(fail_first(2)) as server:
        statuses = [(await post(server, chat_body()))[0] for _ in range(3)]
        assert len(server.requests) == 3  # faulted requests are recorded too
        assert server.total_usage == TokenUsage(prompt_tokens=5, completion_tokens=1)  # only the success
    assert statuses == [503, 503, 200]


# -- faults ------------------------------------------------------------------------------------------


async def test_http_error_has_openai_error_body() -> None:
    fault = Fault.http_error(400, "context too long", code="context_length_exceeded")
    async with FakeOpenAIServer(fail_first(1, fault)) as server:
        status, headers, text = await post(server, chat_body())
        assert server.total_usage == TokenUsage()
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(text) == {
        "error": {
            "message": "context too long",
            "type": "invalid_request_error",
            "param": None,
            "code": "context_length_exceeded",
        }
    }
    assert "Retry-After" not in headers


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors(status: int) -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.http_error(status))) as server:
        got, _, text = await post(server, chat_body())
    assert got == status
    assert json.loads(text)["error"]["type"] == "server_error"


async def test_rate_limited_has_retry_after() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.rate_limited(retry_after=2))) as server:
        status, headers, text = await post(server, chat_body())
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert json.loads(text)["error"]["code"] == "rate_limit_exceeded"


async def test_reset_drops_the_connection() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.reset())) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(server, chat_body())
        assert len(server.requests) == 1
        # The server keeps serving after a reset.
        assert (await post(server, chat_body()))[0] == 200


async def test_malformed_json_is_a_200_that_does_not_parse() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.malformed_json())) as server:
        status, headers, text = await post(server, chat_body())
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_malformed_json_in_a_stream() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.malformed_json())) as server:
        status, _, text = await post(server, chat_body(stream=True))
    events = sse_events(text)
    assert status == 200
    assert events[-1] == "[DONE]"
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[0])


async def test_html_error_page() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.html_error())) as server:
        status, headers, text = await post(server, chat_body())
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert text.startswith("<html>")
    assert "502 Bad Gateway" in text


async def test_no_choices() -> None:
    async with FakeOpenAIServer(reply_sequence([FakeReply(fault=Fault.no_choices())] * 2)) as server:
        data = await post_json(server, chat_body())
        _, _, text = await post(server, chat_body(stream=True))
        assert server.total_usage == TokenUsage()
    assert data["choices"] == []
    assert data["object"] == "chat.completion"
    assert sse_events(text) == ["[DONE]"]


async def test_truncated_stream_has_no_done() -> None:
    fault = Fault.truncated_stream(after_chunks=2)
    async with FakeOpenAIServer(fail_first(1, fault)) as server:
        status, _, text = await post(server, chat_body(stream=True, stream_options={"include_usage": True}))
        assert server.total_usage == TokenUsage()
    events = sse_events(text)
    assert status == 200
    assert len(events) == 2
    assert "[DONE]" not in text
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


async def test_truncated_stream_with_abort_fails_the_read() -> None:
    reply = FakeReply(content="many words " * 20, fault=Fault.truncated_stream(after_chunks=3, abort=True))
    async with FakeOpenAIServer(lambda request: reply) as server:
        with pytest.raises(aiohttp.ClientPayloadError):
            await post(server, chat_body(stream=True))


async def test_truncated_json_body_fails_the_read() -> None:
    async with FakeOpenAIServer(fail_first(1, Fault.truncated_stream())) as server:
        with pytest.raises(aiohttp.ClientPayloadError):
            await post(server, chat_body())


async def test_slow_drip_stream_is_complete_but_slow() -> None:
    content = "one two three four"
    reply = FakeReply(content=content, fault=Fault.slow_drip(chunk_delay=0.05))
    async with FakeOpenAIServer(lambda request: reply) as server:
        started = time.monotonic()
        _, _, text = await post(server, chat_body(stream=True))
        elapsed = time.monotonic() - started
    events = sse_events(text)
    chunks = [json.loads(event) for event in events[:-1]]
    assert events[-1] == "[DONE]"
    assert stream_text(chunks, "content") == content
    # role + 4 words + finish + [DONE] = 7 events, each 0.05 s late.
    assert elapsed >= 7 * 0.05 * 0.9


async def test_slow_drip_json_trips_a_client_read_timeout_and_counts_when_complete() -> None:
    reply = FakeReply(fault=Fault.slow_drip(chunk_delay=0.1))
    async with FakeOpenAIServer(lambda request: reply) as server:
        with pytest.raises(asyncio.TimeoutError):
            await post(server, chat_body(), timeout=aiohttp.ClientTimeout(sock_read=0.05))
        data = await post_json(server, chat_body())
        assert server.total_usage == TokenUsage(prompt_tokens=5, completion_tokens=1)
    assert data["choices"][0]["message"]["content"] == "ok"


async def test_delay_before_responding() -> None:
    async with FakeOpenAIServer(lambda request: FakeReply(delay=0.3)) as server:
        with pytest.raises(asyncio.TimeoutError):
            await post(server, chat_body(), timeout=aiohttp.ClientTimeout(total=0.1))
        started = time.monotonic()
        await post_json(server, chat_body())
        assert time.monotonic() - started >= 0.25


def test_fault_rejects_non_error_status() -> None:
    with pytest.raises(ValueError, match="400-599"):
        Fault.http_error(200)


# -- streaming ---------------------------------------------------------------------------------------


async def test_stream_concatenates_to_content_with_usage_chunk_and_done() -> None:
    content = "  Hello,  world!\nThis is\tfake. "
    reply = FakeReply(content=content, reasoning="think  first", finish_reason="length")
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with FakeOpenAIServer(lambda request: reply) as server:
        status, headers, text = await post(server, body)
        assert server.total_usage == TokenUsage(prompt_tokens=5, completion_tokens=7)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    *choice_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert all(chunk["usage"] is None for chunk in choice_chunks)
    deltas = [chunk["choices"][0]["delta"] for chunk in choice_chunks]
    assert deltas[0]["role"] == "assistant"
    assert stream_text(choice_chunks, "content") == content
    assert stream_text(choice_chunks, "reasoning") == "think  first"
    assert sum(1 for d in deltas if d.get("content")) >= 5  # split into several pieces
    last_reasoning = max(i for i, d in enumerate(deltas) if "reasoning" in d)
    first_content = min(i for i, d in enumerate(deltas) if d.get("content"))
    assert last_reasoning < first_content
    finishes = [chunk["choices"][0]["finish_reason"] for chunk in choice_chunks]
    assert finishes == [None] * (len(finishes) - 1) + ["length"]


async def test_stream_without_include_usage_reports_nothing() -> None:
    async with FakeOpenAIServer(lambda request: FakeReply(content="a b")) as server:
        _, _, text = await post(server, chat_body(stream=True))
        assert server.total_usage == TokenUsage()
    events = sse_events(text)
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    assert stream_text(chunks, "content") == "a b"


async def test_stream_reasoning_content_key_and_n_choices() -> None:
    def script(request: FakeRequest) -> list[FakeReply]:
        return [
            FakeReply(content=f"choice {i} text", reasoning=f"why {i}", reasoning_key="reasoning_content")
            for i in range(request.n)
        ]

    async with FakeOpenAIServer(script) as server:
        _, _, text = await post(server, chat_body(stream=True, n=2))
    chunks = [json.loads(event) for event in sse_events(text)[:-1]]
    for i in range(2):
        assert stream_text(chunks, "content", index=i) == f"choice {i} text"
        assert stream_text(chunks, "reasoning_content", index=i) == f"why {i}"
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["index"] == i]
        assert finishes[-1] == "stop"
    assert stream_text(chunks, "reasoning") == ""


# -- other routes, validation, auth ------------------------------------------------------------------


async def test_models_and_health() -> None:
    async with FakeOpenAIServer(model="m1", max_model_len=4096) as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.base_url}/models") as response:
            assert response.status == 200
            models = await response.json()
        async with session.get(f"{server.url}/health") as response:
            assert response.status == 200
    assert models["object"] == "list"
    [model] = models["data"]
    assert model["id"] == "m1"
    assert model["object"] == "model"
    assert model["owned_by"] == "pacore-fake"
    assert model["max_model_len"] == 4096


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"model": "x"}),
        json.dumps({"messages": []}),
        json.dumps({"messages": "hi"}),
        json.dumps({"messages": USER, "n": 0}),
    ],
)
async def test_invalid_requests_are_400_and_not_recorded(body: str) -> None:
    async with FakeOpenAIServer() as server:
        status, _, text = await post(server, body)
        assert server.requests == []
    assert status == 400
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_api_key_is_required_when_set() -> None:
    async with FakeOpenAIServer(api_key="sekret") as server, aiohttp.ClientSession() as session:
        missing, _, text = await post(server, chat_body())
        wrong, _, _ = await post(server, chat_body(), headers={"Authorization": "Bearer nope"})
        right, _, _ = await post(server, chat_body(), headers={"Authorization": "Bearer sekret"})
        async with session.get(f"{server.base_url}/models") as response:
            models_status = response.status
        async with session.get(f"{server.url}/health") as response:
            health_status = response.status
        assert len(server.requests) == 1
        assert server.requests[0].headers["authorization"] == "Bearer sekret"
    assert (missing, wrong, right) == (401, 401, 200)
    assert json.loads(text)["error"]["code"] == "invalid_api_key"
    assert models_status == 401
    assert health_status == 200


# -- lifecycle ---------------------------------------------------------------------------------------


async def test_url_before_start_raises() -> None:
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url


async def test_close_drops_delayed_requests_promptly() -> None:
    arrived = asyncio.Event()

    def script(request: FakeRequest) -> FakeReply:
        arrived.set()
        return FakeReply(delay=3600, fault=Fault.slow_drip(10))

    server = FakeOpenAIServer(script)
    await server.start()
    try:
        pending = asyncio.create_task(post(server, chat_body()))
        await asyncio.wait_for(arrived.wait(), 5)
        started = time.monotonic()
    finally:
        await server.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_close_mid_stream_drip() -> None:
    reply = FakeReply(content="word " * 100, fault=Fault.slow_drip(0.2))
    server = FakeOpenAIServer(lambda request: reply)
    await server.start()
    pending = asyncio.create_task(post(server, chat_body(stream=True)))
    await asyncio.sleep(0.3)  # a chunk or two is out
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending


def test_thread_mode_from_sync_code() -> None:
    async def fetch(base_url: str) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=chat_body()) as response,
        ):
            assert response.status == 200
            result: dict[str, Any] = await response.json()
            return result

    with FakeOpenAIServer(lambda request: FakeReply(content="from a thread")).in_thread() as server:
        data = asyncio.run(fetch(server.base_url))
        assert len(server.requests) == 1
        assert server.total_usage.completion_tokens == 3
    assert data["choices"][0]["message"]["content"] == "from a thread"
    assert not any(thread.name == "FakeOpenAIServer" for thread in threading.enumerate())


def test_thread_mode_stops_a_delayed_request_and_reraises_script_errors() -> None:
    def script(request: FakeRequest) -> FakeReply:
        if request.index == 0:
            raise KeyError("boom")
        return FakeReply(delay=3600)

    async def hit(base_url: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=chat_body()) as r,
        ):
            return r.status

    with pytest.raises(RuntimeError, match="KeyError"), FakeOpenAIServer(script).in_thread() as server:
        assert asyncio.run(hit(server.base_url)) == 500
        # Leave a request hanging in the server thread, then exit: the thread must still stop.
        hanging = threading.Thread(target=lambda: asyncio.run(_swallow(hit(server.base_url))), daemon=True)
        hanging.start()
        while len(server.requests) < 2:
            time.sleep(0.01)
    hanging.join(timeout=5)
    assert not hanging.is_alive()
    assert not any(thread.name == "FakeOpenAIServer" for thread in threading.enumerate())


async def _swallow(coroutine: Any) -> None:
    with contextlib.suppress(aiohttp.ClientError):
        await coroutine
