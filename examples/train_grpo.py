"""Train a PaCoRe synthesizer with TRL's ``GRPOTrainer`` on one machine, rewarded by our ``correctness``.

The policy sees P(x, M), a problem with 16-24 compacted references from its message pool, and earns 1 when its
final answer (after the last ``</think>``) is right (paper §2.2). Build the episodes, then train::

    pacore train build --dataset problems.jsonl --out runs/data        # writes runs/data/trl.parquet
    python examples/train_grpo.py runs/data --out runs/grpo

Without a data folder the script builds a tiny set itself (a few additions, each with 16 references of which a
third are wrong) so you can watch the loop run: ``python examples/train_grpo.py --out /tmp/grpo``. The default
model is the packaged SmolLM2-135M-Instruct (the embedded engine's converted folder), trained on the CPU for
``--max-steps`` optimizer steps with tiny generations: about a minute a step on two cores. It prints one line per
step (rewards through ``pacore_graph.training.rewards.correctness``, loss) and saves the model under ``--out``.
On a machine other processes keep busy, ``--threads 1`` is much faster than torch's default of one thread per
core (its threads wait on each other whenever one is descheduled).

Scaling up (the settings are GRPOConfig's; see TRL's documentation):

* **GPU**: run without ``--cpu`` (the default when CUDA is available): bf16 on, several processes with
  ``accelerate launch examples/train_grpo.py ...`` (DeepSpeed ZeRO-3 for an 8B model).
* **Generation with vLLM**: ``use_vllm=True`` with ``vllm_mode="colocate"`` (the trainer's GPUs), or
  ``vllm_mode="server"`` with a separate ``trl vllm-serve --model MODEL`` on other GPUs. Generation dominates
  PaCoRe episodes (long prompts, long reasoning), so this matters most.
* **A bigger model**: ``--model`` takes a Hugging Face model folder or name, e.g. an 8B reasoning model that
  writes ``<think>...</think>``, as PaCoRe-8B does.
* **The paper's hyperparameters** (§2.2), as far as GRPO maps onto them: 16 problems × 64 responses a batch
  (``num_generations=64`` and a global batch of 1024 completions), temperature and top-p 1.0, learning rate
  2e-6, strictly on-policy (``num_iterations=1``, ``steps_per_generation=1``), no KL term (``beta=0``),
  ``max_completion_length`` up to the 131,072-token context minus the prompt, 250 iterations on the stage-1 set,
  then 450 on a stage-2 set rebuilt against the stage-1 checkpoint (``pacore train build --stage 2 --base-url
  URL-serving-the-checkpoint``). The paper trains with PPO and a critic (GAE λ = 1, γ = 1, critic lr 5e-6);
  GRPO replaces the critic by the group baseline. For PPO at the paper's scale on a Ray cluster, use the verl
  config shipped as ``pacore_graph/training/verl_ppo.yaml`` (README, "Training a synthesizer").
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pacore_graph.prompts import build_prompt
from pacore_graph.training.episode import Episode
from pacore_graph.training.export import write_exports

#: Tiny problems for a first run: (a, b) for "What is a + b?".
TINY_PROBLEMS = [(3, 4), (5, 6), (2, 9), (8, 1), (7, 7), (4, 5), (6, 3), (9, 2)]
QUESTION = "What is {a} + {b}? End your reply with: The answer is <number>."


def tiny_episodes(problems: int = 4, references: int = 16) -> list[Episode]:
    """A few addition problems as episodes in the official template, a third of their references wrong."""
    episodes = []
    for i, (a, b) in enumerate(TINY_PROBLEMS[:problems]):
        messages = [{"role": "user", "content": QUESTION.format(a=a, b=b)}]
        pool = [f"The answer is {a + b + (1 if k % 3 == 0 else 0)}." for k in range(references)]
        right = sum(1 for k in range(references) if k % 3)
        episodes.append(
            Episode(
                problem_id=f"add-{i}",
                prompt=build_prompt(messages, pool),
                answer=str(a + b),
                slots=list(range(references)),
                message_accuracy=right / references,
            )
        )
    return episodes


def load_trl(data_dir: Path, cache_dir: Path | None = None) -> Any:
    """``DIR/trl.parquet`` (written by ``pacore train build --out DIR``) as a ``datasets.Dataset``."""
    import datasets

    path = data_dir / "trl.parquet"
    if not path.is_file():
        raise SystemExit(f"{path} not found: build it with `pacore train build --dataset FILE --out {data_dir}`")
    cache = str(cache_dir) if cache_dir is not None else None
    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache)


def default_model() -> str:
    """The packaged SmolLM2-135M-Instruct: the embedded engine's converted folder (converted once if needed)."""
    from pacore_graph.engine import prepare_model

    return str(prepare_model())


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):  # type: ignore[misc]
        """One line per logged step: rewards from our function, loss, time."""

        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if "rewards/correctness/mean" in logs:
                print(
                    f"step {state.global_step}/{state.max_steps}: reward {logs['rewards/correctness/mean']:.2f} "
                    f"(std {logs.get('rewards/correctness/std', math.nan):.2f}), "
                    f"loss {logs.get('loss', math.nan):.4f}, "
                    f"completion length {logs.get('completions/mean_length', math.nan):.0f}, "
                    f"{time.monotonic() - self.started:.0f}s",
                    flush=True,
                )

    return Progress()


def train(
    dataset: Any,
    out: Path,
    *,
    model: str | None = None,
    max_steps: int = 2,
    num_generations: int = 2,
    max_completion_length: int = 24,
    learning_rate: float = 1e-5,
    cpu: bool = True,
    seed: int = 0,
) -> Any:
    """Train with GRPO on ``dataset`` (the TRL export's rows) rewarded by ``correctness``; returns the trainer."""
    with warnings.catch_warnings():
        # TRL's import warns about the vLLM version the embedded engine uses; generation here is TRL's own.
        warnings.simplefilter("ignore")
        from trl import GRPOConfig, GRPOTrainer

    from pacore_graph.training.rewards import correctness

    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=cpu,
        bf16=not cpu,
        fp16=False,
        use_vllm=False,
        per_device_train_batch_size=num_generations,  # one problem's group per step
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=1.0,
        top_p=1.0,
        beta=0.0,  # no reference model, as the paper (no KL term)
        learning_rate=learning_rate,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    trainer = GRPOTrainer(
        model=model or default_model(),
        reward_funcs=[correctness],
        args=args,
        train_dataset=dataset,
        callbacks=[_progress_callback()],
    )
    trainer.train()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """The command line: ``train_grpo.py [DIR] --out OUT [--model M] [--max-steps N] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="a `pacore train build --out` folder (default: tiny set)")
    parser.add_argument("--out", type=Path, required=True, help="where the trained model is saved")
    parser.add_argument("--model", help="a model folder or name (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=2, help="completions per problem (the group)")
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (default: the CPU)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.data is None:
        args.data = args.out / "data"
        paths = write_exports(tiny_episodes(), args.data)
        print(f"built a tiny set: {paths['trl']}", flush=True)
    dataset = load_trl(args.data, cache_dir=args.out / "datasets-cache")
    print(f"training on {len(dataset)} episodes from {args.data / 'trl.parquet'}", flush=True)
    trainer = train(
        dataset,
        args.out,
        model=args.model,
        max_steps=args.max_steps,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        cpu=not args.gpu,
    )
    trainer.save_model(str(args.out / "model"))
    print(f"saved the trained model to {args.out / 'model'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
