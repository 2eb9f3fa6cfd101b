"""``PaCoReResult``: the typed, JSON-ready summary of one finished run, of any graph type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


#: The output keys that have fields of their own; every other key of a graph's output goes to ``extra``.
_KNOWN_KEYS = frozenset(
    {"answer", "finish_reason", "usage", "votes", "tool_calls", "messages"}
)  # messages: the chat form


class PaCoReResult(BaseModel):
    """A finished run of any graph type: the answer, the schedule that produced it, one row per round, the usage.

    Every graph type outputs ``answer``, ``finish_reason`` and ``usage`` (whose ``rounds`` become
    :attr:`rounds`); a run with tools may end in :attr:`tool_calls` instead of (or besides) a text answer.
    Voting graphs (self-consistency) add the tally, :attr:`votes`. Any other output key lands
    in :attr:`extra` under its own name, as the graph gave it: the code-verified graph's ``program`` (the final
    program, or ``None``) and ``verification`` (``program_found``, ``passed``, ``total``, ``evidence``,
    ``outcomes``); for a parent graph that runs PaCoRe as a subgraph, the parent's own output keys.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: str
    finish_reason: str
    schedule: list[int] = Field(description="K of each parallel round (the synthesis, K = 1, is not listed)")
    rounds: list[RoundRow]
    usage: RunUsage
    votes: dict[str, int] | None = Field(None, description="voting graphs: answer → votes, most votes first")
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the tool calls the synthesis made, in OpenAI's form (with tools; empty for a text answer)",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="the graph's other output keys (code-verified: program, verification)"
    )

    @classmethod
    def from_output(cls, output: Mapping[str, Any], schedule: Schedule | None = None) -> PaCoReResult:
        """Build the result from a graph's output (what ``ainvoke`` returns, not the whole checkpointed state).

        Without ``schedule`` it is read from the round rows: every row but the last (the synthesis), or every
        row for a voting graph, which makes no synthesis call.
        """
        usage = output["usage"]
        rounds = [RoundRow(**row) for row in usage.get("rounds", [])]
        votes = output.get("votes")
        if schedule is not None:
            ks = list(schedule.rounds)
        else:
            ks = [row.k for row in (rounds if votes is not None else rounds[:-1])]
        return cls(
            answer=output["answer"],
            finish_reason=output["finish_reason"],
            schedule=ks,
            rounds=rounds,
            usage=RunUsage(
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                effective_ttc_tokens=usage["effective_ttc_tokens"],
            ),
            votes=votes,
            tool_calls=list(output.get("tool_calls") or []),
            extra={key: value for key, value in output.items() if key not in _KNOWN_KEYS},
        )
