"""Where graph specs come from: the YAML files shipped in this package, and installed packages' entry points.

A package adds specs through the ``pacore_graph.graphs`` entry point group. The entry point's name is the
graph's name; its object is a path to a YAML spec (``str``, ``os.PathLike`` or an
``importlib.resources`` file), a mapping of spec fields, a :class:`~pacore_graph.graphs.GraphSpec`, or a
function of no arguments returning one of those::

    [project.entry-points."pacore_graph.graphs"]
    my-graph = "my_package:MY_GRAPH_SPEC"

    # my_package/__init__.py
    MY_GRAPH_SPEC = importlib.resources.files(__package__) / "my-graph.yaml"

Built-in names win: an entry point cannot replace a built-in spec, and ``pacore graphs list`` says so.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from .spec import GraphSpec, GraphSpecError, load_spec_file, parse_spec, parse_spec_text

__all__ = ["GRAPHS_GROUP", "GraphEntry", "discover_graphs", "is_spec_path", "resolve_spec"]

#: Entry point group through which installed packages register graph specs.
GRAPHS_GROUP = "pacore_graph.graphs"


@dataclass(frozen=True)
class GraphEntry:
    """One discovered spec: its name, where it came from, and the spec or why it could not be loaded."""

    name: str
    origin: str
    spec: GraphSpec | None = None
    error: str | None = None


def _builtin_files() -> list[Traversable]:
    package = files(__package__ or "pacore_graph.graphs")
    return sorted((f for f in package.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def _builtin_entries() -> list[GraphEntry]:
    entries = []
    for file in _builtin_files():
        name = file.name.removesuffix(".yaml")
        try:
            spec = parse_spec_text(file.read_text(encoding="utf-8"), source=f"built-in {file.name}", default_name=name)
        except GraphSpecError as exc:
            entries.append(GraphEntry(name, "built-in", error=str(exc)))
            continue
        entries.append(GraphEntry(spec.name, "built-in", spec=spec))
    return entries


def _spec_from_object(obj: Any, *, name: str, source: str) -> GraphSpec:
    """Turn what an entry point names into a spec (see the module docstring for the accepted objects)."""
    if callable(obj) and not isinstance(obj, GraphSpec | Traversable | os.PathLike):
        obj = obj()
    if isinstance(obj, GraphSpec):
        spec = obj
    elif isinstance(obj, Mapping):
        spec = parse_spec({"name": name, **obj}, source=source)
    elif isinstance(obj, str | os.PathLike):
        spec = parse_spec_text(Path(obj).read_text(encoding="utf-8"), source=str(obj), default_name=name)
    elif isinstance(obj, Traversable):
        spec = parse_spec_text(obj.read_text(encoding="utf-8"), source=f"{source}: {obj.name}", default_name=name)
    else:
        raise GraphSpecError(
            f"{source}: names a {type(obj).__name__}; it must name a YAML path, a mapping or a GraphSpec"
        )
    if spec.name != name:
        raise GraphSpecError(f"{source}: the spec is named {spec.name!r}; name the entry point the same")
    return spec


def _entry_point_entry(entry_point: EntryPoint) -> GraphEntry:
    dist = entry_point.dist
    origin = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
    source = f"entry point {entry_point.name!r} ({entry_point.value})"
    try:
        spec = _spec_from_object(entry_point.load(), name=entry_point.name, source=source)
    except GraphSpecError as exc:
        return GraphEntry(entry_point.name, origin, error=str(exc))
    except Exception as exc:  # a plugin's own bug: report it, never break the other graphs
        return GraphEntry(entry_point.name, origin, error=f"{source} failed to load: {exc!r}")
    return GraphEntry(spec.name, origin, spec=spec)


def discover_graphs() -> list[GraphEntry]:
    """Every spec: built-in ones first, then entry points in name order; broken ones carry an ``error``."""
    entries = _builtin_entries()
    taken = {entry.name for entry in entries}
    plugins = sorted(entry_points(group=GRAPHS_GROUP), key=lambda ep: ep.name)
    for entry_point in plugins:
        if entry_point.name in taken:
            entries.append(
                GraphEntry(
                    entry_point.name,
                    entry_point.value,
                    error=f"ignored: the name {entry_point.name!r} is already taken by an earlier graph",
                )
            )
            continue
        taken.add(entry_point.name)
        entries.append(_entry_point_entry(entry_point))
    return entries


def is_spec_path(name_or_path: str | os.PathLike[str]) -> bool:
    """True when the argument is a spec file rather than a graph name: a path, or ending in .yaml/.yml."""
    text = os.fspath(name_or_path)
    return text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text or Path(text).is_file()


def resolve_spec(name_or_path: str | os.PathLike[str]) -> GraphSpec:
    """The spec for a graph name (built-in or registered) or a path to a YAML spec."""
    if is_spec_path(name_or_path):
        return load_spec_file(name_or_path)
    name = os.fspath(name_or_path)
    entries = discover_graphs()
    for entry in entries:
        if entry.name == name and entry.error is None and entry.spec is not None:
            return entry.spec
    for entry in entries:
        if entry.name == name and entry.error is not None:
            raise GraphSpecError(f"graph {name!r} cannot be loaded: {entry.error}")
    names = [entry.name for entry in entries if entry.spec is not None]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise GraphSpecError(
        f"unknown graph {name!r}; available: {', '.join(names)} (see `pacore graphs list`), "
        f"or give a path to a .yaml spec{hint}"
    )
