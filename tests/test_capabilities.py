"""Optional backend capabilities (streaming, token counting, ...) survive wrapping, under `pacore eval` too.

Real HTTP to the fake OpenAI server throughout; the eval test drives the real CLI.
"""

import json

import pytest
from typer.testing import CliRunner

from pacore_graph import (
    ConfigError,
    RunFinished,
    SamplingParams,
    SynthesisDelta,
    VLLMClient,
    WrapperBackend,
    build_pacore_graph,
    stream_events,
    supports_streaming,
)
from pacore_graph.budget import count_tokens, estimate_tokens
from pacore_graph.cli.main import app
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend

GRAPH_WITH_CONTEXT = """\
name: pacore-fitted
type: pacore
schedule: [2]
max_model_len: 4096
sampling:
  max_tokens: 256
"""


def is_synthesis(request) -> bool:
    return "Reference Responses:" in (request.last_user_content or "")


def script(request):
    if is_synthesis(request):
        return FakeReply(content="The answer is 5.", completion_tokens=5)
    return FakeReply(content="<think>hm</think>The answer is 5.", completion_tokens=10)


@pytest.mark.parametrize("pool", ["--pool", "--no-pool"])
def test_eval_counts_tokens_on_the_server_and_streams_the_synthesis(tmp_path, pool):
    spec = tmp_path / "fitted.yaml"
    spec.write_text(GRAPH_WITH_CONTEXT)
    out = tmp_path / "out"
    with FakeOpenAIServer(script, tokenize=True).in_thread() as server:
        result = CliRunner().invoke(
            app,
            [
                "eval", "--dataset", "builtin:arith?n=2", "--graph", str(spec), "--runs", "2",
                "--out", str(out), "--base-url", server.base_url, pool,
            ],
            catch_exceptions=False,
        )  # fmt: skip
        requests = list(server.requests)
        tokenized = list(server.tokenize_requests)
    assert result.exit_code == 0, result.output
    # Every round's prompt is fitted to max_model_len with the server's exact count: 2 problems × 2 runs × 2 rounds.
    assert len(tokenized) == 8
    assert all(body["add_generation_prompt"] is True for body in tokenized)
    syntheses = [r for r in requests if is_synthesis(r)]
    assert len(syntheses) == 4
    assert all(r.body.get("stream") is True for r in syntheses)  # the synthesis was streamed
    assert not any(r.body.get("stream") for r in requests if not is_synthesis(r))
    # The streamed usage is counted like a JSON answer's: 2 × 10 explorer tokens + 5 synthesis tokens per run.
    [metrics] = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_ttc_tokens"] == 25
    # The eval's own counters see the streamed syntheses too (5 tokens each; an explorer's are 10). With the pool,
    # some round-1 draws reuse a slot (the order is seeded by the graph's label, here a temporary path).
    explorers = len(requests) - len(syntheses)
    assert (explorers == 8) if pool == "--no-pool" else (4 <= explorers <= 8)
    sent = f"{len(requests)} requests, {10 * explorers + 5 * len(syntheses)} completion tokens generated"
    assert f"This invocation: {sent}" in result.stdout


# --- the forwarding base ---------------------------------------------------------------------------------------

USER = [{"role": "user", "content": "one two three"}]


class ChatOnly:
    """A backend with nothing but ``chat``."""

    async def chat(self, messages, params, *, n=1):
        return await FunctionBackend(lambda m, p: "<think>t</think>just chat").chat(messages, params, n=n)


async def test_a_wrapper_passes_every_capability_of_a_client_through():
    async with FakeOpenAIServer(tokenize=True) as server:
        client = VLLMClient(server.base_url)
        async with WrapperBackend(WrapperBackend(client)) as wrapped:
            assert supports_streaming(wrapped)
            assert await count_tokens(wrapped, USER) == (3, "tokenizer")
            assert await wrapped.resolve_model() == "fake-model"
            assert wrapped.limiter is client.limiter  # a balancer over wrapped clients still sees their windows
            chunks = [c async for c in wrapped.stream_chat(USER, SamplingParams())]
            assert (await wrapped.chat(USER, SamplingParams())).completions[0].content == "ok"
        assert client._session is None  # closing the wrapper closed the client
        assert [r.stream for r in server.requests] == [True, False]
        assert len(server.tokenize_requests) == 1
    assert "".join(c.content for c in chunks) == "ok"


async def test_a_wrapper_does_not_claim_what_its_backend_lacks():
    wrapped = WrapperBackend(WrapperBackend(ChatOnly()))
    assert not supports_streaming(wrapped)
    assert await count_tokens(wrapped, USER) == (estimate_tokens(USER), "estimate")
    with pytest.raises(ConfigError, match="cannot name its model"):
        await wrapped.resolve_model()
    assert wrapped.limiter is None
    chunks = [c async for c in wrapped.stream_chat(USER, SamplingParams())]  # still answers: one chunk
    assert [(c.content, c.finish_reason) for c in chunks] == [("<think>t</think>just chat", "stop")]
    await wrapped.aclose()  # nothing to close: no error


async def test_a_subclass_overrides_only_what_it_changes():
    class Upper(WrapperBackend):
        async def chat(self, messages, params, *, n=1):
            result = await self.wrapped.chat(messages, params, n=n)
            return result.model_copy(update={"completions": [c.model_copy(update={"content": c.content.upper()})
                                                             for c in result.completions]})  # fmt: skip

    backend = FunctionBackend(lambda m, p: "all done here")
    graph = build_pacore_graph(Upper(backend), "2")
    events = [e async for e in stream_events(graph, {"problem": "Q"})]
    deltas = [e for e in events if isinstance(e, SynthesisDelta)]
    assert len(deltas) > 1  # the synthesis streamed through the wrapper (the function backend streams by words)
    # Upper overrode chat only: the explorers' conclusions reached the synthesis upper-cased, its own stream was not.
    assert "ALL DONE HERE" in backend.calls[-1].last_user_content
    assert isinstance(events[-1], RunFinished) and events[-1].answer == "all done here"
