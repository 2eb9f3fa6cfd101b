"""``pacore graphs list|show``, and how ``pacore run --graph`` turns a name or a spec file into a graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from pacore_graph.cli.render import error_exit
from pacore_graph.errors import ConfigError, PaCoReError
from pacore_graph.schedule import DEFAULT_MAX_K, DEFAULT_MAX_ROUNDS

# The graphs (LangGraph, LangChain) load inside the commands, so `pacore --help` does not pay for them.
if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, SamplingParams
    from pacore_graph.config import PaCoReConfig
    from pacore_graph.graphs import GraphSpec
    from pacore_graph.overrides import Overrides

__all__ = ["RunGraph", "given_options", "graphs_app", "resolve_run_graph"]

graphs_app = typer.Typer(
    name="graphs",
    help="List and show the reasoning graphs: built-in specs and those installed packages register.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(exc: PaCoReError, debug: bool) -> typer.Exit:
    """Print a one-line error (no markup, so brackets in the message survive) and pick the exit code."""
    if debug:
        raise exc
    return error_exit(Console(stderr=True, soft_wrap=True), exc)


@graphs_app.command("list")
def list_graphs() -> None:
    """Show every graph: built-in specs, then specs registered through the 'pacore_graph.graphs' entry point."""
    from rich import box
    from rich.table import Table

    from pacore_graph.graphs import discover_graph_types, discover_graphs

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("schedule", no_wrap=True)
    table.add_column("description (source)", ratio=1)
    for entry in discover_graphs():
        source = "" if entry.origin == "built-in" else f" (from {entry.origin})"
        if entry.spec is None:
            table.add_row(entry.name, "", "", Text(f"error: {entry.error}{source}", style="red"))
            continue
        spec = entry.spec
        table.add_row(spec.name, spec.type, str(list(spec.schedule.rounds)), f"{spec.description}{source}")
    Console(soft_wrap=True).print(table)
    _, problems = discover_graph_types()
    for problem in problems:
        Console(stderr=True, soft_wrap=True).print(Text.assemble(("warning:", "yellow"), " ", problem), soft_wrap=True)


@graphs_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A graph name (see `pacore graphs list`) or a path to a spec .yaml.")],
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Print the resolved spec of NAME as YAML (defaults filled in); save it to start your own graph."""
    from pacore_graph.graphs import dump_spec, load_spec

    try:
        text = dump_spec(load_spec(name))
    except PaCoReError as exc:
        raise _fail(exc, debug) from None
    typer.echo(text, nl=False)


class _NoBackend:
    """Builds a graph for drawing: it is never run, so any call is a bug."""

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        raise AssertionError("a graph built for drawing must not be run")


@graphs_app.command("draw")
def draw(
    name: Annotated[str, typer.Argument(help="A graph name (see `pacore graphs list`) or a path to a spec .yaml.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="graph.mmd (Mermaid text) or graph.png (needs the viz extra); default: Mermaid on standard output.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Draw the topology of NAME: Mermaid text, or a PNG rendered locally (no web service)."""
    from pacore_graph.graphs import build_graph, load_spec
    from pacore_graph.viz.plot import draw_graph_png

    try:
        spec = load_spec(name)
        topology = build_graph(spec, _NoBackend()).get_graph()
        ks = _round_ks(topology.nodes, list(spec.schedule.rounds))
        for node_id, k in ks.items():  # Mermaid shows a node's metadata under its name
            topology.nodes[node_id] = topology.nodes[node_id]._replace(metadata={"K": k})
        if out is None or out.suffix.lower() in (".mmd", ".mermaid", ".md"):
            text = topology.draw_mermaid()
            if out is None:
                typer.echo(text, nl=False)
                return
            out.write_text(text, encoding="utf-8")
        elif out.suffix.lower() == ".png":
            edges = [(e.source, e.target, bool(e.conditional)) for e in topology.edges]
            labels = {node_id: f"{node_id}\nK = {k}" for node_id, k in ks.items()}
            title = f"{spec.name} ({spec.type}), schedule {list(spec.schedule.rounds)}"
            draw_graph_png(list(topology.nodes), edges, out, title=title, labels=labels)
        else:
            raise ConfigError(f"cannot draw to {out.name!r}: use a .mmd (Mermaid) or .png file name")
    except PaCoReError as exc:
        raise _fail(exc, debug) from None
    except OSError as exc:
        raise _fail(ConfigError(f"cannot write {out}: {exc.strerror or exc}"), debug) from None
    Console(stderr=True, soft_wrap=True).print(f"wrote {out}", highlight=False)


def _round_ks(nodes: Mapping[str, object], schedule: list[int]) -> dict[str, str]:
    """What to write under the round nodes: each parallel round's K on ``explorers`` ("32 then 4": round 1, then
    round 2), and K = 1 on ``synthesize``."""
    ks = {}
    if "explorers" in nodes:
        ks["explorers"] = " then ".join(str(k) for k in schedule)
    if "synthesize" in nodes:
        ks["synthesize"] = "1"
    return ks


@dataclass(frozen=True)
class RunGraph:
    """The graph ``pacore run`` will run: its resolved spec and the core config it gives."""

    spec: GraphSpec
    config: PaCoReConfig

    def build(self, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledStateGraph[Any, Any, Any, Any]:
        """Compile the graph over ``backend`` (with ``checkpointer`` for durable runs)."""
        from pacore_graph.graphs import build_graph

        return build_graph(self.spec, backend, checkpointer=checkpointer)


def given_options(ctx: typer.Context, *names: str) -> set[str]:
    """The options among ``names`` the user set (command line or environment), not left at their defaults."""
    # Compared by name: typer vendors click, so its ParameterSource enum is not a public import.
    sources = {name: ctx.get_parameter_source(name) for name in names}
    return {name for name, source in sources.items() if source is not None and source.name != "DEFAULT"}


def resolve_run_graph(
    graph: str | None,
    overrides: Overrides | Mapping[str, Any] | None = None,
    *,
    max_k: int = DEFAULT_MAX_K,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> RunGraph:
    """The spec ``--graph`` names (default ``pacore-low``), with the options the user actually gave on top.

    ``overrides`` go through the spec's ``with_overrides`` (sampling options apply to every round, per-round
    settings of the spec included). The schedule must stay within ``max_k`` and ``max_rounds``.
    """
    from pacore_graph.graphs import DEFAULT_GRAPH, load_spec

    spec = load_spec(graph or DEFAULT_GRAPH).with_overrides(overrides)
    spec.schedule.check_limits(max_k=max_k, max_rounds=max_rounds)
    return RunGraph(spec=spec, config=spec.to_config())
