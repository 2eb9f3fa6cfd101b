"""The proxy's added latency for a tools request, over a zero-latency fake upstream.

Not a test (timings vary by machine): run it by hand and read the figures::

    .venv/bin/python tests/benchmarks/bench_proxy_tools.py [--requests 200] [--schedule 2] [--tools 8]

A :class:`~pacore_graph.testing.FakeOpenAIServer` on its own thread and loop answers every request at once: every
trajectory proposes a tool call, so the synthesis sees the calls compacted into its references and answers with
a call. A :class:`~pacore_graph.server.PaCoReProxy` (in this process, real HTTP) serves it. One client sends
``--requests`` chat completions of each kind below, one at a time and the kinds taking turns, each with
``--tools`` tools, and measures, as medians:

* **direct**: one request with the same body straight to the upstream (what a client without PaCoRe pays);
* **proxy, tools**: the same request through the proxy: K explorers, then the synthesis (K + 1 upstream calls);
* **proxy, no tools**: the same through the proxy without tools, so the tools' own cost is the difference.

Added latency = proxy (tools) - direct; per upstream call = that / (K + 1).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp

from pacore_graph import VLLMClient
from pacore_graph.schedule import Schedule
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest


def script(request: FakeRequest) -> FakeReply:
    if not request.body.get("tools"):
        return FakeReply(content="<think>w</think>The answer is 42.", completion_tokens=8)
    return FakeReply(
        content="<think>w</think>Let me look.",
        tool_calls=[{"name": "tool_0", "arguments": {"query": "the answer", "limit": 3}}],
        finish_reason="tool_calls",
        completion_tokens=8,
    )


def tools(count: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": f"Tool number {i}.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
                    "required": ["query"],
                },
            },
        }
        for i in range(count)
    ]


async def medians_ms(
    session: aiohttp.ClientSession, targets: list[tuple[str, dict[str, Any]]], requests: int
) -> list[float]:
    """The median latency of each (url, body) target; the targets take turns, so load on the machine hits each
    alike."""

    async def once(url: str, body: dict[str, Any]) -> float:
        start = time.perf_counter()
        async with session.post(url, json=body) as response:
            assert response.status == 200, await response.text()
            await response.read()
        return (time.perf_counter() - start) * 1000

    for _ in range(10):  # warm-up: connections, caches, the graph compile
        for url, body in targets:
            await once(url, body)
    samples: list[list[float]] = [[] for _ in targets]
    for _ in range(requests):
        for i, (url, body) in enumerate(targets):
            samples[i].append(await once(url, body))
    return [statistics.median(times) for times in samples]


async def main(args: argparse.Namespace) -> None:
    schedule = Schedule.parse(args.schedule)
    calls = schedule.total_trajectories
    messages = [{"role": "user", "content": "Find the answer with the tools."}]
    with_tools = {"messages": messages, "tools": tools(args.tools), "tool_choice": "auto"}
    with FakeOpenAIServer(script).in_thread() as upstream:
        async with (
            VLLMClient(upstream.base_url, max_retries=0, adaptive_concurrency=False) as client,
            PaCoReProxy(client, ProxySettings(port=0)) as proxy,
            aiohttp.ClientSession() as session,
        ):
            pacore = {"pacore": {"schedule": list(schedule.rounds)}}
            url = f"{proxy.base_url}/chat/completions"
            targets = [
                (f"{upstream.base_url}/chat/completions", {"model": "fake-model", **with_tools}),
                (url, {"model": "pacore-low", **with_tools, **pacore}),
                (url, {"model": "pacore-low", "messages": messages, **pacore}),
            ]
            direct, tooled, plain = await medians_ms(session, targets, args.requests)
    added = tooled - direct
    print(
        f"schedule {list(schedule.rounds)} ({calls} upstream calls per request), {args.tools} tools, "
        f"{args.requests} requests each, medians:"
    )
    print(f"  direct to the upstream     {direct:7.2f} ms")
    print(f"  proxy, tools               {tooled:7.2f} ms")
    print(f"  proxy, no tools            {plain:7.2f} ms")
    print(f"  added by the proxy (tools) {added:7.2f} ms  ({added / calls:.2f} ms per upstream call)")
    print(f"  tools' own cost            {tooled - plain:7.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--schedule", default="2")
    parser.add_argument("--tools", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
