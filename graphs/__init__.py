"""Reasoning graphs built from pacore-graph's core parts (installed as ``pacore_graph.graphs``).

A graph is declared by a YAML spec (a graph type, a schedule, sampling, the prompt, compaction) and built by
the Python builder its ``type`` names. Built-in specs ship with the package:

================================  =================  ==========================================================
name                              type               what it runs
================================  =================  ==========================================================
``pacore-low``                    pacore             [4], then one synthesis
``pacore-medium``                 pacore             [16], then one synthesis
``pacore-high``                   pacore             [32, 4], then one synthesis
``self-consistency``              self-consistency   K samples, majority vote of the extracted answers
``sequential``                    sequential         [1, 1, 1, 1]: each round sees only the previous conclusion
``pacore-no-compaction``          pacore             [4] passing full trajectories, within a prompt budget
================================  =================  ==========================================================

::

    from pacore_graph.graphs import load_graph

    graph = load_graph("pacore-high", backend)            # or load_graph("my-spec.yaml", backend)
    state = await graph.ainvoke({"problem": "What is 17 * 23?"})

Other packages add specs through the ``pacore_graph.graphs`` entry point group and graph types through
``pacore_graph.graph_types`` (see :mod:`pacore_graph.graphs.registry` and :mod:`pacore_graph.graphs.kinds`).
"""

from __future__ import annotations

import os
from typing import Any

from pacore_graph.clients.base import ChatBackend
from pacore_graph.schedule import Schedule

from .kinds import GRAPH_TYPES_GROUP, CompiledGraph, GraphType, discover_graph_types, graph_types
from .registry import GRAPHS_GROUP, GraphEntry, discover_graphs, is_spec_path, resolve_spec
from .spec import (
    OFFICIAL_TEMPLATE,
    GraphSpec,
    GraphSpecError,
    PromptSpec,
    SpecRuleError,
    dump_spec,
    load_spec_file,
    parse_spec,
    parse_spec_text,
)

__all__ = [
    "DEFAULT_GRAPH",
    "GRAPHS_GROUP",
    "GRAPH_TYPES_GROUP",
    "OFFICIAL_TEMPLATE",
    "GraphEntry",
    "GraphSpec",
    "GraphSpecError",
    "GraphType",
    "PromptSpec",
    "SpecRuleError",
    "build_graph",
    "discover_graph_types",
    "discover_graphs",
    "dump_spec",
    "graph_types",
    "is_spec_path",
    "load_graph",
    "load_spec",
    "load_spec_file",
    "parse_spec",
    "parse_spec_text",
]

#: The graph ``pacore run`` uses when no ``--graph`` is given.
DEFAULT_GRAPH = "pacore-low"


def load_spec(name_or_path: str | os.PathLike[str], *, schedule: Schedule | str | list[int] | None = None) -> GraphSpec:
    """The resolved spec for a graph name or a YAML path, with ``schedule`` replacing the spec's if given."""
    spec = resolve_spec(name_or_path)
    if schedule is not None:
        spec = spec.with_overrides(schedule=Schedule.parse(schedule))
    return spec


def build_graph(spec: GraphSpec, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledGraph:
    """Build the compiled LangGraph graph ``spec`` describes, over ``backend``."""
    return graph_types()[spec.type].build(spec, backend, checkpointer=checkpointer)


def load_graph(
    name_or_path: str | os.PathLike[str] | GraphSpec,
    backend: ChatBackend,
    *,
    schedule: Schedule | str | list[int] | None = None,
    checkpointer: Any = None,
) -> CompiledGraph:
    """Build a graph by name (``"pacore-high"``), from a YAML path, or from a :class:`GraphSpec`.

    Input ``{"problem": str}`` or ``{"messages": [...]}``; output ``{"answer", "finish_reason", "usage"}``
    (voting graphs add ``votes``). ``schedule`` overrides the spec's. Raises :class:`GraphSpecError` (a
    :class:`~pacore_graph.ConfigError`) for an unknown name or a malformed spec.
    """
    if isinstance(name_or_path, GraphSpec):
        spec = name_or_path
        if schedule is not None:
            spec = spec.with_overrides(schedule=Schedule.parse(schedule))
    else:
        spec = load_spec(name_or_path, schedule=schedule)
    return build_graph(spec, backend, checkpointer=checkpointer)
