"""Graph types: the Python builders a spec's ``type`` names.

A graph type is a :class:`GraphType`: a name, a ``build(spec, backend, checkpointer=...)`` function that
assembles a compiled LangGraph graph from the core's nodes, and an optional ``check(spec)`` for rules only
that type has (e.g. self-consistency runs exactly one round). Built-in types live one per module in this
package; other installed packages add theirs through the ``pacore_graph.graph_types`` entry point group,
each entry point naming a ``GraphType`` object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from langgraph.graph.state import CompiledStateGraph

from pacore_graph.clients.base import ChatBackend

if TYPE_CHECKING:
    from .spec import GraphSpec

__all__ = ["GRAPH_TYPES_GROUP", "GraphBuilder", "GraphType", "discover_graph_types", "graph_types"]

#: Entry point group through which installed packages add graph types.
GRAPH_TYPES_GROUP = "pacore_graph.graph_types"

CompiledGraph = CompiledStateGraph[Any, Any, Any, Any]


class GraphBuilder(Protocol):
    """Builds a compiled graph for ``spec`` over ``backend``."""

    def __call__(self, spec: GraphSpec, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledGraph: ...


@dataclass(frozen=True)
class GraphType:
    """A named way to assemble a reasoning graph; a spec's ``type`` field picks one.

    ``check`` raises :class:`~pacore_graph.graphs.SpecRuleError` (field, one-line reason) when a spec is
    valid in general but not for this type; it is reported with the spec's file and that field.
    ``executes_code``: the graph runs model-written code (in the sandbox); servers do not serve such graphs
    unless their operator allows it (``pacore serve --allow-code-execution``).
    """

    name: str
    build: GraphBuilder
    description: str
    check: Callable[[GraphSpec], None] | None = None
    executes_code: bool = False


def _builtin_types() -> list[GraphType]:
    # Imported here: the builder modules import the core graph machinery, which spec validation does not need.
    from .code_verified import CODE_VERIFIED
    from .pacore import PACORE
    from .self_consistency import SELF_CONSISTENCY
    from .sequential import SEQUENTIAL

    return [PACORE, SELF_CONSISTENCY, SEQUENTIAL, CODE_VERIFIED]


def graph_types() -> dict[str, GraphType]:
    """Every graph type: the built-in ones, then those installed packages register (built-ins win a clash)."""
    return discover_graph_types()[0]


def discover_graph_types() -> tuple[dict[str, GraphType], list[str]]:
    """The graph types, and one line per entry point that could not be used.

    A broken plugin is skipped rather than raised, so it cannot break every spec; ``pacore graphs list``
    prints the problems.
    """
    types = {kind.name: kind for kind in _builtin_types()}
    problems: list[str] = []
    for entry_point in entry_points(group=GRAPH_TYPES_GROUP):
        where = f"graph type entry point {entry_point.name!r} ({entry_point.value})"
        try:
            kind = entry_point.load()
        except Exception as exc:
            problems.append(f"{where} failed to load: {exc!r}")
            continue
        if not isinstance(kind, GraphType):
            problems.append(f"{where} is a {type(kind).__name__}, not a pacore_graph.graphs.GraphType")
        elif kind.name in types:
            problems.append(f"{where} is ignored: graph type {kind.name!r} already exists")
        else:
            types[kind.name] = kind
    return types, problems
