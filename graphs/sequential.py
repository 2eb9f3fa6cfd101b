"""``sequential``: PaCoRe with K = 1 in every round, each round seeing only the previous conclusion.

The paper's Fig. 4 ablation: at an equal number of trajectories, a parallel [N] beats a sequential [1, ..., 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .kinds import GraphType
from .pacore import build_pacore
from .spec import SpecRuleError

if TYPE_CHECKING:
    from .spec import GraphSpec

__all__ = ["SEQUENTIAL"]


def _every_round_is_one(spec: GraphSpec) -> None:
    if any(k != 1 for k in spec.schedule.rounds):
        raise SpecRuleError(
            "schedule",
            f"a sequential graph runs K=1 in every round, got {list(spec.schedule.rounds)}; "
            "use a schedule such as [1, 1, 1], or type pacore for parallel rounds",
        )


SEQUENTIAL = GraphType(
    name="sequential",
    build=build_pacore,
    check=_every_round_is_one,
    description="one trajectory per round, each refining the previous conclusion (ablation)",
)
