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
* **Full trajectories (ablation).** ``keep="full"`` forwards each whole trajectory, thinking included (a
  separate reasoning field is put back inside ``<think>`` tags), instead of its conclusion: the paper's
  "no compaction" ablation. Prompts then grow with K and the trajectory lengths, so pair it with a prompt
  budget (``PaCoReConfig.max_prompt_chars``). Only in this mode does the state hold full texts.
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

__all__ = [
    "THINK_CLOSE",
    "Compacted",
    "CompactionPolicy",
    "compact",
    "conclusion_of",
    "full_text_of",
    "is_cut_mid_thought",
]

THINK_CLOSE = "</think>"


def conclusion_of(content: str) -> str:
    """C(ω) for one trajectory: the text after the last ``</think>``, or the whole content if there is none."""
    _, marker, tail = content.rpartition(THINK_CLOSE)
    return tail if marker else content


def full_text_of(content: str, reasoning: str | None) -> str:
    """The whole trajectory as one text: a separate reasoning field goes back inside ``<think>`` tags."""
    if not reasoning:
        return content
    return f"<think>\n{reasoning}\n{THINK_CLOSE}\n\n{content}"


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
    """What C(Ω) forwards (``keep``), how it treats truncated trajectories, and how it orders the references.

    See the module docstring for each rule.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: Literal["conclusion", "full"] = "conclusion"
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
        text = trajectory["conclusion"]
        if policy.keep == "full":
            text = trajectory.get("full_text", text)
        if trajectory["cut_mid_thought"] and policy.truncated == "drop":
            dropped_truncated += 1
        elif not text.strip():
            dropped_empty += 1
        else:
            messages.append(text)
    return Compacted(messages=messages, dropped_empty=dropped_empty, dropped_truncated=dropped_truncated)
