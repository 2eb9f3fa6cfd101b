"""verl reads our export, our config and our reward, checked with verl's own code in verl's own venv.

verl pins an older transformers than the embedded vLLM needs, so it lives in a venv of its own (``make verl``
creates ``.venv-verl``; ``PACORE_VERL_PYTHON`` points at another interpreter). tests/fixtures/verl_check.py runs
there: it composes the shipped ``verl_ppo.yaml`` over verl's ``ppo_trainer`` defaults with Hydra (and runs
verl's ``validate_config`` on it), loads the
export with verl's ``RLHFDataset``, and scores responses with verl's reward loop worker (naive reward manager)
and its legacy naive reward manager, both loading ``compute_score`` from ``pkg://pacore_graph.training.rewards``.
Marked ``train``; without the venv it skips, except on CI, where ``make test`` creates it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from pacore_graph.training.export import write_exports

pytestmark = pytest.mark.train

ROOT = Path(__file__).parent.parent
CHECK = ROOT / "tests" / "fixtures" / "verl_check.py"


def verl_python() -> str:
    python = os.environ.get("PACORE_VERL_PYTHON") or str(ROOT / ".venv-verl" / "bin" / "python")
    if not Path(python).is_file():
        reason = f"no verl venv at {python} (create it with `make verl`, or set PACORE_VERL_PYTHON)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the verl checks, but {reason}", pytrace=False)
        pytest.skip(reason)
    return python


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    from pacore_graph.engine import EngineNotInstalledError, prepare_model

    python = verl_python()
    try:
        model = prepare_model()  # only its tokenizer is used
    except EngineNotInstalledError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the verl checks, but the packaged SmolLM2 is missing: {exc}", pytrace=False)
        pytest.skip(f"the packaged SmolLM2's tokenizer is not installed: {exc}")
    work = tmp_path_factory.mktemp("verl")
    spec = importlib.util.spec_from_file_location("train_grpo", ROOT / "examples" / "train_grpo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    episodes = example.tiny_episodes(problems=2)
    write_exports(episodes, work / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DISABLE_IMPORT_WARNING": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [python, str(CHECK), str(work / "data"), str(model), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads((work / "report.json").read_text()), "episodes": episodes}


def test_the_shipped_config_uses_only_verl_keys_and_the_paper_hyperparameters(report):
    assert report["unknown_keys"] == []
    # verl's own validation passed; PPO with GAE trains a critic, and without a KL term needs no reference model.
    assert report["validated"] is True
    assert report["needs"] == {"critic": True, "reference_policy": False}
    assert report["config"] == {
        "algorithm.adv_estimator": "gae",
        "algorithm.gamma": 1.0,
        "algorithm.lam": 1.0,
        "data.train_batch_size": 16,
        "actor_rollout_ref.rollout.n": 64,
        "actor_rollout_ref.actor.ppo_mini_batch_size": 16,
        "actor_rollout_ref.actor.ppo_epochs": 1,
        "actor_rollout_ref.actor.optim.lr": 2e-6,
        "critic.optim.lr": 5e-6,
        "actor_rollout_ref.rollout.temperature": 1.0,
        "actor_rollout_ref.rollout.top_p": 1.0,
        "trainer.total_training_steps": 250,
        "reward.custom_reward_function.path": "pkg://pacore_graph.training.rewards",
        "reward.custom_reward_function.name": "compute_score",
        "reward.reward_manager.name": "naive",
        "max_sequence": 131072,
    }


def test_verl_dataset_class_loads_the_export(report):
    rows = report["rows"]
    assert [row["data_source"] for row in rows] == ["pacore/math", "pacore/math"]
    assert [row["ground_truth"] for row in rows] == ["7", "11"]
    assert all(row["ability"] == "math" and row["style"] == "rule" for row in rows)
    assert [row["extra_info"]["problem_id"] for row in rows] == ["add-0", "add-1"]
    # The chat verl's rollout continues is P(x, M) exactly as the inference template renders it.
    assert [row["raw_prompt"] for row in rows] == [e.prompt for e in report["episodes"]]
    assert rows[0]["raw_prompt"][0]["content"].count("\nReference 16:\n") == 1


def test_verl_reward_managers_call_our_compute_score(report):
    # Per row: a right final answer after a wrong thought, then a wrong final answer after a right thought.
    assert report["rewards"] == [1.0, 0.0, 1.0, 0.0]
    assert report["legacy_rewards"] == [1.0, 0.0, 1.0, 0.0]
    calls = report["calls"]
    assert [(c["data_source"], c["ground_truth"], c["problem_id"]) for c in calls] == [
        ("pacore/math", "7", "add-0"),
        ("pacore/math", "7", "add-0"),
        ("pacore/math", "11", "add-1"),
        ("pacore/math", "11", "add-1"),
    ]
    assert calls[0]["solution_str"] == "<think>The answer is 71.</think>The answer is 7."
    assert not any(c["main_thread"] for c in calls)  # the reward loop grades in executor threads
    assert report["legacy_calls"] == 4
