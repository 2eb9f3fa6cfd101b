"""C(ω): how a round's trajectories become the reference messages of the next round.

Rules (the PaCoRe spec, plus this project's explicit policy for truncation):

* **Conclusion.** Only the text after the last ``</think>`` is kept; with no ``</think>`` the whole content is
  kept. A separate reasoning field (vLLM's ``reasoning``/``reasoning_content``) is never forwarded.
* **Empty.** A trajectory whose conclusion is empty or whitespace is not turned into a message (policy
  ``empty="drop"``, the default), so the references are renumbered without it. The authors' code keeps it, as a
  blank ``Reference N:`` entry, and shuffles a failed explorer (with a quorum) in as an empty placeholder too;
  ``empty="keep"`` does both, for prompts laid out exactly as theirs.
* **Truncated mid-thought.** A trajectory that hit ``max_tokens`` (``finish_reason == "length"``) before
  writing ``</think>`` has no conclusion: its content is unfinished reasoning. The authors' code forwards it
  whole, which can flood the next round's context. Policy ``"drop"`` (the default) drops it; ``"keep"``
  forwards it whole as the authors' code does (useful for models that do not think in ``<think>`` tags,
  where a truncated answer is still an answer). Either way the count is recorded.
* **Full trajectories (ablation).** ``keep="full"`` forwards each whole trajectory, thinking included (a
  separate reasoning field is put back inside ``<think>`` tags), instead of its conclusion: the paper's
  "no compaction" ablation. Prompts then grow with K and the trajectory lengths, so pair it with a prompt
  budget (``PaCoReConfig.max_prompt_chars``). Only in this mode does the state hold full texts.
* **Tool calls.** With tools, a trajectory may propose tool calls. They are never executed; its reference is its
  conclusion followed by one line per call, ``Proposed tool call (not executed): NAME(JSON arguments)`` (the
  canonical form of :mod:`pacore_graph.tool_calls`). A trajectory with calls and no text is not empty.
* **Streamed.** :class:`ConclusionStream` applies the conclusion rule to a stream of content deltas (the proxy
  streams the synthesis's conclusion as it is generated).
* **Order.** Trajectories are sorted by content length (ties by index), then shuffled with
  ``random.Random(seed)`` (seed 42 by default), as the authors' code does "to avoid ordering bias". The order
  depends only on the contents, never on which request finished first, so runs are reproducible and the
  server's prefix cache sees stable prompts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pacore_graph.clients.base import Completion, TokenUsage
from pacore_graph.state import Trajectory
from pacore_graph.tool_calls import proposed_calls_text

__all__ = [
    "THINK_CLOSE",
    "Compacted",
    "CompactionPolicy",
    "ConclusionStream",
    "Selection",
    "compact",
    "conclusion_of",
    "full_text_of",
    "is_cut_mid_thought",
    "reduce_completion",
    "reference_text",
    "select",
]

log = logging.getLogger(__name__)

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
    empty: Literal["drop", "keep"] = "drop"


class Compacted(BaseModel):
    """The result of compacting one round: the messages for the next round and what was dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[str]
    dropped_empty: int = 0
    dropped_truncated: int = 0


def reduce_completion(
    completion: Completion,
    *,
    round_number: int,
    index: int,
    usage: TokenUsage,
    started_at: float,
    seconds: float,
    keep_full: bool = False,
) -> Trajectory:
    """Trajectory ``index`` of a round, reduced to what compaction needs: its conclusion, size, whether it was
    cut mid-thought, and its tokens and timing.

    Applied as each trajectory comes back, so the graph state never holds a transcript (``keep_full`` keeps the
    whole text for the no-compaction ablation).
    """
    reduced = Trajectory(
        round=round_number,
        index=index,
        conclusion=conclusion_of(completion.content),
        content_chars=len(completion.content),
        finish_reason=completion.finish_reason,
        cut_mid_thought=is_cut_mid_thought(completion.content, completion.reasoning, completion.finish_reason),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        seconds=round(seconds, 3),
        started_at=started_at,
    )
    if keep_full:
        reduced["full_text"] = full_text_of(completion.content, completion.reasoning)
    if completion.tool_calls:
        reduced["tool_calls"] = [call.openai() for call in completion.tool_calls]
    return reduced


