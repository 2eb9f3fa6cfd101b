"""Synthesis diagnostics and SC@k curves: the real CLI, real HTTP to the fake server, hand-computed figures."""

import json
import re
import threading
from collections import Counter

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.eval.self_consistency import sc_ks
from pacore_graph.eval.synthesis import cited_references
from pacore_graph.testing import FakeOpenAIServer, FakeReply

DATASET = [
    {"id": "p1", "problem": "Q1: what is 2 + 3?", "answer": "5"},
    {"id": "p2", "problem": "Q2: what is 3 + 4?", "answer": "7"},
    {"id": "p3", "problem": "Q3: what is 6 / 2?", "answer": "3"},
]
TRUTH = {row["problem"]: row["answer"] for row in DATASET}


def run_eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


def write_dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in DATASET))
    return path


def is_synthesis(request) -> bool:
    return "Reference Responses:" in (request.last_user_content or "")


def question_of(request) -> str:
    text = request.last_user_content
    if is_synthesis(request):
        return text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:", 1)[0]
    return text


def answers_in_references(request) -> list[str]:
    references = request.last_user_content.split("Reference Responses:", 1)[1]
    return re.findall(r"The answer is (\d+)", references)


def synthesis_of(out, graph):
    return {m["graph"]: m for m in json.loads((out / "metrics.json").read_text())}[graph]["synthesis"]


def eval_with(tmp_path, script, *args):
    out = tmp_path / "out"
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_eval(
            "--dataset", str(write_dataset(tmp_path)), "--out", str(out), "--base-url", server.base_url, *args
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    return out, result, requests


def test_explorers_always_wrong_and_syntheses_always_right_is_all_emergent(tmp_path):
    def script(request):
        if is_synthesis(request):
            return FakeReply(content=f"Reference 1 is wrong. The answer is {TRUTH[question_of(request)]}.")
        return FakeReply(content="The answer is 99.")

    args = ("--graph", "pacore-low:2", "--runs", "2", "--no-pool")
    out, result, _ = eval_with(tmp_path, script, *args)
    d = synthesis_of(out, "pacore-low:2")
    # 3 problems x 2 runs = 6 syntheses, each over 2 references, all of them "99".
    assert (d["syntheses"], d["references"], d["references_right"]) == (6, 12, 0)
    assert d["reference_accuracy"] == 0.0
    assert (d["syntheses_right"], d["synthesis_accuracy"]) == (6, 1.0)
    assert (d["all_references_wrong"], d["emergent_right"], d["emergent_correctness"]) == (6, 6, 1.0)
    # The majority is 99 every time; every synthesis overrode it, rightly.
    assert (d["with_majority"], d["override_right"], d["override_wrong"], d["majority_override"]) == (6, 6, 0, 1.0)
    assert (d["cross_referencing_count"], d["cross_referencing"]) == (6, 1.0)
    assert (d["answered"], d["solipsistic"], d["solipsism"]) == (6, 6, 1.0)
    row = "| pacore-low:2 | 0.0 (0/12) | 100.0 (6/6) | 100.0 (6/6) | 100.0 (6/6) (6 / 0) | 100.0 (6/6) | 100.0 (6/6) |"
    assert row in result.stdout
    assert row in (out / "report.md").read_text()
    # Taken from the run's events: each record holds what its synthesis saw.
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["synthesis"]["reference_answers"] == ["99", "99"] for r in records)
    assert all(r["synthesis"]["cited"] == [1] for r in records)


def test_syntheses_that_copy_the_majority_show_no_emergence_and_no_override(tmp_path):
    explorer_answers = {
        "Q1: what is 2 + 3?": [5, 5, 6],
        "Q2: what is 3 + 4?": [8, 8, 9],
        "Q3: what is 6 / 2?": [1, 1, 2],
    }
    seen: Counter = Counter()
    lock = threading.Lock()

    def script(request):
        question = question_of(request)
        if is_synthesis(request):
            majority = Counter(answers_in_references(request)).most_common(1)[0][0]
            return FakeReply(content=f"Most agree. The answer is {majority}.")
        with lock:
            index = seen[question]
            seen[question] += 1
        return FakeReply(content=f"The answer is {explorer_answers[question][index % 3]}.")

    # --parallel 1: one run at a time, so each run's three explorers give 5, 5, 6 (or 8, 8, 9 ...).
    args = ("--graph", "pacore-low:3", "--runs", "2", "--no-pool", "--parallel", "1")
    out, result, _ = eval_with(tmp_path, script, *args)
    d = synthesis_of(out, "pacore-low:3")
    assert (d["syntheses"], d["references"], d["references_right"]) == (6, 18, 4)  # only Q1's two 5s are right
    assert (d["syntheses_right"], d["synthesis_accuracy"]) == (2, pytest.approx(1 / 3))
    # Q2 and Q3 (2 runs each): every reference wrong, and the synthesis copied the wrong majority.
    assert (d["all_references_wrong"], d["emergent_right"], d["emergent_correctness"]) == (4, 0, 0.0)
    assert (d["with_majority"], d["override_right"], d["override_wrong"], d["majority_override"]) == (6, 0, 0, 0.0)
    assert (d["cross_referencing_count"], d["solipsistic"], d["solipsism"]) == (0, 0, 0.0)
    assert "| pacore-low:3 | 22.2 (4/18) | 33.3 (2/6) | 0.0 (0/4) | 0.0 (0/6) (0 / 0) | 0.0 (0/6) | 0.0 (0/6) |" in (
        result.stdout
    )


