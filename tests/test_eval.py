"""`pacore eval` end to end: the real CLI, real HTTP to the fake OpenAI server, and hand-computed figures."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.eval import MathVerifyGrader, Problem, load_dataset, make_arith
from pacore_graph.eval.datasets import DatasetError
from pacore_graph.eval.runner import parse_graph_arg
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault


def run_eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def metrics_of(out):
    return {m["graph"]: m for m in json.loads((out / "metrics.json").read_text())}


def is_synthesis(request) -> bool:
    return "Reference Responses:" in (request.last_user_content or "")


def question_of(request) -> str:
    """The original problem, from a round-1 prompt or from inside a synthesis prompt."""
    text = request.last_user_content
    if is_synthesis(request):
        return text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:", 1)[0]
    return text


# --- hand-computed figures -------------------------------------------------------------------------------------

DATASET = [
    {"id": "p1", "problem": "Q1: what is 2 + 3?", "answer": "5"},
    {
        "id": "p2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q2: what is 3 + 4?"}],
        "ground_truth": {"answer": "7"},
        "category": "math",
    },
    {"id": "p3", "problem": "Q3: what is 6 / 2?", "answer": "3"},
]

#: Self-consistency:1, one reply per run (runs go in order with --parallel 1 and --no-pool).
SC_REPLIES = {
    "Q1: what is 2 + 3?": ["The answer is 5.", "\\boxed{5}", "The answer is 6."],  # right, right, wrong
    "Q2: what is 3 + 4?": ["The answer is 7.", "The answer is 8.", "\\boxed{8}"],  # right, wrong, wrong
    "Q3: what is 6 / 2?": ["The answer is 3.", "no idea", "\\boxed{\\frac{6}{2}}"],  # right, no answer, right
}
#: pacore-low:2: the explorers always say 0; the synthesis of each run says this.
SYNTH_REPLIES = {
    "Q1: what is 2 + 3?": ["The answer is 4.", "The answer is 5.", "The answer is 5."],  # wrong, right, right
    "Q2: what is 3 + 4?": ["The answer is 7.", "The answer is 7.", "The answer is 7."],  # all right
    "Q3: what is 6 / 2?": ["The answer is 2.", "The answer is 2.", "The answer is 3.0"],  # wrong, wrong, right
}


def scripted():
    seen: Counter = Counter()
    lock = threading.Lock()

    def script(request):
        question = question_of(request)
        with lock:
            kind = "synth" if is_synthesis(request) else "sc"
            index = seen[(kind, question)]
            seen[(kind, question)] += 1
        if is_synthesis(request):
            return FakeReply(content=SYNTH_REPLIES[question][index], completion_tokens=7)
        return FakeReply(content=SC_REPLIES[question][index], completion_tokens=10)

    return script


def test_accuracies_match_hand_computed_values(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", DATASET)
    out = tmp_path / "out"
    with FakeOpenAIServer(scripted()).in_thread() as server:
        result = run_eval(
            "--dataset", str(dataset), "--graph", "self-consistency:1", "--runs", "3",
            "--out", str(out), "--base-url", server.base_url, "--parallel", "1", "--no-pool",
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    assert len(requests) == 9
    sc = metrics_of(out)["self-consistency:1"]
    # Per-run accuracy: run 0 = 3/3, run 1 = 1/3, run 2 = 1/3 (the "no idea" run has no answer: wrong).
    assert sc["mean_accuracy"] == pytest.approx(5 / 9)
    # stdev([1, 1/3, 1/3]) = sqrt((16 + 4 + 4) / 81 / 2) = 2 sqrt(3) / 9; over sqrt(3) runs: 2/9.
    assert sc["stderr"] == pytest.approx(2 / 9)
    # Majority over runs: p1 5 (right), p2 8 (wrong), p3 tie 3 vs \frac{6}{2}, first wins: 3 (right).
    assert sc["majority_accuracy"] == pytest.approx(2 / 3)
    assert sc["failed"] == 1
    assert sc["mean_ttc_tokens"] == pytest.approx(10)  # the failed run still spent its 10 tokens
    assert (sc["problems"], sc["runs"], sc["records"]) == (3, 3, 9)
    report = (out / "report.md").read_text()
    assert "| self-consistency:1 | [1] | 3 × 3 | 55.6 ± 22.2 | 66.7 | 10 |" in report
    assert "| self-consistency:1 | [1] | 3 × 3 | 55.6 ± 22.2 | 66.7 | 10 |" in result.stdout
    png = (out / "accuracy_vs_ttc.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_pacore_accuracy_is_graded_on_the_synthesis(tmp_path):
    dataset = write_jsonl(tmp_path / "data.jsonl", DATASET)
    out = tmp_path / "out"

    def script(request):
        if is_synthesis(request):
            return base(request)
        return FakeReply(content="The answer is 0.", completion_tokens=10)

    base = scripted()
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_eval(
            "--dataset", str(dataset), "--graph", "pacore-low:2", "--runs", "3",
            "--out", str(out), "--base-url", server.base_url, "--parallel", "1", "--no-pool",
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    assert len(requests) == 3 * 3 * 3
    low = metrics_of(out)["pacore-low:2"]
    # Per run: run 0 = p2 only (1/3); run 1 = p1, p2 (2/3); run 2 = all three ("3.0" equals 3).
    assert low["mean_accuracy"] == pytest.approx(2 / 3)
    assert low["stderr"] == pytest.approx(1 / 3 / 3**0.5)
    # Majority: p1 5 (2 of 3), p2 7, p3 2 (2 of 3, wrong).
    assert low["majority_accuracy"] == pytest.approx(2 / 3)
    assert low["mean_ttc_tokens"] == pytest.approx(2 * 10 + 7)


# --- round-1 pool reuse -----------------------------------------------------------------------------------------


def echo_script(request):
    if is_synthesis(request):
        return FakeReply(content="The answer is 5.", completion_tokens=5)
    return FakeReply(content=f"The answer is {request.index % 3}.", completion_tokens=10)


def count_requests(tmp_path, name, *args):
    out = tmp_path / name
    with FakeOpenAIServer(echo_script).in_thread() as server:
        result = run_eval(
            "--dataset", "builtin:arith?n=3", "--out", str(out), "--base-url", server.base_url, *args
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    return requests, out, result


def test_pool_makes_fewer_requests_than_independent_runs(tmp_path):
    graphs = ["--graph", "pacore-low:2", "--graph", "self-consistency:3", "--runs", "2"]
    independent, _, _ = count_requests(tmp_path, "independent", *graphs, "--no-pool")
    pooled, out, result = count_requests(tmp_path, "pooled", *graphs)
    # Independent: 3 problems x 2 runs x ((2 explorers + 1 synthesis) + 3 samples).
    assert len(independent) == 3 * 2 * (3 + 3)
    synth = [r for r in pooled if is_synthesis(r)]
    round1 = [r for r in pooled if not is_synthesis(r)]
    assert len(synth) == 3 * 2
    # Round 1 draws 2 + 3 per run from a pool of K_1 x runs = 6 slots per problem: at most 6 generated each.
    assert len(round1) <= 3 * 6
    assert len(pooled) < len(independent)
    per_problem = Counter(r.last_user_content for r in round1)
    assert all(count <= 6 for count in per_problem.values())
    stored = (out / "pool.jsonl").read_text().splitlines()
    assert len(stored) == len(round1)
    served = 3 * 2 * (2 + 3)
    assert f"{served} trajectories served from the pool, {len(round1)} of them generated" in result.stdout
    # Reused trajectories still count as compute: TTC is the same as without the pool.
    metrics = metrics_of(out)
    assert metrics["self-consistency:3"]["mean_ttc_tokens"] == pytest.approx(30)
    assert metrics["pacore-low:2"]["mean_ttc_tokens"] == pytest.approx(25)


def test_a_shared_pool_is_not_paid_for_again(tmp_path):
    pool = str(tmp_path / "pool.jsonl")
    first, _, _ = count_requests(tmp_path, "a", "--graph", "self-consistency:6", "--runs", "1", "--pool-file", pool)
    assert len(first) == 3 * 6  # every slot of the 6-slot pools generated
    # A new schedule on the same pool: only the syntheses go to the server.
    second, out, result = count_requests(
        tmp_path, "b", "--graph", "pacore-low:4", "--graph", "self-consistency:3", "--runs", "2",
        "--pool-file", pool, "--pool-size", "6",
    )  # fmt: skip
    assert len(second) == 3 * 2 and all(is_synthesis(r) for r in second)
    assert "0 of them generated" in result.stdout
    assert len((tmp_path / "pool.jsonl").read_text().splitlines()) == 3 * 6
    assert metrics_of(out)["self-consistency:3"]["mean_ttc_tokens"] == pytest.approx(30)


def test_a_shared_pool_never_mixes_models(tmp_path):
    pool = str(tmp_path / "pool.jsonl")
    counts = []
    for name, model in (("a", "model-a"), ("b", "model-b"), ("c", "model-a")):
        with FakeOpenAIServer(echo_script, model=model).in_thread() as server:
            result = run_eval(
                "--dataset", "builtin:arith?n=2", "--out", str(tmp_path / name), "--base-url", server.base_url,
                "--graph", "self-consistency:2", "--runs", "1", "--pool-file", pool, "--pool-size", "2",
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            counts.append(len(server.requests))
    assert counts == [4, 4, 0]  # model-b gets its own pool; model-a's is reused


def test_pool_smaller_than_k1_is_refused(tmp_path):
    with FakeOpenAIServer(echo_script).in_thread() as server:
        result = run_eval(
            "--dataset", "builtin:arith?n=2", "--out", str(tmp_path / "o"), "--base-url", server.base_url,
            "--graph", "self-consistency:4", "--pool-size", "3",
        )  # fmt: skip
    assert result.exit_code == 2
    assert "pool-size 3 is smaller than K_1 of self-consistency:4" in result.stderr


# --- resuming ---------------------------------------------------------------------------------------------------


def test_rerun_skips_finished_runs(tmp_path):
    args = ["--graph", "self-consistency:2", "--runs", "2"]
    first, out, _ = count_requests(tmp_path, "o", *args, "--no-pool")
    assert len(first) == 3 * 2 * 2
    again, _, result = count_requests(tmp_path, "o", *args, "--no-pool")
    assert again == []
    assert "resuming: 6 of 6 runs" in result.stderr
    more, _, _ = count_requests(tmp_path, "o", "--graph", "self-consistency:2", "--runs", "3", "--no-pool")
    assert len(more) == 3 * 2  # only the new third run: 3 problems x K=2
    assert len((out / "results.jsonl").read_text().splitlines()) == 9


def test_resume_with_changed_options_is_refused(tmp_path):
    count_requests(tmp_path, "o", "--graph", "self-consistency:2", "--runs", "1", "--no-pool")
    with FakeOpenAIServer(echo_script).in_thread() as server:
        result = run_eval(
            "--dataset", "builtin:arith?n=3", "--out", str(tmp_path / "o"), "--base-url", server.base_url,
            "--graph", "self-consistency:2", "--max-tokens", "9",
        )  # fmt: skip
        other = run_eval(
            "--dataset", "builtin:arith?n=4", "--out", str(tmp_path / "o"), "--base-url", server.base_url,
            "--graph", "self-consistency:2",
        )  # fmt: skip
        assert server.requests == []
    assert result.exit_code == 2 and "different 'self-consistency:2'" in result.stderr
    assert other.exit_code == 2 and "another dataset" in other.stderr


def test_sigkill_mid_eval_then_rerun_does_not_redo_finished_problems(tmp_path):
    out = tmp_path / "out"
    problems = 20

    def slow(request):
        return FakeReply(content=f"The answer is {request.index}.", completion_tokens=3, delay=0.05)

    with FakeOpenAIServer(slow).in_thread() as server:
        command = [
            sys.executable, "-m", "pacore_graph.cli", "eval", "--dataset", f"builtin:arith?n={problems}",
            "--graph", "self-consistency:1", "--runs", "1", "--parallel", "1", "--no-pool",
            "--out", str(out), "--base-url", server.base_url,
        ]  # fmt: skip
        env = {**os.environ, "PACORE_BASE_URL": ""}
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        results = out / "results.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 5:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = len(server.requests)
        done = len(results.read_text().splitlines())
        assert 5 <= done < problems, "the eval finished before it could be killed"
        assert done <= before <= done + 1  # at most the one problem in flight is lost

        result = run_eval(*command[4:])
        assert result.exit_code == 0, result.output
        rerun = len(server.requests) - before
    assert rerun == problems - done
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["problem_id"] for r in lines) == sorted(f"arith-0-{i}" for i in range(problems))


def test_a_partial_last_line_from_a_kill_is_dropped_on_resume(tmp_path):
    # --parallel 1: the records are written in problem order, which the assertion below relies on.
    args = ["--graph", "self-consistency:1", "--runs", "1", "--no-pool", "--parallel", "1"]
    _, out, _ = count_requests(tmp_path, "o", *args)
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # the third record was cut mid-write
    again, _, _ = count_requests(tmp_path, "o", *args)
    assert len(again) == 1
    assert [json.loads(line)["problem_id"] for line in results.read_text().splitlines()] == [
        "arith-0-0", "arith-0-1", "arith-0-2",
    ]  # fmt: skip


def test_server_failure_stops_with_one_line_and_keeps_finished_runs(tmp_path):
    def script(request):
        if "3 + 4" in request.last_user_content or request.index >= 2:
            return FakeReply(fault=Fault.http_error(400, "bad request"))
        return FakeReply(content="The answer is 1.")

    dataset = write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": "a", "problem": "1 + 0?", "answer": "1"}, {"id": "b", "problem": "3 + 4?", "answer": "7"}],
    )
    out = tmp_path / "o"
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_eval(
            "--dataset", str(dataset), "--graph", "self-consistency:1", "--out", str(out),
            "--base-url", server.base_url, "--no-pool", "--parallel", "1", "--runs", "1",
        )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "400" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [json.loads(line)["problem_id"] for line in (out / "results.jsonl").read_text().splitlines()] == ["a"]


# --- datasets, grading, options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: invalid JSON"),
        (json.dumps({"id": "x", "problem": "2+2?"}), r"line 2: 'answer' must be a non-empty string"),
        (json.dumps({"id": "x", "question": "2+2?"}), r"line 2: each line needs 'messages' and 'ground_truth'"),
        (json.dumps({"id": "x", "messages": [], "ground_truth": {"answer": "4"}}), r"line 2: 'messages' must be"),
        (json.dumps({"id": "x", "messages": [{"role": "user", "content": "q"}]}), r"line 2: the reference format"),
        (json.dumps({"id": "a", "problem": "q", "answer": "1"}), r"line 2: duplicate id 'a' \(first on line 1\)"),
    ],
)
def test_invalid_dataset_line_is_named_in_one_line(tmp_path, line, message):
    dataset = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "problem": "q", "answer": "1"}, line])
    result = run_eval("--dataset", str(dataset), "--out", str(tmp_path / "o"), "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2
    assert re.search(message, result.stderr), result.stderr
    assert result.stderr.startswith(f"error: dataset {dataset}: line 2:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_extras_print_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` fail
    result = run_eval("--dataset", "builtin:arith", "--out", str(tmp_path / "o"), "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2
    assert "pip install 'pacore-graph[eval]'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_both_formats_load_to_the_same_problem(tmp_path):
    dataset = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": 1, "problem": "2+2?", "answer": 4},
            {"id": "r", "messages": [{"role": "user", "content": "2+2?"}], "ground_truth": {"answer": "4"}},
        ],
    )
    simple, reference = load_dataset(dataset)
    assert simple.messages == reference.messages == [{"role": "user", "content": "2+2?"}]
    assert (simple.id, simple.answer) == ("1", "4")


def test_builtin_arith_is_seeded():
    assert make_arith(5, seed=1) == make_arith(5, seed=1) != make_arith(5, seed=2)
    assert load_dataset("builtin:arith?n=5&seed=1") == make_arith(5, seed=1)
    first = make_arith(1, seed=0)[0]
    a, b = map(int, re.findall(r"\d+", first.messages[0]["content"])[:2])
    assert first.answer == str(a + b) and "The answer is <number>." in first.messages[0]["content"]
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("builtin:arith?size=3")
    with pytest.raises(DatasetError, match="unknown built-in dataset"):
        load_dataset("builtin:gsm8k")


@pytest.mark.parametrize(
    ("answer", "reply", "correct"),
    [
        ("5", "The answer is 5.", True),
        ("5", "so \\boxed{5}", True),
        ("1/2", "The answer is \\frac{1}{2}.", True),
        ("\\frac{1}{2}", "The answer is 0.5", True),
        ("5", "The answer is 6.", False),
        ("5", "I cannot say.", False),
        ("5", None, False),
        ("7", "3 + 4 gives 7", True),  # math-verify's own extraction when no phrase or box is present
    ],
)
def test_math_verify_grader(answer, reply, correct):
    problem = Problem(id="p", messages=[{"role": "user", "content": "q"}], answer=answer)
    assert MathVerifyGrader().grade(problem, reply).correct is correct


def test_graph_argument_with_schedule():
    assert parse_graph_arg("self-consistency:5")[0] == "self-consistency"
    assert list(parse_graph_arg("pacore-high:16,4")[1].rounds) == [16, 4]
    assert parse_graph_arg("pacore-low") == ("pacore-low", None)
    assert parse_graph_arg("my:graph.yaml") == ("my:graph.yaml", None)


def test_the_plot_of_a_zero_percent_run_spans_zero_to_a_hundred(tmp_path):
    """A 0 % run once got matplotlib's automatic axis around 0 (-0.04 to 0.04); the axis is always 0-100 %."""
    pytest.importorskip("matplotlib")
    from pacore_graph.eval import plot_accuracy_vs_ttc
    from pacore_graph.eval.report import GraphMetrics

    zero = GraphMetrics(
        graph="pacore-low", schedule=[4], problems=5, runs=4, records=20, mean_accuracy=0.0, stderr=0.0,
        majority_accuracy=0.0, mean_ttc_tokens=821.0, mean_seconds=37.7, failed=1, pool_served=0, pool_generated=0,
    )  # fmt: skip
    svg = plot_accuracy_vs_ttc([zero], tmp_path / "plot.svg").read_text()
    tick_labels = re.findall(r"<!-- (-?[\d.−]+) -->", svg)  # matplotlib writes each text as a comment
    assert {"0", "20", "40", "60", "80", "100"} <= set(tick_labels)
    assert not any("." in label or "−" in label for label in tick_labels)
