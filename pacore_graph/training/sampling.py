"""Episodes: |M| ~ U(lo, hi) distinct pool messages per episode, presented in P(x, M), seeded and reproducible.

Each episode draws its own random stream from ``(seed, problem id, episode index)``
(:func:`~pacore_graph.eval.pool.stable_seed`), so an episode is the same whatever else the build holds (other
problems, a different ``--episodes-per-problem``, the stage). It draws |M| uniformly from ``lo..hi`` (capped at
the problem's usable messages), then |M| distinct usable slots in a random order: the order the references appear.

P(x, M) is rendered by :func:`pacore_graph.prompts.build_prompt`, the function the graph renders every later round
with, over the official template: byte-identical to inference. A multimodal problem keeps its non-text parts
(images) after the template text, as the graph's later rounds do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.pool import stable_seed
from pacore_graph.prompts import build_prompt
from pacore_graph.training.episode import Domain, Episode
from pacore_graph.training.pool import ProblemPool

__all__ = ["MessageRange", "episode_answer", "problem_domain", "sample_episode"]


@dataclass(frozen=True)
class MessageRange:
    """|M|'s range, ``lo..hi`` inclusive (the paper's 16-24)."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str, pool_size: int) -> MessageRange:
        """``LO-HI`` or ``N``, checked against the pool: 1 <= LO <= HI <= pool size; raises :class:`ConfigError`."""
        lo_text, sep, hi_text = text.strip().partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise ConfigError(f"--messages {text!r}: give LO-HI (e.g. 16-24) or one number") from None
        if lo < 1:
            raise ConfigError(f"--messages {text!r}: an episode needs at least 1 reference")
        if lo > hi:
            raise ConfigError(f"--messages {text!r}: the low end is above the high end; write {hi}-{lo}")
        if hi > pool_size:
            raise ConfigError(
                f"--messages {text!r}: a pool of {pool_size} messages cannot give {hi} distinct references; "
                f"raise --pool-size to at least {hi} or lower --messages"
            )
        return cls(lo, hi)

    @property
    def spec(self) -> str:
        """As the command line writes it."""
        return f"{self.lo}-{self.hi}"


def problem_domain(problem: Problem) -> Domain:
    """A problem's domain: ``code`` for code problems (graded by tests), else ``math``."""
    return "code" if problem.category == "code" else "math"


def episode_answer(problem: Problem) -> str:
    """What grades an episode: the reference answer, or a code problem's tests as JSON."""
    if problem.category == "code":
        import json

        return json.dumps(problem.metadata.get("tests", []))
    return problem.answer


def sample_episode(
    pool: ProblemPool,
    *,
    messages: MessageRange,
    seed: int,
    index: int,
    accuracy: float,
    stage: int = 1,
) -> Episode | None:
    """Episode ``index`` of the pool's problem; None when the pool has fewer than ``messages.lo`` usable messages."""
    usable = pool.usable
    if len(usable) < messages.lo:
        return None
    rng = random.Random(stable_seed("episode", seed, pool.problem.id, index))
    size = rng.randint(messages.lo, min(messages.hi, len(usable)))
    slots = rng.sample(usable, size)
    references = [m for m in (pool.messages[s] for s in slots) if m is not None]
    prompt: list[dict[str, Any]] = build_prompt(pool.problem.messages, references)
    return Episode(
        problem_id=pool.problem.id,
        domain=problem_domain(pool.problem),
        prompt=prompt,
        answer=episode_answer(pool.problem),
        slots=slots,
        message_accuracy=accuracy,
        stage=2 if stage == 2 else 1,
        index=index,
    )
