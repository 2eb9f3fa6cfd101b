"""``self-consistency``: K independent samples, a majority vote over their extracted answers, no synthesis.

::

    START → prepare → plan → explorers (K explore tasks) → vote → END
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.graph import END, StateGraph

from pacore_graph.clients.base import ChatBackend
from pacore_graph.graph import add_first_round, compile_graph, on_the_loop
from pacore_graph.nodes import PaCoReNodes
from pacore_graph.state import PaCoReContext, PaCoReInput, PaCoReState, VoteOutput

from .kinds import CompiledGraph, GraphType
from .spec import SpecRuleError

if TYPE_CHECKING:
    from .spec import GraphSpec

__all__ = ["SELF_CONSISTENCY", "build_self_consistency"]


def build_self_consistency(spec: GraphSpec, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledGraph:
    """Sample K answers to the original problem and return the majority answer with the tally (``votes``)."""
    nodes = PaCoReNodes(backend, spec.to_config())
    graph = StateGraph(PaCoReState, context_schema=PaCoReContext, input_schema=PaCoReInput, output_schema=VoteOutput)
    add_first_round(graph, nodes)
    graph.add_node("vote", on_the_loop(nodes.vote))
    graph.add_edge("explorers", "vote")
    graph.add_edge("vote", END)
    return compile_graph(graph, checkpointer=checkpointer, name=spec.name)


def _one_round_no_synthesis(spec: GraphSpec) -> None:
    if len(spec.schedule.rounds) != 1:
        raise SpecRuleError(
            "schedule",
            f"self-consistency samples K answers in one round, got {len(spec.schedule.rounds)} rounds "
            f"{list(spec.schedule.rounds)}; use a single K such as [16]",
        )
    if spec.synthesis_params is not None:
        raise SpecRuleError("synthesis_sampling", "self-consistency makes no synthesis call; remove it")
    if spec.response_format is not None and spec.response_format.constrains:
        raise SpecRuleError(
            "response_format",
            "self-consistency votes on extracted answers and makes no synthesis call, so it cannot give a "
            "structured answer; use a pacore graph (e.g. pacore-low) for response_format",
        )


SELF_CONSISTENCY = GraphType(
    name="self-consistency",
    build=build_self_consistency,
    check=_one_round_no_synthesis,
    description="K independent samples, majority vote over the extracted answers, no synthesis call",
)
