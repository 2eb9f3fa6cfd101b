"""Each built-in graph spec, run through `pacore run --graph` and `load_graph` against the fake server (real HTTP)."""

import itertools
import json
import re

import pytest
from typer.testing import CliRunner

from pacore_graph import ContextBudgetError, VLLMClient
from pacore_graph.cli.main import app
from pacore_graph.graphs import discover_graphs, load_graph
from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"
ORIGINAL = [{"role": "user", "content": PROBLEM}]


def script(request):
    """Thinks (inline and in a separate field), then concludes with a boxed, request-specific answer."""
    i = request.index
    return FakeReply(content=f"<think>scratch {i}</think>Conclusion {i}: \\boxed{{{i}}}", reasoning=f"hidden {i}")


def references(request):
    """The reference texts a synthesis prompt carries, in order."""
    text = request.last_user_content
    if not text.startswith("You are given a problem and a list of reference responses."):
        return []
    body = text.split("Reference Responses:\n", 1)[1].rsplit("\n\n\nNow, based on", 1)[0]
    return [part.strip("\n") for part in re.split(r"\nReference \d+:\n", body) if part.strip("\n")]


def run(*args, reply=script):
    """`pacore run PROBLEM ... --json` against a fresh fake server; returns (exit code, JSON or output, requests)."""
    with FakeOpenAIServer(reply).in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", PROBLEM, "--base-url", server.base_url, "--json", *args], catch_exceptions=False
        )
        requests = list(server.requests)
    if result.exit_code != 0:
        return result.exit_code, result.output, requests
    return result.exit_code, json.loads(result.stdout), requests


def test_every_preset_ships_and_loads():
    entries = {entry.name: entry for entry in discover_graphs() if entry.origin == "built-in"}
    assert set(entries) >= {
        "pacore-low",
        "pacore-medium",
        "pacore-high",
        "self-consistency",
        "sequential",
        "pacore-no-compaction",
    }
    assert all(entry.error is None for entry in entries.values())
    assert {name: list(entries[name].spec.schedule.rounds) for name in entries} == {
        "pacore-low": [4],
        "pacore-medium": [16],
        "pacore-high": [32, 4],
        "self-consistency": [16],
        "sequential": [1, 1, 1, 1],
        "pacore-no-compaction": [4],
        "pacore-code-verified": [4],
    }


@pytest.mark.parametrize(("graph", "ks"), [("pacore-low", [4]), ("pacore-medium", [16]), ("pacore-high", [32, 4])])
def test_pacore_presets_request_pattern(graph, ks):
    code, out, requests = run("--graph", graph)
    assert code == 0, out
    assert len(requests) == sum(ks) + 1
    assert all(r.messages == ORIGINAL for r in requests[: ks[0]])
    start = ks[0]
    for previous_k, k in zip(ks, [*ks[1:], 1], strict=True):
        for request in requests[start : start + k]:
            refs = references(request)
            assert len(refs) == previous_k
            assert all(ref.startswith("Conclusion ") for ref in refs), "only conclusions are forwarded"
        start += k
    assert out["answer"] == f"Conclusion {sum(ks)}: \\boxed{{{sum(ks)}}}"
    assert out["schedule"] == ks
    assert [row["k"] for row in out["rounds"]] == [*ks, 1]


def test_pacore_low_is_the_default_graph():
    _, with_flag, flagged = run("--graph", "pacore-low", "--seed", "3")
    _, default, plain = run("--seed", "3")
    assert [r.body for r in flagged] == [r.body for r in plain]
    for out in (with_flag, default):
        for row in out["rounds"]:
            del row["seconds"]  # wall-clock time differs between runs
    assert with_flag == default


def test_self_consistency_votes_without_a_synthesis_call():
    answers = ["391", "390", "391", "\\frac{1}{2}", "$391$"]

    def voter(request):
        i = request.index
        return FakeReply(content=f"<think>work {i}</think>So the result is \\boxed{{{answers[i]}}}.")

    code, out, requests = run("--graph", "self-consistency", "--schedule", "5", reply=voter)
    assert code == 0, out
    assert len(requests) == 5
    assert all(r.messages == ORIGINAL for r in requests), "no synthesis prompt is ever sent"
    assert out["answer"] == "391"
    assert out["schedule"] == [5]
    assert [(r["k"], r["returned"], r["messages"]) for r in out["rounds"]] == [(5, 5, 5)]
    assert out["usage"]["effective_ttc_tokens"] == sum(r["completion_tokens"] for r in out["rounds"]) > 0


