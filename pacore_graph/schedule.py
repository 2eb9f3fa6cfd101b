"""The round schedule K = [K_1, ..., K_R] and its parsing.

A schedule lists the parallel rounds only. The final synthesis round (K = 1) is implicit and always
appended, as the PaCoRe spec says: ``[4]`` runs 4 trajectories, then 1 synthesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from pacore_graph.errors import ScheduleError

__all__ = ["DEFAULT_MAX_K", "DEFAULT_MAX_ROUNDS", "PRESETS", "Schedule"]

#: Named schedules from the paper.
PRESETS: dict[str, tuple[int, ...]] = {"low": (4,), "medium": (16,), "high": (32, 4)}

#: Limits that catch typos such as "3200" for "32,0"; raise them explicitly to run larger schedules.
DEFAULT_MAX_K = 1024
DEFAULT_MAX_ROUNDS = 16

_VALID_FORMS = (
    "a comma-separated list of positive integers such as '32,4', a list such as [32, 4], "
    "or a preset: " + ", ".join(f"'{name}'={list(ks)}" for name, ks in PRESETS.items())
)


def _parse_k(item: Any, raw: Any) -> int:
    """One K: a positive integer (bools and floats are rejected, since True == 1 and 2.5 is a typo)."""
    if isinstance(item, str) and item.strip().lstrip("+-").isdigit():
        item = int(item.strip())
    if isinstance(item, bool) or not isinstance(item, int):
        text = item.strip() if isinstance(item, str) else item
        raise ScheduleError(f"invalid schedule {raw!r}: {text!r} is not an integer; use {_VALID_FORMS}")
    if item < 1:
        raise ScheduleError(f"invalid schedule {raw!r}: every K must be at least 1, got {item}; use {_VALID_FORMS}")
    return item


def _parse_rounds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, Schedule):
        return raw.rounds
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in PRESETS:
            return PRESETS[text]
        items: Sequence[Any] = [part for part in text.strip("[]").split(",")] if text.strip("[]") else []
    elif isinstance(raw, int) and not isinstance(raw, bool):
        items = [raw]
    elif isinstance(raw, Sequence):
        items = raw
    else:
        raise ScheduleError(f"invalid schedule {raw!r}; use {_VALID_FORMS}")
    if not items:
        raise ScheduleError(f"invalid schedule {raw!r}: it is empty; use {_VALID_FORMS}")
    return tuple(_parse_k(item, raw) for item in items)


class Schedule(BaseModel):
    """The parallel rounds of a PaCoRe run; the final K = 1 synthesis is implicit.

    Accepts ``"32,4"``, ``[32, 4]``, ``4`` and the presets ``"low"``, ``"medium"``, ``"high"``, both
    through :meth:`parse` (raises :class:`~pacore_graph.errors.ScheduleError`) and as a field of other
    pydantic models (raises a ``ValidationError`` carrying the same message).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: tuple[int, ...]

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {**value, "rounds": _parse_rounds(value.get("rounds", ()))}
        return {"rounds": _parse_rounds(value)}

    @model_validator(mode="after")
    def _check_default_limits(self) -> Schedule:
        self.check_limits()
        return self

    @classmethod
    def parse(cls, value: Any, *, max_k: int = DEFAULT_MAX_K, max_rounds: int = DEFAULT_MAX_ROUNDS) -> Schedule:
        """Parse any accepted form, with explicit limits; raise ``ScheduleError`` naming the bad value."""
        schedule = cls.model_construct(rounds=_parse_rounds(value))
        schedule.check_limits(max_k=max_k, max_rounds=max_rounds)
        return schedule

    def check_limits(self, *, max_k: int = DEFAULT_MAX_K, max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        """Raise ``ScheduleError`` if any K exceeds ``max_k`` or there are more than ``max_rounds`` rounds."""
        spec = self.spec
        if not self.rounds:
            raise ScheduleError(f"invalid schedule {spec!r}: it is empty; use {_VALID_FORMS}")
        if len(self.rounds) > max_rounds:
            raise ScheduleError(
                f"schedule {spec!r} has {len(self.rounds)} rounds, more than the limit of {max_rounds}; "
                "raise the limit explicitly (--max-rounds) if you mean it"
            )
        if max(self.rounds) > max_k:
            raise ScheduleError(
                f"schedule {spec!r} asks for K={max(self.rounds)} in one round, more than the limit of {max_k}; "
                "raise the limit explicitly (--max-k) if you mean it"
            )

    @property
    def all_rounds(self) -> tuple[int, ...]:
        """The rounds actually run: the parallel ones, then the final synthesis (K = 1)."""
        return (*self.rounds, 1)

    @property
    def total_trajectories(self) -> int:
        """How many trajectories a run samples, the final synthesis included."""
        return sum(self.all_rounds)

    @property
    def spec(self) -> str:
        """The compact text form, e.g. ``"32,4"``."""
        return ",".join(str(k) for k in self.rounds)

    def offset(self, round_number: int) -> int:
        """How many trajectories run before round ``round_number`` (1-based); used to derive distinct seeds."""
        return sum(self.all_rounds[: round_number - 1])
