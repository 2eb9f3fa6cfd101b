"""What LangGraph's ``messages`` stream mode costs per synthesis token, against PaCoRe's own custom events.

Not a test (timings vary by machine): run it by hand (see BENCHMARKS.md)::

    .venv/bin/python tests/benchmarks/bench_langgraph_streaming.py [--tokens 4000] [--repeats 9]

One PaCoRe [1] run over an in-process backend (``FunctionBackend``, zero latency) whose synthesis streams
``--tokens`` one-word chunks. Each mode runs the same graph ``--repeats`` times (after a warm-up); the figure is
the median wall time, and the cost per token is (median of the mode - median of ``values``) / tokens, where
``values`` streams no token at all (only the final state):

* ``custom``: PaCoRe's events (``SynthesisDelta`` per chunk, what ``pacore run`` and the proxy read);
* ``messages``: LangGraph's messages mode (one ``AIMessageChunk`` per chunk, through the callback manager);
* ``custom+messages``: both at once;
* ``astream_events``: ``astream_events(version="v2")``, every event of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pacore_graph.clients.base import SamplingParams
from pacore_graph.graph import build_pacore_graph
from pacore_graph.testing import FunctionBackend


def _backend(tokens: int) -> FunctionBackend:
    answer = "tok " * tokens

    def reply(messages: Sequence[dict[str, Any]], params: SamplingParams) -> str:
        content = str(messages[-1]["content"])
        return answer if "Reference Responses" in content else "draft"

    return FunctionBackend(reply)


async def _one(graph: Any, mode: str) -> tuple[float, int]:
    inputs = {"problem": "Q"}
    received = 0
    clock = time.perf_counter()
    if mode == "astream_events":
        async for event in graph.astream_events(inputs, version="v2"):
            received += event["event"] == "on_chat_model_stream"
    else:
        modes = {"values": ["values"], "custom": ["custom"], "messages": ["messages"]}.get(mode, ["custom", "messages"])
        async for stream_mode, _chunk in graph.astream(inputs, stream_mode=modes):
            received += stream_mode != "values"
    return time.perf_counter() - clock, received


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    graph = build_pacore_graph(_backend(args.tokens), [1])
    modes = ["values", "custom", "messages", "custom+messages", "astream_events"]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    counts: dict[str, int] = {}
    for mode in modes:
        await _one(graph, mode)  # warm-up
    for _ in range(args.repeats):
        for mode in modes:  # interleaved, so machine noise hits every mode alike
            seconds, counts[mode] = await _one(graph, mode)
            times[mode].append(seconds)
    base = statistics.median(times["values"])
    print(f"PaCoRe [1], synthesis of {args.tokens} one-word chunks, median of {args.repeats} runs")
    print(f"{'mode':<16} {'median ms':>10} {'items':>7} {'µs/token over values':>21}")
    for mode in modes:
        median = statistics.median(times[mode])
        extra = (median - base) / args.tokens * 1e6
        print(f"{mode:<16} {median * 1e3:>10.1f} {counts[mode]:>7} {extra:>21.2f}")


if __name__ == "__main__":
    asyncio.run(main())
