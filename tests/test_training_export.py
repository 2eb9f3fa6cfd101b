"""The training exports: a TRL parquet file and a verl parquet file, both loadable with `datasets`."""

from __future__ import annotations

import warnings

import datasets
import pytest

from pacore_graph.prompts import build_prompt
from pacore_graph.training.episode import Episode
from pacore_graph.training.export import VERL_IMAGE_PLACEHOLDER, write_exports
from pacore_graph.training.rewards import compute_score, correctness

QUESTION = "What is 3 + 4? End with: The answer is N."
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def episode(index: int = 0, *, image: bool = False, domain: str = "math", answer: str = "7") -> Episode:
    content: object = QUESTION
    if image:
        content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    refs = [f"The answer is {7 + k % 2}." for k in range(16)]
    return Episode(
        problem_id="p0",
        domain=domain,
        prompt=build_prompt(messages, refs),
        answer=answer,
        slots=list(range(16)),
        message_accuracy=0.5,
        index=index,
    )


def load(path):
    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(path.parent / "cache"))


def test_trl_file_has_the_conversational_prompt_and_the_reward_columns(tmp_path):
    paths = write_exports([episode(0), episode(1)], tmp_path)
    rows = load(paths["trl"])
    assert rows.column_names == [
        "prompt",
        "answer",
        "problem_id",
        "num_messages",
        "message_accuracy",
        "domain",
        "stage",
        "images",
    ]
    row = rows[0]
    assert row["prompt"] == build_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        [f"The answer is {7 + k % 2}." for k in range(16)],
    )
    assert (row["answer"], row["num_messages"], row["domain"], row["images"]) == ("7", 16, "math", [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's import warns about the engine's vLLM version
        from trl.data_utils import is_conversational
    assert is_conversational(row)
    # The reward reads the rows as TRL hands them over: the columns, one value per completion.
    columns = {k: [r[k] for r in rows] for k in rows.column_names if k != "prompt"}
    assert correctness(["The answer is 7.", "The answer is 8."], **columns) == [1.0, 0.0]


def test_verl_file_follows_verl_rl_schema(tmp_path):
    paths = write_exports([episode(0), episode(3, domain="code", answer='{"tests": []}')], tmp_path)
    rows = load(paths["verl"])
    assert rows.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info", "images"]
    math_row, code_row = rows[0], rows[1]
    assert (math_row["data_source"], math_row["ability"]) == ("pacore/math", "math")
    assert (code_row["data_source"], code_row["ability"]) == ("pacore/code", "code")
    assert math_row["reward_model"] == {"style": "rule", "ground_truth": "7"}
    assert code_row["extra_info"]["index"] == 3
    assert math_row["extra_info"] == {
        "problem_id": "p0",
        "index": 0,
        "num_messages": 16,
        "message_accuracy": 0.5,
        "stage": 1,
    }
    assert [m["role"] for m in math_row["prompt"]] == ["system", "user"]
    # What verl's reward manager passes on reaches our compute_score as it expects.
    truth = math_row["reward_model"]["ground_truth"]
    assert (
        compute_score(math_row["data_source"], "<think>8?</think>The answer is 7.", truth, math_row["extra_info"])
        == 1.0
    )


def test_images_go_to_the_images_column_and_verl_gets_placeholders(tmp_path):
    paths = write_exports([episode(image=True)], tmp_path)
    trl_row, verl_row = load(paths["trl"])[0], load(paths["verl"])[0]
    assert trl_row["images"] == [IMAGE] and verl_row["images"] == [IMAGE]
    assert VERL_IMAGE_PLACEHOLDER not in trl_row["prompt"][-1]["content"]
    assert verl_row["prompt"][-1]["content"] == trl_row["prompt"][-1]["content"] + VERL_IMAGE_PLACEHOLDER
    assert verl_row["prompt"][0]["content"] == "Be brief."  # no image, no placeholder


def test_exports_are_written_whole_or_not_at_all(tmp_path):
    write_exports([episode()], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trl.parquet", "verl.parquet"]


@pytest.mark.parametrize("name", ["trl", "verl"])
def test_a_rewrite_replaces_the_old_file(tmp_path, name):
    write_exports([episode(0), episode(1)], tmp_path)
    paths = write_exports([episode(2)], tmp_path)
    assert len(load(paths[name])) == 1