def test_voting_graphs_have_no_synthesis_diagnostics(tmp_path):
    out, result, _ = eval_with(
        tmp_path, lambda r: FakeReply(content="The answer is 5."), "--graph", "self-consistency:2", "--runs", "1"
    )
    assert synthesis_of(out, "self-consistency:2") is None
    assert "Synthesis diagnostics" not in result.stdout


@pytest.mark.parametrize(
    ("text", "count", "cited"),
    [
        ("Reference 3 is right, reference 1 is not.", 4, [1, 3]),
        ("As Response 2 says", 4, [2]),
        ("see ref. #4 and Ref 2", 4, [2, 4]),
        ("References 1 and 3 agree; responses 2, 4 do not.", 4, [1, 2, 3, 4]),
        ("response no. 2", 2, [2]),
        ("response 200 and reference 5", 4, []),  # not references of this prompt
        ("The answer is 5. 3 + 2 = 5.", 4, []),
        ("Reference Responses: none", 4, []),
        (None, 4, []),
    ],
)
def test_cross_reference_patterns(text, count, cited):
    assert cited_references(text, count) == cited


def test_sc_k_values():
    assert sc_ks(1) == [1]
    assert sc_ks(4) == [1, 2, 4]
    assert sc_ks(6) == [1, 2, 4, 6]


def test_sc_curve_comes_from_the_pool_without_new_requests(tmp_path):
    # Each problem's pool of 4 round-1 trajectories holds the right answer 3 times and a wrong one once.
    seen: Counter = Counter()
    lock = threading.Lock()

    def script(request):
        question = question_of(request)
        if is_synthesis(request):
            return FakeReply(content=f"The answer is {TRUTH[question]}.", completion_tokens=5)
        with lock:
            index = seen[question]
            seen[question] += 1
        answer = TRUTH[question] if index % 4 != 3 else "0"
        return FakeReply(content=f"The answer is {answer}.", completion_tokens=10)

    # self-consistency:4 draws every slot of the 4-slot pools; pacore-low:2 reuses two of them.
    args = ("--graph", "pacore-low:2", "--graph", "self-consistency:4", "--runs", "1")
    out, result, requests = eval_with(tmp_path, script, *args)
    pool = (out / "pool.jsonl").read_text().splitlines()
    assert len(pool) == 3 * 4
    # Every request was a round-1 pool slot or a synthesis: the curve cost none.
    assert len(requests) == len(pool) + 3
    curve = {p["k"]: p for p in json.loads((out / "sc_curve.json").read_text())}
    assert sorted(curve) == [1, 2, 4]
    assert curve[1]["accuracy"] == pytest.approx(3 / 4)  # each of the 4 entries voted alone
    assert curve[4]["accuracy"] == pytest.approx(1.0)  # 3 right against 1
    assert 0.5 <= curve[2]["accuracy"] <= 1.0  # a tie goes to the first of the pair
    assert [curve[k]["mean_ttc_tokens"] for k in (1, 2, 4)] == [10, 20, 40]
    assert (curve[1]["subsets"], curve[2]["subsets"], curve[4]["subsets"]) == (4, 6, 1)
    assert "| SC@4 | 100.0 | 40 | 3 | 1 |" in result.stdout
    assert "| SC@1 | 75.0 | 10 | 3 | 4 |" in (out / "report.md").read_text()


def test_references_trimmed_to_fit_the_context_are_not_counted_as_seen(tmp_path):
    # Two explorers, one of them long: the final prompt only fits the short one (the budget drops the longest).
    seen: Counter = Counter()
    lock = threading.Lock()

    def script(request):
        question = question_of(request)
        if is_synthesis(request):
            return FakeReply(content=f"The answer is {TRUTH[question]}.")
        with lock:
            index = seen[question]
            seen[question] += 1
        padding = "" if index % 2 == 0 else "word " * 400
        return FakeReply(content=f"{padding}The answer is {index % 2}.")

    args = ("--graph", "pacore-low:2", "--runs", "1", "--no-pool", "--parallel", "1", "--max-model-len", "700")
    out, _, _ = eval_with(tmp_path, script, *args, "--max-tokens", "16")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["synthesis"]["reference_answers"] for r in records] == [["0"]] * 3
    assert synthesis_of(out, "pacore-low:2")["references"] == 3
