"""``pacore trace view|plot``: look at a trace written by ``pacore run --trace``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pacore_graph.cli.render import print_error
from pacore_graph.errors import ConfigError

# The trace model (pydantic, the events) loads when a trace is read, not at `pacore --help`.
if TYPE_CHECKING:
    from pacore_graph.trace import Trace

__all__ = ["load_trace", "trace_app"]

trace_app = typer.Typer(
    name="trace",
    help="Look at a run's trace (written by `pacore run --trace FILE`): an HTML page or a PNG summary.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    print_error(Console(stderr=True, soft_wrap=True), message)
    return typer.Exit(code)


def load_trace(path: Path) -> Trace:
    """Read a trace file, or raise ``ConfigError`` saying what is wrong with it."""
    from pydantic import ValidationError

    from pacore_graph.trace import Trace

    try:
        return Trace.read(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the trace {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is not a pacore trace ({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}); "
            "write one with `pacore run --trace FILE`"
        ) from exc


@trace_app.command("view")
def view(
    trace_file: Annotated[Path, typer.Argument(help="A trace JSON file from `pacore run --trace`.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", show_default=False, help="The HTML file to write (default: the trace's, .html)."),
    ] = None,
) -> None:
    """Write the trace as one self-contained HTML page (no network access needed to open it)."""
    from pacore_graph.viz.html import render_trace_html

    out = out or trace_file.with_suffix(".html")
    try:
        trace = load_trace(trace_file)
        out.write_text(render_trace_html(trace), encoding="utf-8")
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror or exc}") from None
    Console(stderr=True, soft_wrap=True).print(f"wrote {out} ({len(trace.trajectories)} trajectories)", highlight=False)


@trace_app.command("plot")
def plot(
    trace_file: Annotated[Path, typer.Argument(help="A trace JSON file from `pacore run --trace`.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", show_default=False, help="The PNG file to write (default: the trace's, .png)."),
    ] = None,
) -> None:
    """Write a PNG summary: tokens per round and the answers per round (needs the `viz` extra)."""
    from pacore_graph.viz.plot import plot_trace

    out = out or trace_file.with_suffix(".png")
    try:
        plot_trace(load_trace(trace_file), out)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror or exc}") from None
    Console(stderr=True, soft_wrap=True).print(f"wrote {out}", highlight=False)
