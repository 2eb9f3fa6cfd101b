"""Does the live display slow a run? A [64] run against a zero-latency fake server, with and without it.

Not a test (timings vary by machine): run it by hand and read the ratio::

    .venv/bin/python tests/benchmarks/bench_live_display.py [--repeats 40] [--k 64]

Each repetition runs the same `pacore run` code path (``pacore_graph.cli.main._run``) three ways, in turn so
that drift hits all alike: with no display, with the live display drawing to a terminal (rich writes to a
null device, rendering included), and with the plain-line display. It prints the median seconds of each and
the ratios to "no display"; the goal is live / none ≤ 1.10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from rich.console import Console

import pacore_graph.cli.main as cli_main
from pacore_graph import Schedule
from pacore_graph.cli.graphs import resolve_run_graph
from pacore_graph.cli.live import LiveDisplay, PlainDisplay
from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.events import PaCoReEvent, RoundStarted, TrajectoryFinished
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest


class NoDisplay:
    """The baseline: events are read from the stream but shown nowhere."""

    def handle(self, event: PaCoReEvent) -> None:
        pass

    def close(self) -> None:
        pass


def script(request: FakeRequest) -> FakeReply:
    i = request.index
    return FakeReply(content=f"<think>work {i}</think>The answer is \\boxed{{{391 if i % 5 else 381}}}.")


async def one_run(kind: str, client: VLLMClient, k: int, null: Any) -> float:
    run_graph = resolve_run_graph("pacore-low", schedule=Schedule.parse([k]))
    console = Console(file=null, force_terminal=True, width=120)
    displays = {
        "none": lambda c, rounds, quiet=False: NoDisplay(),
        "live": lambda c, rounds, quiet=False: LiveDisplay(c, rounds),
        "plain": lambda c, rounds, quiet=False: PlainDisplay(c, rounds),
    }
    cli_main.make_display = displays[kind]  # type: ignore[assignment]  # the one seam between the three runs
    started = time.perf_counter()
    result = await cli_main._run("What is 17 * 23?", run_graph, client, console)
    elapsed = time.perf_counter() - started
    assert result.rounds[0].returned == k
    return elapsed


async def bench(k: int, repeats: int, null: Any) -> dict[str, list[float]]:
    kinds = ["none", "live", "plain"]
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_concurrency=64) as client:
        for kind in kinds:  # warm-up: imports, connections, first renders
            await one_run(kind, client, k, null)
        for _ in range(repeats):
            for kind in kinds:
                times[kind].append(await one_run(kind, client, k, null))
    return times


def display_costs(k: int, null: Any, repeats: int = 20) -> tuple[float, float]:
    """The live display's own costs, outside any run: start + close (fixed), and per event (median, seconds)."""
    console = Console(file=null, force_terminal=True, width=120)
    events = [
        TrajectoryFinished(round=1, index=i, prompt_tokens=10, completion_tokens=50, finish_reason="stop",
                           answer=str(i % 3), started_at=0.0, seconds=0.1, content="x", messages=[], params={})
        for i in range(k)
    ]  # fmt: skip
    fixed, per_event = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        display = LiveDisplay(console, 1)
        opened = time.perf_counter()
        display.handle(RoundStarted(round=1, k=k, prompt_chars=10))
        for event in events:
            display.handle(event)
        handled = time.perf_counter()
        display.close()
        fixed.append(opened - started + time.perf_counter() - handled)
        per_event.append((handled - opened) / (k + 1))
    return statistics.median(fixed), statistics.median(per_event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--k", type=int, default=64)
    args = parser.parse_args()
    with open(os.devnull, "w") as null:
        times = asyncio.run(bench(args.k, args.repeats, null))
        fixed, per_event = display_costs(args.k, null)
    kinds = list(times)
    none = statistics.median(times["none"])
    print(f"[{args.k}] run against a zero-latency fake server, {args.repeats} repetitions, median seconds:")
    for kind in kinds:
        median = statistics.median(times[kind])
        print(f"  {kind:5s} {median:.4f} s  (min {min(times[kind]):.4f})  ratio to none {median / none:.3f}")
    print(f"live display alone: start + close {fixed * 1e3:.2f} ms per run, {per_event * 1e6:.1f} µs per event")


if __name__ == "__main__":
    main()
