"""``PaCoReResult``: the typed, JSON-ready summary of one finished run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from pacore_graph.schedule import Schedule

__all__ = ["PaCoReResult", "RoundRow", "RunUsage"]


class RoundRow(BaseModel):
    """One row of the round table; the synthesis is the last row, with ``k = 1``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int
    k: int
    returned: int
    messages: int
    dropped_empty: int
    dropped_truncated: int
    failed: int = 0  # requests that failed after retries; returned + failed == k
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class RunUsage(BaseModel):
    """Token totals of a run; ``effective_ttc_tokens`` is the sum of all completion tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int
    completion_tokens: int
    effective_ttc_tokens: int


class PaCoReResult(BaseModel):
    """A finished run: the answer, the schedule that produced it, one row per round, and the usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: str
    finish_reason: str
    schedule: list[int]
    rounds: list[RoundRow]
    usage: RunUsage

    @classmethod
    def from_output(cls, output: Mapping[str, Any], schedule: Schedule) -> PaCoReResult:
        """Build the result from the graph's output state."""
        usage = output["usage"]
        return cls(
            answer=output["answer"],
            finish_reason=output["finish_reason"],
            schedule=list(schedule.rounds),
            rounds=[RoundRow(**row) for row in usage["rounds"]],
            usage=RunUsage(
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                effective_ttc_tokens=usage["effective_ttc_tokens"],
            ),
        )
