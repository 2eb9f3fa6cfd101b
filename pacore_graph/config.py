"""The settings of one PaCoRe graph, validated by pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pacore_graph.clients.base import SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.extract import ExtractionPolicy
from pacore_graph.prompts import REFERENCE_TEMPLATE
from pacore_graph.schedule import Schedule

__all__ = ["PaCoReConfig"]


class PaCoReConfig(BaseModel):
    """Everything that shapes a PaCoRe run, apart from the backend.

    ``params`` apply to every parallel round unless ``round_params`` has an entry for that round (1-based);
    ``synthesis_params`` (default: ``params``) apply to the final one. ``max_prompt_chars`` caps the text of
    any single prompt: a round whose prompt would exceed it fails before anything is sent. ``extraction`` is
    how voting graphs read an answer from a conclusion.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Schedule = Field(default_factory=lambda: Schedule.parse("low"))
    params: SamplingParams = SamplingParams()
    round_params: dict[int, SamplingParams] = Field(default_factory=dict)
    synthesis_params: SamplingParams | None = None
    compaction: CompactionPolicy = CompactionPolicy()
    template: str = REFERENCE_TEMPLATE
    max_prompt_chars: int | None = Field(None, gt=0)
    extraction: ExtractionPolicy = ExtractionPolicy()

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