async def test_self_consistency_records_the_tally_and_abstentions():
    replies = ["\\boxed{7}", "no idea", "The answer is 7.", "\\boxed{8}", "\\boxed{8}", "\\boxed{7}"]
    async with FakeOpenAIServer(lambda r: FakeReply(content=replies[r.index])) as server:
        async with VLLMClient(server.base_url) as client:
            graph = load_graph("self-consistency", client, schedule=6)
            state = await graph.ainvoke({"problem": PROBLEM})
        assert len(server.requests) == 6
    assert state["answer"] == "7"
    assert state["votes"] == {"7": 3, "8": 2}
    row = state["usage"]["rounds"][0]
    assert (row["k"], row["returned"], row["messages"], row["dropped_empty"]) == (6, 6, 5, 1)


def test_self_consistency_with_no_extractable_answer_fails_clearly():
    code, output, requests = run("--graph", "self-consistency", "-s", "3", reply=lambda r: FakeReply(content="hmm"))
    assert code == 1
    assert len(requests) == 3
    assert "no answer to vote on: none of the 3 trajectories (K=3)" in output


def test_self_consistency_takes_one_round_only():
    code, output, requests = run("--graph", "self-consistency", "--schedule", "3,2")
    assert code == 2
    assert requests == []
    assert "schedule: self-consistency samples K answers in one round, got 2 rounds [3, 2]" in output


def test_sequential_1_1_1_makes_4_calls_each_seeing_the_previous_conclusion():
    code, out, requests = run("--graph", "sequential", "--schedule", "1,1,1")
    assert code == 0, out
    assert len(requests) == 4
    assert requests[0].messages == ORIGINAL
    for previous, request in itertools.pairwise(requests):
        assert references(request) == [f"Conclusion {previous.index}: \\boxed{{{previous.index}}}"]
    assert [row["k"] for row in out["rounds"]] == [1, 1, 1, 1]


def test_sequential_default_matches_pacore_low_trajectory_count():
    code, out, requests = run("--graph", "sequential")
    assert code == 0, out
    assert len(requests) == 5
    assert [len(references(r)) for r in requests] == [0, 1, 1, 1, 1]


def test_sequential_rejects_parallel_rounds():
    code, output, requests = run("--graph", "sequential", "--schedule", "2,1")
    assert code == 2 and requests == []
    assert "a sequential graph runs K=1 in every round, got [2, 1]" in output


def test_no_compaction_passes_full_trajectories():
    code, out, requests = run("--graph", "pacore-no-compaction")
    assert code == 0, out
    assert len(requests) == 5
    refs = references(requests[4])
    assert len(refs) == 4
    for ref in refs:
        # The separate reasoning field goes back in <think> tags, followed by the whole content.
        i = int(re.search(r"hidden (\d+)", ref).group(1))
        assert ref == f"<think>\nhidden {i}\n</think>\n\n<think>scratch {i}</think>Conclusion {i}: \\boxed{{{i}}}"
    assert out["answer"] == "Conclusion 4: \\boxed{4}", "the answer itself is still the conclusion"


def test_no_compaction_fails_before_sending_an_over_long_prompt():
    def verbose(request):
        return FakeReply(content="<think>" + "long thought " * 3000 + "</think>42")  # ~39k characters each

    code, output, requests = run("--graph", "pacore-no-compaction", reply=verbose)
    assert code == 1
    assert len(requests) == 4, "the over-long synthesis prompt was never sent"
    assert "error: the prompt of the final synthesis is 156," in output
    assert "over the budget of 120,000 (max_prompt_chars); nothing was sent" in output
    assert len([line for line in output.strip().splitlines() if not line.startswith(("round ", "final "))]) == 1

    # The same trajectories compacted to conclusions fit easily.
    code, _, requests = run("--graph", "pacore-low", reply=verbose)
    assert code == 0 and len(requests) == 5


async def test_the_prompt_budget_is_checked_in_every_round():
    from pacore_graph.graphs import load_spec

    spec = load_spec("pacore-no-compaction").model_copy(update={"max_prompt_chars": 5})
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url) as client:
            with pytest.raises(
                ContextBudgetError, match="the prompt of round 1 is 16 characters, over the budget of 5"
            ):
                await load_graph(spec, client).ainvoke({"problem": PROBLEM})
        assert server.requests == []
