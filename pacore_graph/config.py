"""The settings of one PaCoRe graph, validated by pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.clients.base import SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.prompts import REFERENCE_TEMPLATE
from pacore_graph.schedule import Schedule

__all__ = ["PaCoReConfig"]


class PaCoReConfig(BaseModel):
    """Everything that shapes a PaCoRe run, apart from the backend.

    ``params`` apply to every parallel round; ``synthesis_params`` (default: the same) to the final one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Schedule = Field(default_factory=lambda: Schedule.parse("low"))
    params: SamplingParams = SamplingParams()
    synthesis_params: SamplingParams | None = None
    compaction: CompactionPolicy = CompactionPolicy()
    template: str = REFERENCE_TEMPLATE

    @property
    def final_params(self) -> SamplingParams:
        """The sampling params of the final synthesis round."""
        return self.synthesis_params or self.params
