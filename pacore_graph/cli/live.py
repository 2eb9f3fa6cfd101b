"""How ``pacore run`` shows a run while it happens, from the graph's progress events (stderr only).

* :class:`LiveDisplay` (a terminal): one progress bar per round (trajectories done of K, tokens/s, a tally
  of the answers so far), then the synthesis as it is generated.
* :class:`PlainDisplay` (``--quiet``, or stderr not a terminal): a few plain lines per round
  (:class:`~pacore_graph.progress.RunProgress`, the one home of plain progress lines).

Both do O(1) work per event. The live view renders at most 8 times a second, from a timer on the running
event loop rather than rich's refresh thread (starting a thread per run cost more than all the events), so
it does not slow a run (see ``tests/benchmarks/bench_live_display.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.text import Text

from pacore_graph.events import (
    PaCoReEvent,
    RoundCompacted,
    RoundStarted,
    RunFinished,
    SynthesisDelta,
    TrajectoryFinished,
)
from pacore_graph.progress import ProgressLines, RoundTally, RunProgress, tally

__all__ = ["LiveDisplay", "PlainDisplay", "RunDisplay", "make_display"]

#: How many lines of the streamed synthesis stay on screen.
SYNTHESIS_TAIL_LINES = 8
#: Seconds between two frames of the live view.
FRAME_SECONDS = 1 / 8


class RunDisplay(Protocol):
    """Something that shows a run: it is told every event, and closed at the end (also on failure)."""

    def handle(self, event: PaCoReEvent) -> None:
        """Show one event."""
        ...

    def close(self) -> None:
        """Stop showing (leave the final state on screen)."""
        ...


class _Tail:
    """The last lines of the synthesis so far, joined only when rich renders (a few times a second)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.thinking = 0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = "".join(self.pieces)
        lines = text.splitlines()[-SYNTHESIS_TAIL_LINES:] if text else []
        body = Text("\n".join(lines)) if lines else Text(f"thinking… ({self.thinking:,} chars)", style="dim")
        yield Panel(body, title="final synthesis", title_align="left", border_style="cyan")


class LiveDisplay:
    """The live terminal view (see the module docstring)."""

    def __init__(self, console: Console, rounds: int) -> None:
        self.rounds = rounds
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[cyan]{task.fields[tally]}"),
            console=console,
        )
        self._tail = _Tail()
        self._counters: dict[int, RoundTally] = {}
        self._tasks: dict[int, TaskID] = {}
        self._parts: list[Progress | _Tail] = [self._progress]
        # No stdout/stderr redirection: stdout belongs to the result (`--json` must stay one object).
        self._live = Live(
            Group(*self._parts),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        self._closed = False
        self._last_frame = 0.0
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # used from synchronous code: frames are drawn from handle() only
            self._loop = None
        else:  # the first frame comes after a frame's time: a run that ends sooner draws only its final frame
            self._timer = self._loop.call_later(FRAME_SECONDS, self._tick)

    def _tick(self) -> None:
        """Draw a frame (the spinner and rates move even when no event comes), then schedule the next."""
        if self._closed:
            return
        self._frame()
        if self._loop is not None:
            self._timer = self._loop.call_later(FRAME_SECONDS, self._tick)

    def _frame(self) -> None:
        self._last_frame = time.perf_counter()
        self._live.refresh()

    def handle(self, event: PaCoReEvent) -> None:
        """Update the bars (or the synthesis panel) for one event."""
        if isinstance(event, RoundStarted):
            label = "final synthesis" if event.final else f"round {event.round}/{self.rounds}"
            self._counters[event.round] = RoundTally(event.k)
            self._tasks[event.round] = self._progress.add_task(label, total=event.k, rate="", tally="")
            if event.final:
                self._live.update(Group(self._progress, self._tail))
        elif isinstance(event, TrajectoryFinished):
            counter = self._counters.get(event.round)
            if counter is None:
                return
            counter.add(event)
            self._progress.update(
                self._tasks[event.round],
                completed=counter.done,
                rate=f"{counter.rate:,.0f} tok/s",
                tally=tally(counter.answers),
            )
        elif isinstance(event, RoundCompacted):
            task = self._tasks.get(event.round)
            if task is not None:
                dropped = event.dropped_empty + event.dropped_truncated
                label = f"round {event.round}/{self.rounds} [dim](kept {event.kept}, dropped {dropped})[/]"
                self._progress.update(task, description=label)
        elif isinstance(event, SynthesisDelta):
            if event.content:
                self._tail.pieces.append(event.content)
            self._tail.thinking += len(event.reasoning)
        elif isinstance(event, RunFinished):
            self.close()
            return
        if self._loop is None and time.perf_counter() - self._last_frame >= FRAME_SECONDS:
            self._frame()

    def close(self) -> None:
        """Stop the live view, leaving its last frame."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._live.stop()  # draws the final frame


class PlainDisplay(RunProgress):
    """Plain progress lines (``--quiet``, or stderr is not a terminal): :class:`~pacore_graph.progress.RunProgress`
    written straight to the console's stream (plain lines need none of rich's rendering, which costs per call)."""

    def __init__(self, console: Console, rounds: int) -> None:
        super().__init__(ProgressLines(stream=console.file), rounds)
        self.console = console


def make_display(console: Console, rounds: int, *, quiet: bool = False) -> RunDisplay:
    """The live view on a terminal, plain lines otherwise (or with ``quiet``)."""
    if quiet or not console.is_terminal:
        return PlainDisplay(console, rounds)
    return LiveDisplay(console, rounds)
