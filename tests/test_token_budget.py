"""The default token budget: each request's max_tokens is what fits the context (see pacore_graph/budget.py)."""

import asyncio
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacore_graph import ContextBudgetError, PaCoReConfig, SamplingParams, Schedule, VLLMClient, build_pacore_graph
from pacore_graph.cli.main import app
from pacore_graph.engine.address import DEFAULT_ENGINE_MAX_TOKENS, EngineAddress
from pacore_graph.events import RoundStarted, parse_event
from pacore_graph.testing import FakeOpenAIServer, FakeReply


def reply(request):
    return FakeReply(content=f"<think>w</think>The answer is {391 + request.index}.", completion_tokens=5)


async def run(server, client, **config):
    graph = build_pacore_graph(client, config=PaCoReConfig(schedule=Schedule.parse([2]), **config))
    events = [parse_event(c) async for c in graph.astream({"problem": "What is 17 * 23?"}, stream_mode="custom")]
    started = [e for e in events if isinstance(e, RoundStarted)]
    return started, [r.body.get("max_tokens", "absent") for r in server.requests]


async def test_without_max_tokens_each_request_gets_the_context_minus_its_prompt():
    async with FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server, VLLMClient(server.base_url) as c:
        started, sent = await run(server, c)
    assert [e.prompt_tokens + e.max_tokens for e in started] == [4096, 4096]  # the server's /tokenize count
    assert sent == [started[0].max_tokens] * 2 + [started[1].max_tokens]
    assert started[1].max_tokens < started[0].max_tokens  # the synthesis prompt is longer
    assert server.tokenize_requests, "the prompt was counted by the server"


async def test_the_backend_default_caps_what_fits():
    async with (
        FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server,
        VLLMClient(server.base_url, default_max_tokens=100) as client,
    ):
        _, sent = await run(server, client)
    assert sent == [100, 100, 100]


async def test_a_max_tokens_larger_than_the_servers_context_is_lowered_to_what_fits(caplog):
    caplog.set_level(logging.DEBUG, logger="pacore_graph.budget")
    async with FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server, VLLMClient(server.base_url) as c:
        started, sent = await run(server, c, params=SamplingParams(max_tokens=32768))
    assert sent == [4096 - started[0].prompt_tokens] * 2 + [4096 - started[1].prompt_tokens]
    assert "max_tokens 32768 does not fit the context" in caplog.text


async def test_a_max_tokens_that_fits_is_sent_as_given():
    async with FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server, VLLMClient(server.base_url) as c:
        _, sent = await run(server, c, params=SamplingParams(max_tokens=300))
    assert sent == [300, 300, 300]


async def test_max_tokens_none_sends_no_cap_at_all():
    config = PaCoReConfig(schedule=Schedule.parse([2])).with_overrides(max_tokens="none")
    assert config.token_budget == "none" and config.params.max_tokens is None
    async with (
        FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server,
        VLLMClient(server.base_url, default_max_tokens=100) as client,
    ):
        graph = build_pacore_graph(client, config=config)
        await graph.ainvoke({"problem": "Q?"})
    assert [r.body.get("max_tokens", "absent") for r in server.requests] == ["absent"] * 3


async def test_without_the_servers_count_the_context_is_not_guessed():
    # No /tokenize: an estimate is an upper bound and could starve the reply, so only the cap is sent.
    async with (
        FakeOpenAIServer(reply, max_model_len=4096) as server,
        VLLMClient(server.base_url, default_max_tokens=100) as client,
    ):
        _, sent = await run(server, client)
    assert sent == [100, 100, 100]
    async with FakeOpenAIServer(reply, max_model_len=4096) as server, VLLMClient(server.base_url) as client:
        _, sent = await run(server, client)
    assert sent == ["absent"] * 3


async def test_a_max_model_len_you_set_stays_a_hard_limit():
    async with FakeOpenAIServer(reply, tokenize=True) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(
            client, config=PaCoReConfig(schedule=[2], params=SamplingParams(max_tokens=500), max_model_len=400)
        )
        with pytest.raises(ContextBudgetError, match="leaves no room"):
            await graph.ainvoke({"problem": "Q?"})
        assert server.requests == []


async def test_the_client_reads_the_servers_context_once():
    async with FakeOpenAIServer(max_model_len=1234) as server, VLLMClient(server.base_url) as client:
        assert await client.context_length() == 1234
        server.max_model_len = 99
        assert await client.context_length() == 1234


def test_the_embedded_engines_client_has_the_default_cap():
    def address(model):
        return EngineAddress(1, "127.0.0.1", 8000, model, "/m", Path("/log"), 0.0)

    assert address("smollm2").client().default_max_tokens == DEFAULT_ENGINE_MAX_TOKENS
    assert address("org/big-model").client().default_max_tokens is None


def test_cli_default_budget_and_max_tokens_none():
    with FakeOpenAIServer(reply, tokenize=True, max_model_len=2048).in_thread() as server:
        result = CliRunner().invoke(app, ["run", "Q", "-s", "2", "--base-url", server.base_url])
        assert result.exit_code == 0, result.output
        fitted = [r.body["max_tokens"] for r in server.requests]
        server.requests.clear()
        result = CliRunner().invoke(app, ["run", "Q", "-s", "2", "--base-url", server.base_url, "--max-tokens", "none"])
        assert result.exit_code == 0, result.output
        unset = [r.body.get("max_tokens") for r in server.requests]
    assert all(0 < tokens < 2048 for tokens in fitted) and len(fitted) == 3
    assert unset == [None, None, None]


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_cli_refuses_a_bad_max_tokens(value):
    args = ["run", "Q", "--base-url", "http://127.0.0.1:9/v1", "--max-tokens", value]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "neither 'none' nor a whole number" in result.output


def test_help_says_what_the_default_is():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "Default: what fits" in result.output and "'none': no cap" in result.output
    assert f"at most {DEFAULT_ENGINE_MAX_TOKENS}" in result.output
    assert "fits, the context" in (PaCoReConfig.model_fields["token_budget"].description or "")


async def test_runs_that_start_together_on_a_fresh_client_all_get_the_servers_context():
    # The first run's lookup of max_model_len is shared: the others wait for it instead of going on without it.
    async with FakeOpenAIServer(reply, tokenize=True, max_model_len=4096) as server, VLLMClient(server.base_url) as c:
        graph = build_pacore_graph(c, config=PaCoReConfig(schedule=Schedule.parse([2])))
        await asyncio.gather(*(graph.ainvoke({"problem": f"What is {i} * 23?"}) for i in range(4)))
    sent = [r.body.get("max_tokens") for r in server.requests if r.path.endswith("/chat/completions")]
    assert len(sent) == 4 * 3 and all(isinstance(tokens, int) for tokens in sent)
    assert sum(1 for r in server.requests if r.path.endswith("/models")) <= 2  # the model, then its context: once
