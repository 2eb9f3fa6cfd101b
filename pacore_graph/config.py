"""The settings of one PaCoRe graph, validated by pydantic."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pacore_graph.clients.base import SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.extract import ExtractionPolicy
from pacore_graph.prompts import REFERENCE_TEMPLATE
from pacore_graph.schedule import Schedule

__all__ = ["FailurePolicy", "PaCoReConfig"]


class FailurePolicy(BaseModel):
    """How many trajectories of a parallel round may fail, after the client's retries, before the round fails.

    By default none may: the first failed request fails the run (its siblings are cancelled). Set
    ``min_trajectories`` and/or ``min_fraction`` (of K; with both, the stricter wins; never more than K) to let a
    round go on with what came back: a failed explorer then returns a marker instead of raising, so its
    siblings keep running, and the round fails with :class:`~pacore_graph.errors.QuorumError` (naming each
    failure) only when fewer than the quorum came back. Every failure is counted in the round's ``failed`` and
    recorded in the trace; K itself never shrinks. The final synthesis (K = 1) always needs its one trajectory.

    ``straggler_grace`` (seconds, needs a quorum) is the straggler cutoff: once a round's quorum has come back,
    the round waits that long more, then cancels the explorers still running and records each as failed
    ("cut off as a straggler"), so one slow request cannot hold up the whole round.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_trajectories: int | None = Field(None, ge=1)
    min_fraction: float | None = Field(None, gt=0.0, le=1.0)
    straggler_grace: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _grace_needs_a_quorum(self) -> FailurePolicy:
        if self.straggler_grace is not None and not self.tolerant:
            raise ValueError(
                "straggler_grace closes a round once its quorum is back, so it needs a quorum: "
                "set min_trajectories or min_fraction too"
            )
        return self

    @property
    def tolerant(self) -> bool:
        """Whether any failure may be tolerated (a quorum is set)."""
        return self.min_trajectories is not None or self.min_fraction is not None

    def quorum(self, k: int) -> int:
        """How many of a round's ``k`` trajectories must come back."""
        if not self.tolerant:
            return k
        need = max(self.min_trajectories or 1, math.ceil((self.min_fraction or 0.0) * k - 1e-9))
        return min(need, k)


class PaCoReConfig(BaseModel):
    """Everything that shapes a PaCoRe run, apart from the backend.

    ``params`` apply to every parallel round unless ``round_params`` has an entry for that round (1-based);
    ``synthesis_params`` (default: ``params``) apply to the final one. ``max_prompt_chars`` caps the text of
    any single prompt: a round whose prompt would exceed it fails before anything is sent. ``max_model_len``
    (the model's context, in tokens) makes every prompt fit ``max_model_len - max_tokens``, trimming references
    as :mod:`pacore_graph.budget` documents. ``extraction`` is
    how voting graphs read an answer from a conclusion. ``failure`` is the partial-failure policy (a quorum
    per round; by default any failed request fails the run).

    ``n_batch`` turns on n-batching (request shaping for vLLM; default off): the K explorers of a round share one
    prompt and params, so they are sent as ``ceil(K / n_batch)`` requests of ``n`` choices (chunks of at most
    ``n_batch``) instead of K requests, and the server prefills the prompt once per request. Each request is
    sent with the seed of its first trajectory (``seed + offset``); the server derives each choice's randomness
    from it, so a seeded run is reproducible but draws other samples than without n-batching. The request's
    prompt tokens are counted once, on its first trajectory; its completion tokens are split evenly over its
    choices (the remainder on the first), since the server reports one usage per request. A failed request
    fails all its trajectories. It does not combine with the straggler cutoff (one request cannot be cut per
    choice).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Schedule = Field(default_factory=lambda: Schedule.parse("low"))
    params: SamplingParams = SamplingParams()
    round_params: dict[int, SamplingParams] = Field(default_factory=dict)
    synthesis_params: SamplingParams | None = None
    compaction: CompactionPolicy = CompactionPolicy()
    template: str = REFERENCE_TEMPLATE
    max_prompt_chars: int | None = Field(None, gt=0)
    max_model_len: int | None = Field(None, gt=0)
    extraction: ExtractionPolicy = ExtractionPolicy()
    failure: FailurePolicy = FailurePolicy()
    n_batch: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _n_batch_without_straggler_cutoff(self) -> PaCoReConfig:
        # A straggler is one choice of an n-choice request: it cannot be cancelled alone.
        if self.n_batch is not None and self.failure.straggler_grace is not None:
            raise ValueError(
                "n_batch and failure.straggler_grace do not combine (a request of n choices cannot be cut off "
                "choice by choice): unset one of them"
            )
        return self

    @model_validator(mode="after")
    def _round_params_name_parallel_rounds(self) -> PaCoReConfig:
        parallel = len(self.schedule.rounds)
        outside = sorted(r for r in self.round_params if not 1 <= r <= parallel)
        if outside:
            raise ValueError(
                f"round_params names round(s) {outside}, but schedule {self.schedule.spec!r} has parallel rounds "
                f"1..{parallel}; set the final round with synthesis_params"
            )
        return self

    @property
    def final_params(self) -> SamplingParams:
        """The sampling params of the final synthesis round."""
        return self.synthesis_params or self.params

    def params_for_round(self, round_number: int) -> SamplingParams:
        """The sampling params of parallel round ``round_number`` (1-based)."""
        return self.round_params.get(round_number, self.params)
