"""How the CLI shows a run: the answer, the round table, and a live progress line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pacore_graph.errors import ConfigError, PaCoReError

if TYPE_CHECKING:
    from pacore_graph.result import PaCoReResult

__all__ = ["error_exit", "print_error", "round_table", "show_result", "write_plain"]


def print_error(console: Console, message: str) -> None:
    """One ``error: ...`` line on ``console``, never wrapped."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def error_exit(console: Console, exc: PaCoReError) -> typer.Exit:
    """Print ``exc`` as one error line; the exit to raise: 2 for misuse (a ConfigError), else 1."""
    print_error(console, str(exc))
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def write_plain(console: Console, text: str) -> None:
    """Write ``text`` (and a newline, unless it ends with one) to the console's stream untouched by rich."""
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


def round_table(result: PaCoReResult) -> Table:
    """One row per round (the last is the final synthesis): K, returned, kept, dropped, tokens, seconds."""
    table = Table(title="rounds", title_justify="left")
    for column in ("round", "K", "returned", "kept", "dropped", "prompt tok", "completion tok", "sec"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rounds:
        table.add_row(
            "final" if row is result.rounds[-1] else str(row.round),
            str(row.k),
            str(row.returned),
            str(row.messages),
            str(row.dropped_empty + row.dropped_truncated),
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            f"{row.seconds:.1f}",
        )
    usage = result.usage
    table.add_section()
    table.add_row("total", "", "", "", "", f"{usage.prompt_tokens:,}", f"{usage.completion_tokens:,}", "")
    return table


def show_result(result: PaCoReResult, console: Console) -> None:
    """Print the answer, then the round table, any tolerated failures, and the effective test-time compute.

    The answer is written as it is, byte for byte (no markup, emoji codes, tab expansion or wrapping), so a
    pipe or file gets exactly the trace's answer, then one newline.
    """
    if result.answer.strip():
        write_plain(console, result.answer)
    else:
        console.print("[yellow](empty answer)[/]")
    console.print()
    console.print(round_table(result))
    for row in result.rounds:
        if row.failed:  # a line, not a column: the table must stay readable on an 80-column terminal
            console.print(
                f"[yellow]round {row.round}: {row.failed} of K={row.k} requests failed after retries "
                "(tolerated by the failure policy; --trace records why)[/]",
                highlight=False,
            )
    console.print(f"effective TTC: {result.usage.effective_ttc_tokens:,} completion tokens")
