"""The context budget: prompts are made to fit ``max_model_len - max_tokens`` before they are sent."""

import pytest
from aiohttp import web
from typer.testing import CliRunner

from pacore_graph import ContextBudgetError, PaCoReConfig, SamplingParams, Schedule, VLLMClient, build_pacore_graph
from pacore_graph.budget import estimate_tokens
from pacore_graph.cli.main import app
from pacore_graph.events import RoundStarted, parse_event
from pacore_graph.prompts import REFERENCE_TEMPLATE, build_prompt
from pacore_graph.testing import FakeOpenAIServer, FakeReply

CONCLUSIONS = ["a" * 100, "b" * 400, "c" * 900]  # explorer i concludes with CONCLUSIONS[i]


def by_seed(request):
    seed = request.body["seed"]
    return FakeReply(content=f"<think>w</think>{CONCLUSIONS[seed]}" if seed < 3 else "final")


def config(max_model_len: int, max_tokens: int | None = 50) -> PaCoReConfig:
    return PaCoReConfig(
        schedule=Schedule.parse([3]),
        params=SamplingParams(seed=0, max_tokens=max_tokens),
        max_model_len=max_model_len,
    )


async def test_the_longest_references_are_trimmed_until_the_synthesis_fits():
    problem = [{"role": "user", "content": "Q?"}]
    with_two = estimate_tokens(build_prompt(problem, CONCLUSIONS[:2], REFERENCE_TEMPLATE))
    with_three = estimate_tokens(build_prompt(problem, CONCLUSIONS, REFERENCE_TEMPLATE))
    max_model_len = with_two + 50  # room for two references and max_tokens, not for three
    assert with_three + 50 > max_model_len
    async with FakeOpenAIServer(by_seed) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=config(max_model_len))
        events = [parse_event(c) async for c in graph.astream({"problem": "Q?"}, stream_mode="custom")]
        synthesis = server.requests[-1].last_user_content
    assert CONCLUSIONS[0] in synthesis and CONCLUSIONS[1] in synthesis
    assert CONCLUSIONS[2] not in synthesis  # the longest went first
    started = [(e.round, e.trimmed) for e in events if isinstance(e, RoundStarted)]
    assert started == [(1, 0), (2, 1)]


async def test_a_problem_that_does_not_fit_alone_fails_before_sending():
    async with FakeOpenAIServer(by_seed) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=config(max_model_len=200))
        with pytest.raises(ContextBudgetError, match=r"round 1: the problem alone is [\d,]+ tokens \(estimate\)"):
            await graph.ainvoke({"problem": "word " * 100})
        assert server.requests == []


async def test_max_tokens_that_leave_no_room_fail_before_sending():
    async with FakeOpenAIServer(by_seed) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=config(max_model_len=100, max_tokens=100))
        with pytest.raises(ContextBudgetError, match="leaves no room"):
            await graph.ainvoke({"problem": "Q?"})
        assert server.requests == []


@pytest.fixture
async def tokenizer_server():
    """A vLLM-like server with ``/tokenize`` counting words; ``hits`` records each call."""
    hits = []

    async def tokenize(request):
        body = await request.json()
        hits.append(body)
        words = sum(len(m["content"].split()) for m in body["messages"])
        return web.json_response({"count": words, "max_model_len": 4096, "tokens": []})

    async def models(request):
        return web.json_response({"data": [{"id": "m"}]})

    application = web.Application()
    application.router.add_post("/tokenize", tokenize)
    application.router.add_get("/v1/models", models)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1", hits
    await runner.cleanup()


async def test_vllm_tokenize_gives_the_exact_count(tokenizer_server):
    base_url, hits = tokenizer_server
    async with VLLMClient(base_url) as client:
        assert await client.count_tokens([{"role": "user", "content": "one two three"}]) == 3
    assert hits[0]["add_generation_prompt"] is True and hits[0]["model"] == "m"


async def test_a_server_without_tokenize_is_asked_once_then_estimated():
    async with FakeOpenAIServer() as server, VLLMClient(server.base_url) as client:
        assert await client.count_tokens([{"role": "user", "content": "hi"}]) is None  # 404
        assert client._tokenize_missing


def test_cli_max_model_len_refuses_an_oversized_problem():
    with FakeOpenAIServer().in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", "word " * 500, "-s", "2", "--max-model-len", "300", "--base-url", server.base_url]
        )
        assert server.requests == []
    assert result.exit_code == 1
    assert "the problem alone is" in result.stderr and "nothing was sent" in result.stderr
