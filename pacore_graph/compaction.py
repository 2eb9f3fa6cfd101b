"""C(ω): how a round's trajectories become the reference messages of the next round.

Rules (the PaCoRe spec, plus this project's explicit policy for truncation):

* **Conclusion.** Only the text after the last ``</think>`` is kept; with no ``</think>`` the whole content is
  kept. A separate reasoning field (vLLM's ``reasoning``/``reasoning_content``) is never forwarded.
* **Empty.** A trajectory whose conclusion is empty or whitespace is not turned into a message.
* **Truncated mid-thought.** A trajectory that hit ``max_tokens`` (``finish_reason == "length"``) before
  writing ``</think>`` has no conclusion: its content is unfinished reasoning. The authors' code forwards it
  whole, which can flood the next round's context. Policy ``"drop"`` (the default) drops it; ``"keep"``
  forwards it whole as the authors' code does (useful for models that do not think in ``<think>`` tags,
  where a truncated answer is still an answer). Either way the count is recorded.
* **Order.** Trajectories are sorted by content length (ties by index), then shuffled with
  ``random.Random(seed)`` (seed 42 by default), as the authors' code does "to avoid ordering bias". The order
  depends only on the contents, never on which request finished first, so runs are reproducible and the
  server's prefix cache sees stable prompts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pacore_graph.state import Trajectory

__all__ = ["THINK_CLOSE", "Compacted", "CompactionPolicy", "compact", "conclusion_of", "is_cut_mid_thought"]

THINK_CLOSE = "</think>"


def conclusion_of(content: str) -> str:
    """C(ω) for one trajectory: the text after the last ``</think>``, or the whole content if there is none."""
    _, marker, tail = content.rpartition(THINK_CLOSE)
    return tail if marker else content


def is_cut_mid_thought(content: str, reasoning: str | None, finish_reason: str) -> bool:
    """True when a trajectory ran out of tokens before reaching its conclusion.

    With a separate reasoning field, the model was cut mid-thought when the content is still empty.
    Without one, it was cut mid-thought when no ``</think>`` was written.
    """
    if finish_reason != "length":
        return False
    if reasoning:
        return not content.strip()
    return THINK_CLOSE not in content


class CompactionPolicy(BaseModel):
    """How C(Ω) treats truncated trajectories and orders the references (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    truncated: Literal["drop", "keep"] = "drop"
    order_seed: int = 42


class Compacted(BaseModel):
    """The result of compacting one round: the messages for the next round and what was dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[str]
    dropped_empty: int = 0
    dropped_truncated: int = 0


def compact(trajectories: Sequence[Trajectory], policy: CompactionPolicy | None = None) -> Compacted:
    """C(Ω): turn one round's trajectories into ordered reference messages, counting what was dropped."""
    policy = policy or CompactionPolicy()
    ordered = sorted(trajectories, key=lambda t: (t["content_chars"], t["index"]))
    random.Random(policy.order_seed).shuffle(ordered)
    messages: list[str] = []
    dropped_empty = dropped_truncated = 0
    for trajectory in ordered:
        if trajectory["cut_mid_thought"] and policy.truncated == "drop":
            dropped_truncated += 1
        elif not trajectory["conclusion"].strip():
            dropped_empty += 1
        else:
            messages.append(trajectory["conclusion"])
    return Compacted(messages=messages, dropped_empty=dropped_empty, dropped_truncated=dropped_truncated)
