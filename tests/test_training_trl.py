"""A real, small training run: TRL's GRPOTrainer on the CPU, on exported episodes, rewarded by our function.

Marked ``train`` (``make test`` runs it; ``-m "not train"`` leaves it out). It trains the packaged SmolLM2-135M
(the embedded engine's converted folder, found with :func:`pacore_graph.engine.prepare_model`) for 2 optimizer
steps with 2 completions of at most 16 tokens per step. Without the engine's model it skips, except on CI
(``CI=true``), where the model must be there.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import time
import warnings
from pathlib import Path

import pytest

from pacore_graph.prompts import REFERENCE_TEMPLATE, build_prompt, render_references
from pacore_graph.training.export import write_exports
from pacore_graph.training.rewards import correctness

pytestmark = [
    pytest.mark.train,
    # transformers and torch warn about their own deprecations while training; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

EXAMPLE = Path(__file__).parent.parent / "examples" / "train_grpo.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_grpo", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The converted SmolLM2 folder (converted now if the engine is installed but the folder is not made yet)."""
    from pacore_graph.engine import EngineNotInstalledError, prepare_model

    try:
        return prepare_model()
    except EngineNotInstalledError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the training tests, but the packaged SmolLM2 is missing: {exc}", pytrace=False)
        pytest.skip(f"the packaged SmolLM2 (the embedded engine's model) is not installed: {exc}")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on 2 shared cores, torch's OpenMP threads wait on each other whenever another process
    holds a core (measured with two busy processes beside it: a forward and backward pass 91 s with two threads,
    19 s with one; 16 generated tokens 258 s against 10 s). Alone on the machine one thread costs about 15%."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trl_classes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's import warns about the engine's vLLM version
        from trl import GRPOConfig, GRPOTrainer
    return GRPOConfig, GRPOTrainer


def test_tiny_episodes_are_the_official_template():
    episodes = load_example().tiny_episodes(problems=2, references=16)
    for episode in episodes:
        question = episode.prompt[-1]["content"].split("Original Problem:\n", 1)[1].split("\n", 1)[0]
        refs = [f"The answer is {int(episode.answer) + (1 if k % 3 == 0 else 0)}." for k in range(16)]
        assert episode.prompt[-1]["content"] == render_references(question, refs, REFERENCE_TEMPLATE)
        assert episode.num_messages == 16
        assert episode.message_accuracy == 10 / 16


def test_grpo_trains_two_steps_on_exported_episodes_with_our_reward(tmp_path, smollm2, trl_classes):
    import datasets
    import torch

    GRPOConfig, GRPOTrainer = trl_classes
    episodes = load_example().tiny_episodes(problems=2, references=16)
    question = {"role": "user", "content": "What is 3 + 4? End your reply with: The answer is <number>."}
    assert episodes[0].prompt == build_prompt(
        [question], [f"The answer is {8 if k % 3 == 0 else 7}." for k in range(16)]
    )
    paths = write_exports(episodes, tmp_path / "data")
    dataset = datasets.load_dataset(
        "parquet", data_files=str(paths["trl"]), split="train", cache_dir=str(tmp_path / "cache")
    )

    calls: list[tuple[list[str], list[float]]] = []

    @functools.wraps(correctness)
    def counted(completions, answer, **kwargs):
        rewards = correctness(completions, answer, **kwargs)
        calls.append((list(answer), rewards))
        return rewards

    args = GRPOConfig(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        use_vllm=False,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=16,
        beta=0.0,
        learning_rate=1e-5,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = GRPOTrainer(model=str(smollm2), reward_funcs=[counted], args=args, train_dataset=dataset)
    before = trainer.model.model.layers[0].mlp.down_proj.weight.detach().clone()
    started = time.monotonic()
    trainer.train()
    print(f"2 GRPO steps on the CPU: {time.monotonic() - started:.1f}s")

    assert trainer.state.global_step == 2
    # Our function graded every completion: one call per generation batch, 2 completions, the export's answers.
    assert len(calls) == 2
    assert all(len(rewards) == 2 and set(rewards) <= {0.0, 1.0} for _, rewards in calls)
    assert all(set(answers) <= {"7", "11"} for answers, _ in calls)
    steps = [log for log in trainer.state.log_history if "loss" in log and "rewards/correctness/mean" in log]
    assert len(steps) == 2
    for log, (_, rewards) in zip(steps, calls, strict=True):
        assert log["rewards/correctness/mean"] == pytest.approx(sum(rewards) / len(rewards))
        assert math.isfinite(log["loss"]) and math.isfinite(log["grad_norm"])
    if any(len(set(rewards)) > 1 for _, rewards in calls):  # a group with a learning signal moves the weights
        assert not torch.equal(before, trainer.model.model.layers[0].mlp.down_proj.weight.detach())


def test_the_example_trains_on_a_build_folder_and_saves_the_model(tmp_path, smollm2, trl_classes, capsys):
    example = load_example()
    write_exports(example.tiny_episodes(problems=1), tmp_path / "data")
    argv = [str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--model", str(smollm2)]
    assert example.main([*argv, "--max-steps", "1", "--max-completion-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "training on 1 episodes" in out
    assert "step 1/1: reward" in out
    assert (tmp_path / "out" / "model" / "config.json").is_file()
