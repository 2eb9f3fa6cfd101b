"""The real vLLM server speaks the OpenAI chat API the way our client expects (plain aiohttp)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from pacore_graph.clients.server_load import parse_server_load
from pacore_graph.engine import EngineProcess as EngineInfo

pytestmark = pytest.mark.engine

MAX_TOKENS = 16
TIMEOUT = aiohttp.ClientTimeout(total=120)


def _messages(text: str = "Name one colour.") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def _post(engine: EngineInfo, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{engine.base_url}/chat/completions", json={"model": engine.model, **body}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


def _check_usage(usage: dict[str, Any], *, max_completion: int) -> None:
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= max_completion
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_models_lists_the_served_model(engine: EngineInfo) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(f"{engine.base_url}/models") as resp:
        assert resp.status == 200
        data = await resp.json()
    assert [m["id"] for m in data["data"]] == [engine.model]
    assert data["data"][0]["max_model_len"] == 8192


async def test_chat_completion_shape(engine: EngineInfo) -> None:
    data = await _post(engine, {"messages": _messages("What is 2+2?"), "max_tokens": MAX_TOKENS, "temperature": 0})
    assert data["object"] == "chat.completion"
    assert data["model"] == engine.model
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    _check_usage(data["usage"], max_completion=MAX_TOKENS)


async def test_chat_template_is_applied(engine: EngineInfo) -> None:
    # The converted model carries SmolLM2's ChatML template, which adds a default system prompt:
    # a two-word user message therefore costs far more than two prompt tokens.
    data = await _post(engine, {"messages": _messages("Hi there"), "max_tokens": 1})
    assert data["usage"]["prompt_tokens"] > 20


async def test_n_returns_n_choices(engine: EngineInfo) -> None:
    data = await _post(engine, {"messages": _messages(), "max_tokens": MAX_TOKENS, "n": 3, "temperature": 1.0})
    assert sorted(c["index"] for c in data["choices"]) == [0, 1, 2]
    for choice in data["choices"]:
        assert choice["finish_reason"] in ("stop", "length")
        assert isinstance(choice["message"]["content"], str)
    _check_usage(data["usage"], max_completion=3 * MAX_TOKENS)


async def test_length_finish_reason_at_max_tokens(engine: EngineInfo) -> None:
    data = await _post(engine, {"messages": _messages("Write a long story."), "max_tokens": 4, "ignore_eos": True})
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 4


async def test_streaming_with_usage(engine: EngineInfo) -> None:
    body = {
        "model": engine.model,
        "messages": _messages("Say hello."),
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events: list[str] = []
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{engine.base_url}/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes in (["stop"], ["length"])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    _check_usage(usage_chunk["usage"], max_completion=MAX_TOKENS)


async def test_concurrent_requests_are_all_served(engine: EngineInfo) -> None:
    results = await asyncio.gather(
        *(_post(engine, {"messages": _messages(f"Count to {i}."), "max_tokens": 8}) for i in range(4))
    )
    assert all(len(r["choices"]) == 1 for r in results)
    assert len({r["id"] for r in results}) == 4


async def test_many_seeded_requests_at_once_are_all_served(engine: EngineInfo) -> None:
    """More seeded prompts than one step prefills: with chunked prefill the CPU engine died on them."""
    text = "Compute {i} + 3 * 7 and explain each step of the computation in detail. " * 3
    results = await asyncio.gather(
        *(_post(engine, {"messages": _messages(text.format(i=i)), "max_tokens": 8, "seed": i}) for i in range(96))
    )
    assert all(len(r["choices"]) == 1 for r in results)


async def test_engine_client_talks_to_the_engine(engine: EngineInfo) -> None:
    # The library path: engine.client() builds a VLLMClient for base_url/model.
    from pacore_graph.clients.base import SamplingParams

    async with engine.client(max_concurrency=4) as client:
        result = await client.chat(_messages(), SamplingParams(max_tokens=MAX_TOKENS), n=2)
    assert len(result.completions) == 2
    assert all(c.finish_reason in ("stop", "length") for c in result.completions)
    assert result.usage.completion_tokens > 0


async def test_metrics_page_gives_the_load_adaptive_concurrency_reads(engine: EngineInfo) -> None:
    # While 4 requests run, vLLM's /metrics shows them: the gauges VLLMClient sizes its window from.
    body = {"messages": _messages("Count from one to fifty."), "max_tokens": 64, "ignore_eos": True}
    requests = [asyncio.create_task(_post(engine, body)) for _ in range(4)]
    seen = 0
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        url = engine.base_url.removesuffix("/v1") + "/metrics"
        while not all(r.done() for r in requests):
            async with session.get(url) as resp:
                assert resp.status == 200
                load = parse_server_load(await resp.text())
            assert load is not None and load.kv_usage is not None
            seen = max(seen, load.running + load.waiting)
            await asyncio.sleep(0.05)
    await asyncio.gather(*requests)
    assert seen == 4
