"""Plain progress lines: what long work prints when nobody watches a terminal (logs, CI, ``| tee``).

One home for every plain progress line: ``pacore run --quiet`` (and ``pacore run`` off a terminal), ``pacore
eval``, the embedded engine's start-up and the examples use it, and so can any long job::

    lines = ProgressLines("pacore eval")
    lines.line("20 runs to do")                 # printed now (unless within start_after)
    lines.update(f"{done}/20 runs done")        # at most one every ``min_interval`` seconds; the last one is
    lines.close()                               # ...printed by close() if it was held back
    lines.heartbeat("still starting (12 s)")    # printed only when nothing was for ``heartbeat`` seconds
    engine = LocalEngine(progress=lines.phases())  # a line per phase, then one every 5 s while it lasts

:class:`RunProgress` turns a graph run's events (:mod:`pacore_graph.events`) into such lines, a few per round;
pass it as ``run_graph(..., progress=RunProgress())``. Lines go to standard error, flushed at once, without
colours or wrapping, each starting with its label and the seconds since the ProgressLines was made.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import IO

from pacore_graph.events import PaCoReEvent, RoundCompacted, RoundStarted, RunFinished, TrajectoryFinished

__all__ = ["ProgressLines", "RoundTally", "RunProgress", "tally"]


class ProgressLines:
    """Plain, rate-limited progress lines to a stream (standard error by default); see the module docstring.

    Args:
        label: put in brackets at the start of each line, with the seconds elapsed (``[pacore eval 12 s]``);
            ``None`` writes the text alone.
        stream: where the lines go (default: ``sys.stderr`` at the time of each line).
        min_interval: the least time between two :meth:`update` lines (``line`` is never held back).
        heartbeat: the quiet time after which :meth:`heartbeat` prints.
        start_after: seconds during which nothing is written (only the latest line is kept, for the first line
            after them): work that is over by then (a short eval, an error at once) prints nothing extra.
    """

    def __init__(
        self,
        label: str | None = None,
        *,
        stream: IO[str] | None = None,
        min_interval: float = 0.5,
        heartbeat: float = 5.0,
        start_after: float = 0.0,
    ) -> None:
        self.label = label
        self.stream = stream
        self.min_interval = min_interval
        self.heartbeat_interval = heartbeat
        self.start_after = start_after
        self._started = time.monotonic()
        self._last = float("-inf")  # when the last line was written
        self._held: str | None = None  # the latest update() held back by the rate limit

    def _write(self, text: str) -> None:
        now = time.monotonic()
        if now - self._started < self.start_after:
            self._held = text  # too early: kept, and written by the first update() after the grace
            return
        self._last = now
        self._held = None
        prefix = f"[{self.label} {now - self._started:.0f} s] " if self.label else ""
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"{prefix}{text}\n")
        stream.flush()

    def line(self, text: str) -> None:
        """Write a line now (a step started or finished: never held back)."""
        self._write(text)

    def update(self, text: str) -> None:
        """Write a line unless one was written less than ``min_interval`` ago (then :meth:`close` writes the last)."""
        if time.monotonic() - self._last >= self.min_interval:
            self._write(text)
        else:
            self._held = text

    def heartbeat(self, text: str) -> None:
        """Write a line only if nothing was written for ``heartbeat`` seconds (a sign of life while waiting)."""
        if time.monotonic() - self._last >= self.heartbeat_interval:
            self._write(text)

    def phases(self, every: float = 5.0) -> Callable[[str, float], None]:
        """A ``(phase, elapsed seconds)`` callback (the engine's :data:`~pacore_graph.engine.ProgressCallback`):
        a line when the phase changes, then one every ``every`` seconds while it lasts."""
        current: list[str] = []
        last = [float("-inf")]

        def report(phase: str, elapsed: float) -> None:
            now = time.monotonic()
            if current != [phase]:
                current[:] = [phase]
                self.line(f"{phase}…")
            elif now - last[0] >= every:
                self.line(f"{phase}: {elapsed:.0f} s so far")
            else:
                return
            last[0] = now

        return report

    def close(self) -> None:
        """Write the last held-back update, if any (not within ``start_after``)."""
        if self._held is not None and time.monotonic() - self._started >= self.start_after:
            self._write(self._held)


def tally(answers: Counter[str], width: int = 3) -> str:
    """The most common answers so far, ``391×3 · 390×1 · +2``."""
    top = answers.most_common(width)
    text = " · ".join(f"{a if len(a) <= 16 else a[:15] + '…'}×{n}" for a, n in top)
    rest = sum(answers.values()) - sum(n for _, n in top)
    return f"{text} · +{rest}" if rest else text


class RoundTally:
    """The running numbers of one round: trajectories back of K, completion tokens, tokens/s, answers."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.done = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self.answers: Counter[str] = Counter()

    def add(self, event: TrajectoryFinished) -> None:
        """Count one finished trajectory."""
        self.done += 1
        self.tokens += event.completion_tokens
        if event.answer is not None:
            self.answers[event.answer] += 1

    @property
    def rate(self) -> float:
        """Completion tokens per second since the round started."""
        elapsed = time.perf_counter() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0


class RunProgress:
    """A graph run's events as plain lines: when a round starts, when its K trajectories are all back, when it
    is compacted, and when the run ends (O(1) work per event).

    Call it with each event (``run_graph(graph, inputs, progress=RunProgress())``). ``rounds`` (the parallel
    rounds, if known) makes round labels read ``round 1/2``. Events of subgraphs (a ``namespace``) count too.
    Made inside a running event loop, it also checks every ``tick`` seconds and, when the lines have been quiet
    for their ``heartbeat`` (a long round), writes how far the current round is; it stops at the run's end or
    at :meth:`close`.
    """

    def __init__(self, lines: ProgressLines | None = None, rounds: int | None = None, *, tick: float = 1.0) -> None:
        self.lines = lines if lines is not None else ProgressLines("pacore")
        self.rounds = rounds
        self._rounds: dict[tuple[tuple[str, ...], int], RoundTally] = {}
        self._current: tuple[str, RoundTally] | None = None  # the round started last, for the heartbeat
        self._tick = tick
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # synchronous use: lines come from events only
            self._loop = None
        else:
            self._timer = self._loop.call_later(tick, self._beat)

    def _beat(self) -> None:
        if self._current is not None:
            what, counter = self._current
            elapsed = time.perf_counter() - counter.started
            self.lines.heartbeat(f"{what}: {counter.done}/{counter.k} done, {elapsed:.0f} s so far")
        if self._loop is not None and self._timer is not None:
            self._timer = self._loop.call_later(self._tick, self._beat)

    def close(self) -> None:
        """Stop the heartbeat (idempotent; the run's end stops it too)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _name(self, round_number: int) -> str:
        return f"round {round_number}/{self.rounds}" if self.rounds else f"round {round_number}"

    def __call__(self, event: PaCoReEvent) -> None:
        """Show one event (see :meth:`handle`)."""
        self.handle(event)

    def handle(self, event: PaCoReEvent) -> None:
        """Write the event's line, if it makes one."""
        key = (event.namespace, getattr(event, "round", 0))
        if isinstance(event, RoundStarted):
            self._rounds[key] = RoundTally(event.k)
            self._current = ("final synthesis" if event.final else self._name(event.round), self._rounds[key])
            what = "final synthesis" if event.final else f"{self._name(event.round)}: K={event.k},"
            budget = f", max_tokens {event.max_tokens:,}" if event.max_tokens is not None else ""
            self.lines.line(f"{what} prompt {event.prompt_chars:,} chars{budget}")
        elif isinstance(event, TrajectoryFinished):
            counter = self._rounds.get(key)
            if counter is None:
                return
            counter.add(event)
            if counter.done == counter.k:
                what = "final synthesis" if event.final else self._name(event.round)
                answers = f", answers {tally(counter.answers)}" if counter.answers else ""
                self.lines.line(
                    f"{what}: {counter.done}/{counter.k} done, {counter.tokens:,} tok, "
                    f"{counter.rate:,.0f} tok/s{answers}"
                )
        elif isinstance(event, RoundCompacted):
            self.lines.line(
                f"{self._name(event.round)}: kept {event.kept} of {event.returned} "
                f"({event.dropped_empty} empty, {event.dropped_truncated} truncated dropped); "
                f"next prompt {event.next_prompt_chars:,} chars"
            )
        elif isinstance(event, RunFinished):
            self.lines.line(f"done: {event.usage.get('effective_ttc_tokens', 0):,} completion tokens in all")
            if not event.namespace:
                self.close()
