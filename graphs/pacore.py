"""``pacore``: the PaCoRe graph (explorer fan-out → compactor, round after round → synthesizer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pacore_graph.clients.base import ChatBackend
from pacore_graph.graph import build_pacore_graph

from .kinds import CompiledGraph, GraphType

if TYPE_CHECKING:
    from .spec import GraphSpec

__all__ = ["PACORE", "build_pacore"]


def build_pacore(spec: GraphSpec, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledGraph:
    """The core PaCoRe graph configured by ``spec``."""
    return build_pacore_graph(backend, config=spec.to_config(), checkpointer=checkpointer, name=spec.name)


PACORE = GraphType(
    name="pacore",
    build=build_pacore,
    description="parallel rounds of explorers, each compacted to references for the next, then one synthesis",
)
