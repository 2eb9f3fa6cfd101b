"""The training rewards: TRL's `correctness` and verl's `compute_score` grade the text after the last </think>."""

from __future__ import annotations

import threading

import pytest

from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.training.rewards import code_ground_truth, compute_score, correctness, final_answer

PRODUCT = "```python\na, b = map(int, input().split())\nprint(a * b)\n```"
SUM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
TESTS = code_ground_truth(
    Problem(
        id="mul",
        messages=[{"role": "user", "content": "Multiply two numbers."}],
        answer="",
        category="code",
        metadata={"tests": [{"input": "17 23\n", "output": "391\n"}, {"input": "2 3\n", "output": "6\n"}]},
    )
)


def test_right_and_wrong_math_answers():
    completions = ["<think>7 * 6</think>The answer is 42.", "<think>7 * 6</think>The answer is 41.", "\\boxed{42}"]
    assert correctness(completions, ["42", "42", "42"]) == [1.0, 0.0, 1.0]


def test_math_verify_equivalence_not_string_equality():
    assert correctness(["<think>half</think>So the result is $\\boxed{0.5}$."], ["\\frac{1}{2}"]) == [1.0]


def test_only_the_text_after_the_last_think_is_graded():
    right_inside = "<think>The answer is 42.</think>The answer is 7."
    two_blocks = "<think>a</think>The answer is 7.<think>b</think>The answer is 42."
    assert final_answer(two_blocks) == "The answer is 42."
    assert correctness([right_inside, two_blocks], ["42", "42"]) == [0.0, 1.0]
    assert compute_score("pacore/math", right_inside, "42") == 0.0
    assert compute_score("pacore/math", two_blocks, "42") == 1.0


def test_conversational_and_plain_completions_grade_alike():
    text = "<think>4</think>The answer is 4."
    conversational = [[{"role": "assistant", "content": text}], [{"role": "assistant", "content": "The answer is 5."}]]
    assert correctness(conversational, ["4", "4"]) == [1.0, 0.0]
    assert correctness([text, "The answer is 5."], ["4", "4"]) == [1.0, 0.0]
    # Content parts, as multimodal chat messages carry them.
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": text}]}]]
    assert correctness(parts, ["4"]) == [1.0]


def test_dataset_columns_arrive_as_keyword_arguments_as_trl_passes_them():
    rewards = correctness(
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=["The answer is 3.", "The answer is 3."],
        completion_ids=[[1], [2]],
        answer=["3", "4"],
        domain=["math", "math"],
        problem_id=["p0", "p1"],
        num_messages=[16, 24],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
    )
    assert rewards == [1.0, 0.0]


def test_empty_and_missing_answers_earn_nothing():
    assert correctness(["", "<think>The answer is 4</think>", "no number here"], ["4", "4", "4"]) == [0.0, 0.0, 0.0]


def test_code_completions_run_their_final_program_on_the_tests():
    completions = [
        f"<think>maybe add?\n{SUM}</think>Multiply:\n{PRODUCT}",
        f"<think>{PRODUCT}</think>Add:\n{SUM}",
        "no program",
    ]
    assert correctness(completions, [TESTS] * 3, domain=["code"] * 3) == [1.0, 0.0, 0.0]
    assert compute_score("pacore/code", completions[0], TESTS) == 1.0
    assert compute_score("pacore/code", completions[1], TESTS) == 0.0


def test_mixed_domains_in_one_batch():
    rewards = correctness([PRODUCT, "The answer is 6."], [TESTS, "6"], domain=["code", "math"])
    assert rewards == [1.0, 1.0]


def test_a_check_program_ground_truth_humaneval_style():
    truth = code_ground_truth(
        Problem(
            id="add",
            messages=[{"role": "user", "content": "add"}],
            answer="",
            category="code",
            metadata={
                "prompt": 'def add(a, b):\n    """The sum."""\n',
                "check": "def check(f):\n    assert f(2, 3) == 5\n",
                "entry_point": "add",
            },
        )
    )
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    assert correctness([right, wrong], [truth, truth], domain=["code", "code"]) == [1.0, 0.0]


def test_compute_score_from_a_worker_thread_as_verl_reward_loop_calls_it():
    # verl's reward loop runs a synchronous compute_score in an executor thread, where SIGALRM cannot be set.
    results: list[float] = []
    thread = threading.Thread(
        target=lambda: results.extend(
            [
                compute_score("pacore/math", "<think>x</think>\\boxed{42}", "42", {"index": 0}),
                compute_score("pacore/math", "\\boxed{41}", "42"),
            ]
        )
    )
    thread.start()
    thread.join(60)
    assert results == [1.0, 0.0]


def test_compute_score_accepts_verl_extra_info_and_keywords():
    extra = {"problem_id": "p", "num_turns": None, "rollout_reward_scores": {}}
    assert (
        compute_score(data_source="pacore/math", solution_str="The answer is 9", ground_truth="9", extra_info=extra)
        == 1.0
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compute_score("openai/gsm8k", "4", "4"), "pacore/math or pacore/code"),
        (lambda: compute_score("pacore/poetry", "4", "4"), "pacore/math or pacore/code"),
        (lambda: correctness(["4"], ["4"], domain=["poetry"]), "unknown domain 'poetry'"),
        (lambda: correctness(["4", "5"], ["4"]), "one answer"),
        (lambda: correctness([PRODUCT], ["not json"], domain=["code"]), "tests as JSON"),
        (lambda: correctness([PRODUCT], ['{"x": 1}'], domain=["code"]), "'tests' or 'check'"),
    ],
)
def test_misuse_is_a_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
