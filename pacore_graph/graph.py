"""``build_pacore_graph``: PaCoRe as a compiled LangGraph ``StateGraph``.

::

    START → prepare → plan ─┬─ (round r ≤ R) → explorers (K_r explore tasks) → compact → plan ...
                            └─ (after round R) → synthesize → END

The graphs take LangGraph's conventions: per-run settings as the runtime context (``context_schema`` is
:class:`~pacore_graph.state.PaCoReContext`), the answer streamed in ``stream_mode="messages"``, and sync
``invoke``/``stream`` (see :mod:`pacore_graph.bridge`); :func:`compile_graph` gives any graph built from the
core's nodes the last one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from pacore_graph.bridge import bridge_sync
from pacore_graph.clients.base import ChatBackend, SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.config import PaCoReConfig
from pacore_graph.nodes import PaCoReNodes
from pacore_graph.prompts import REFERENCE_TEMPLATE
from pacore_graph.schedule import Schedule
from pacore_graph.state import PaCoReContext, PaCoReInput, PaCoReOutput, PaCoReState

__all__ = ["add_first_round", "add_round_loop", "build_pacore_graph", "compile_graph", "on_the_loop"]

T = TypeVar("T")


def on_the_loop(function: Callable[[PaCoReState], T]) -> Callable[..., Awaitable[T]]:
    """``function`` (a sync node or router of the state alone) as a coroutine function, run on the event loop.

    LangGraph runs a sync node of an async run in a worker thread. The core's sync nodes take microseconds, so
    that thread hop (about 1 ms, several on a busy machine) was most of their cost, paid at every round barrier
    of every problem while the server's batch waits for the next round's requests.
    """

    @functools.wraps(function)
    async def on_loop(state: PaCoReState) -> T:
        return function(state)

    return on_loop


def compile_graph(
    graph: StateGraph[Any, Any, Any, Any], *, checkpointer: Any = None, name: str
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile a graph built from the core's nodes, with a working sync ``invoke``/``stream``."""
    return bridge_sync(graph.compile(checkpointer=checkpointer, name=name))


def add_first_round(
    graph: StateGraph[Any, Any, Any, Any], nodes: PaCoReNodes, *, prepare: Callable[..., Any] | None = None
) -> None:
    """Add ``START → prepare → plan → explorers`` to ``graph``: one round of K explorers on the problem.

    A graph of one parallel round (self-consistency, a custom picker) adds its own node after ``explorers``.
    """
    graph.add_node("prepare", prepare or on_the_loop(nodes.prepare))
    graph.add_node("plan", nodes.plan)
    graph.add_node("explorers", nodes.explorers)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "plan")
    # A one-round schedule: always the explorers.
    graph.add_conditional_edges("plan", on_the_loop(nodes.route), ["explorers"])


def add_round_loop(
    graph: StateGraph[Any, Any, Any, Any],
    nodes: PaCoReNodes,
    *,
    prepare: Callable[..., Any] | None = None,
    compact: Callable[..., Any] | None = None,
) -> None:
    """Add PaCoRe's rounds to ``graph``: ``START → prepare → (plan → explorers → compact)* → plan → synthesize``.

    ``prepare`` and ``compact`` replace the core nodes of those names (a graph that verifies or filters
    trajectories); the caller adds the edge out of ``synthesize``.
    """
    graph.add_node("prepare", prepare or on_the_loop(nodes.prepare))
    graph.add_node("plan", nodes.plan)
    graph.add_node("explorers", nodes.explorers)
    graph.add_node("compact", compact or on_the_loop(nodes.compact))
    graph.add_node("synthesize", nodes.synthesize)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "plan")
    graph.add_conditional_edges("plan", on_the_loop(nodes.route), ["explorers", "synthesize"])
    graph.add_edge("explorers", "compact")
    graph.add_edge("compact", "plan")


def build_pacore_graph(
    backend: ChatBackend,
    schedule: Schedule | str | list[int] | int = "low",
    *,
    params: SamplingParams | None = None,
    synthesis_params: SamplingParams | None = None,
    compaction: CompactionPolicy | None = None,
    template: str = REFERENCE_TEMPLATE,
    config: PaCoReConfig | None = None,
    checkpointer: Any = None,
    name: str = "pacore",
) -> CompiledStateGraph[PaCoReState, None, PaCoReInput, PaCoReOutput]:
    """Build the PaCoRe graph over ``backend``.

    Input ``{"problem": str}`` or ``{"messages": [...]}``; output ``{"answer", "finish_reason", "usage"}``, and
    ``messages`` with the answer appended when the input was ``messages`` (see :mod:`pacore_graph.state`).
    Pass ``config`` to set everything at once, or the individual keyword arguments; a run's ``context``
    (:class:`~pacore_graph.state.PaCoReContext`) overrides them for that run. The result works standalone
    (``ainvoke``, ``astream``, ``invoke``, ``stream``) and as a node of a parent graph that shares the
    ``problem``/``answer`` keys or a ``MessagesState`` parent's ``messages``.
    """
    if config is None:
        config = PaCoReConfig(
            schedule=Schedule.parse(schedule),
            params=params or SamplingParams(),
            synthesis_params=synthesis_params,
            compaction=compaction or CompactionPolicy(),
            template=template,
        )
    nodes = PaCoReNodes(backend, config)
    graph = StateGraph(PaCoReState, context_schema=PaCoReContext, input_schema=PaCoReInput, output_schema=PaCoReOutput)
    add_round_loop(graph, nodes)
    graph.add_edge("synthesize", END)
    compiled: CompiledStateGraph[PaCoReState, None, PaCoReInput, PaCoReOutput] = compile_graph(
        graph, checkpointer=checkpointer, name=name
    )
    return compiled
