"""Request shaping for vLLM: n-batching (``PaCoReConfig.n_batch``), over real HTTP against the fake server."""

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pacore_graph import (
    FailurePolicy,
    PaCoReConfig,
    QuorumError,
    Schedule,
    VLLMClient,
    build_pacore_graph,
)
from pacore_graph.cli.main import app
from pacore_graph.events import TrajectoryFinished, parse_event
from pacore_graph.graphs.spec import parse_spec
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault

ANSWER = "final answer 42"


def per_choice(failing_seeds: frozenset[int] = frozenset()):
    """Explorer requests get one reply per choice naming the request's seed and the choice, with 3 + choice
    completion tokens and 10 prompt tokens; a request whose seed is in ``failing_seeds`` gets a 400."""

    def script(request):
        if request.stream:
            return FakeReply(content=ANSWER, prompt_tokens=50, completion_tokens=7)
        seed = request.body.get("seed")
        if seed in failing_seeds:
            return FakeReply(fault=Fault.http_error(400, f"bad luck for seed {seed}"))
        return [
            FakeReply(
                content=f"<think>t</think>conclusion {seed}-{choice}", prompt_tokens=10, completion_tokens=3 + choice
            )
            for choice in range(request.n)
        ]

    return script


async def run(server, config):
    async with VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=config)
        events = [parse_event(chunk) async for chunk in graph.astream({"problem": "Q"}, stream_mode="custom")]
        state = await graph.ainvoke({"problem": "Q"})
    return state, events


def explorer_requests(server):
    return [r for r in server.requests if not r.stream]


async def test_n_batch_8_sends_one_explorer_request_with_n_8():
    async with FakeOpenAIServer(per_choice()) as server:
        config = PaCoReConfig(schedule=Schedule.parse("8"), params={"seed": 100}, n_batch=8)
        async with VLLMClient(server.base_url) as client:
            state = await build_pacore_graph(client, config=config).ainvoke({"problem": "Q"})
    assert [(r.stream, r.n) for r in server.requests] == [(False, 8), (True, 1)]
    assert server.requests[0].body["seed"] == 100
    synthesis_prompt = server.requests[1].last_user_content or ""
    for choice in range(8):
        assert f"conclusion 100-{choice}" in synthesis_prompt
    assert state["answer"] == ANSWER
    first = state["usage"]["rounds"][0]
    assert (first["k"], first["returned"], first["messages"], first["failed"]) == (8, 8, 8, 0)
    # The prompt was sent once: its tokens are counted once; completion tokens are the server's sum.
    assert first["prompt_tokens"] == 10
    assert first["completion_tokens"] == sum(3 + c for c in range(8))


async def test_n_batch_3_splits_8_into_3_3_2_with_per_trajectory_events_and_usage():
    async with FakeOpenAIServer(per_choice()) as server:
        config = PaCoReConfig(schedule=Schedule.parse("8"), params={"seed": 100}, n_batch=3)
        state, events = await run(server, config)
    explorers = explorer_requests(server)
    # Two runs (astream, then ainvoke): each sends 3 explorer requests.
    assert sorted((r.body["seed"], r.n) for r in explorers) == sorted([(100, 3), (103, 3), (106, 2)] * 2)
    finished = [e for e in events if isinstance(e, TrajectoryFinished) and not e.final]
    assert sorted(e.index for e in finished) == list(range(8))
    by_index = {e.index: e for e in finished}
    # Prompt tokens on each request's first trajectory; completion tokens split evenly, remainder on the first.
    assert [by_index[i].prompt_tokens for i in range(8)] == [10, 0, 0, 10, 0, 0, 10, 0]
    assert [by_index[i].completion_tokens for i in range(8)] == [4, 4, 4, 4, 4, 4, 4, 3]  # 12 / 3 and 7 / 2
    assert all(by_index[i].content.endswith(f"conclusion {100 + 3 * (i // 3)}-{i % 3}") for i in range(8))
    rounds = state["usage"]["rounds"]
    assert [(r["k"], r["returned"], r["messages"]) for r in rounds] == [(8, 8, 8), (1, 1, 1)]
    assert rounds[0]["prompt_tokens"] == 30 and rounds[0]["completion_tokens"] == 12 + 12 + 7
    assert state["usage"]["prompt_tokens"] == 30 + 50
    assert state["usage"]["completion_tokens"] == 31 + 7


async def test_a_failed_batch_fails_all_its_trajectories_under_a_quorum():
    async with FakeOpenAIServer(per_choice(frozenset({103}))) as server:
        config = PaCoReConfig(
            schedule=Schedule.parse("8"),
            params={"seed": 100},
            n_batch=3,
            failure=FailurePolicy(min_trajectories=5),
        )
        state, events = await run(server, config)
    failed = sorted((e.index, e.finish_reason) for e in events if isinstance(e, TrajectoryFinished) and e.error)
    assert failed == [(3, "error"), (4, "error"), (5, "error")]
    first = state["usage"]["rounds"][0]
    assert (first["k"], first["returned"], first["failed"], first["messages"]) == (8, 5, 3, 5)
    assert state["answer"] == ANSWER


async def test_a_failed_batch_below_the_quorum_fails_the_round():
    async with FakeOpenAIServer(per_choice(frozenset({103}))) as server:
        config = PaCoReConfig(
            schedule=Schedule.parse("8"), params={"seed": 100}, n_batch=3, failure=FailurePolicy(min_trajectories=6)
        )
        with pytest.raises(QuorumError, match="5 of K=8") as caught:
            async with VLLMClient(server.base_url) as client:
                await build_pacore_graph(client, config=config).ainvoke({"problem": "Q"})
    assert "#3:" in str(caught.value) and "#5:" in str(caught.value)


async def test_n_batch_over_two_rounds_keeps_seeds_distinct():
    async with FakeOpenAIServer(per_choice()) as server:
        config = PaCoReConfig(schedule=Schedule.parse("4,2"), params={"seed": 100}, n_batch=4)
        async with VLLMClient(server.base_url) as client:
            state = await build_pacore_graph(client, config=config).ainvoke({"problem": "Q"})
    assert [(r.body.get("seed"), r.n, r.stream) for r in server.requests] == [
        (100, 4, False),
        (104, 2, False),
        (106, 1, True),
    ]
    assert [r["returned"] for r in state["usage"]["rounds"]] == [4, 2, 1]


def test_n_batch_does_not_combine_with_the_straggler_cutoff():
    with pytest.raises(ValidationError, match=r"n_batch and failure\.straggler_grace"):
        PaCoReConfig(n_batch=4, failure=FailurePolicy(min_trajectories=2, straggler_grace=1.0))
    with pytest.raises(ValueError, match="straggler_grace"):
        parse_spec(
            {
                "name": "x",
                "type": "pacore",
                "schedule": [4],
                "n_batch": 2,
                "failure": {"min_trajectories": 2, "straggler_grace": 1.0},
            },
            source="test",
        )


def test_cli_n_batch_flag():
    with FakeOpenAIServer(per_choice()).in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", "Q", "-s", "5", "--seed", "100", "--n-batch", "4", "--base-url", server.base_url, "-q"]
        )
    assert result.exit_code == 0, result.stderr
    assert [(r.n, r.stream) for r in server.requests] == [(4, False), (1, False), (1, True)]
    assert ANSWER in result.stdout