def reference_text(trajectory: Trajectory, policy: CompactionPolicy) -> str:
    """The text a kept trajectory forwards: its conclusion, or its whole text with ``keep="full"``; then the tool
    calls it proposed, in their canonical text form."""
    text = trajectory.get("full_text", trajectory["conclusion"]) if policy.keep == "full" else trajectory["conclusion"]
    calls = trajectory.get("tool_calls")
    if not calls:
        return text
    lines = proposed_calls_text(calls)
    return f"{text.rstrip()}\n\n{lines}" if text.strip() else lines


@dataclass(frozen=True)
class Selection:
    """The trajectories compaction keeps, in reference order, and what it dropped."""

    kept: list[Trajectory]
    dropped_empty: int = 0
    dropped_truncated: int = 0


def select(trajectories: Sequence[Trajectory], policy: CompactionPolicy | None = None) -> Selection:
    """The rules of C(Ω) (see the module docstring): order the trajectories, drop the empty and the truncated."""
    policy = policy or CompactionPolicy()
    ordered = sorted(trajectories, key=lambda t: (t["content_chars"], t["index"]))
    random.Random(policy.order_seed).shuffle(ordered)
    kept: list[Trajectory] = []
    dropped_empty = dropped_truncated = 0
    for trajectory in ordered:
        if trajectory["cut_mid_thought"] and policy.truncated == "drop":
            dropped_truncated += 1
        elif policy.empty == "drop" and not reference_text(trajectory, policy).strip():
            dropped_empty += 1
        else:
            kept.append(trajectory)
    return Selection(kept=kept, dropped_empty=dropped_empty, dropped_truncated=dropped_truncated)


def compact(trajectories: Sequence[Trajectory], policy: CompactionPolicy | None = None) -> Compacted:
    """C(Ω): turn one round's trajectories into ordered reference messages, counting what was dropped."""
    policy = policy or CompactionPolicy()
    selection = select(trajectories, policy)
    return Compacted(
        messages=[reference_text(t, policy) for t in selection.kept],
        dropped_empty=selection.dropped_empty,
        dropped_truncated=selection.dropped_truncated,
    )


class ConclusionStream:
    """C(ω) on a stream: turns a trajectory's content deltas into deltas of its conclusion.

    Content that opens with ``<think>`` is held back until ``</think>``; otherwise it is passed on at once,
    keeping back only a tail that could be the start of ``</think>``. :meth:`finish` reconciles with the final
    conclusion: whatever of it was not sent yet (all of it, when nothing was streamed).
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._sent = ""
        self._thinking: bool | None = None  # unknown until the first non-blank text

    def feed(self, text: str) -> str:
        """The part of the conclusion that can be sent now."""
        self._buffer += text
        if self._thinking is None:
            stripped = self._buffer.lstrip()
            if not stripped or "<think>".startswith(stripped):
                return ""
            self._thinking = stripped.startswith("<think>")
        if THINK_CLOSE in self._buffer:
            self._thinking = False
            self._buffer = self._buffer.rpartition(THINK_CLOSE)[2]
            if self._sent:  # a second </think> after sent text: the rest of the answer is reconciled in finish()
                return ""
        if self._thinking:
            return ""
        tail = self._buffer[1 - len(THINK_CLOSE) :]
        keep = 0
        if "<" in tail:  # the common case (no "<" near the end) skips the prefix scan: it runs once per token
            keep = next((n for n in range(len(THINK_CLOSE) - 1, 0, -1) if self._buffer.endswith(THINK_CLOSE[:n])), 0)
        ready, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
        self._sent += ready
        return ready

    def finish(self, conclusion: str) -> str:
        """What remains to be sent of ``conclusion``, the trajectory's final conclusion."""
        if conclusion.startswith(self._sent):
            return conclusion[len(self._sent) :]
        log.warning("the streamed synthesis diverged from its conclusion; the stream keeps what was sent")
        return ""
