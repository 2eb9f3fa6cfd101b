"""What the chat path's options and the Responses API cost at the proxy: one client, a zero-latency fake upstream.

Not a test (timings vary by machine): run it by hand and read the figures::

    .venv/bin/python tests/benchmarks/bench_proxy_apis.py [--requests 200] [--schedule 2]

The proxy and the :class:`~pacore_graph.testing.FakeOpenAIServer` run in this process; every upstream request is
answered at once, so a request's latency is the proxy's own work (plus the fake server's and the loopback's) for
schedule ``--schedule``. Each variant sends ``--requests`` requests one after another (after 10 warm-up requests);
printed: p50 and p90 latency per variant. The variants: chat plain, chat with a JSON schema (checked per request,
compiled graph per distinct schema), chat streamed, Responses plain, Responses streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp

from pacore_graph import VLLMClient
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]},
    },
}


def script(request: FakeRequest) -> FakeReply:
    return FakeReply(content='{"value": 391}' if "response_format" in request.body else "<think>w</think>391")


async def timed(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    async with session.post(url, json=body) as response:
        await response.read()
        assert response.status == 200, await response.text()
    return time.perf_counter() - start


async def main(requests: int, schedule: int) -> None:
    async with FakeOpenAIServer(script) as upstream, VLLMClient(upstream.base_url, max_retries=0) as backend:
        async with PaCoReProxy(backend, ProxySettings(port=0)) as proxy, aiohttp.ClientSession() as session:
            question = "What is 17 * 23?"
            chat = {"model": "pacore-low", "messages": [{"role": "user", "content": question}]}
            chat["pacore"] = {"schedule": schedule}
            responses = {"model": "pacore-low", "input": question, "pacore": {"schedule": schedule}}
            variants = {
                "chat": ("/chat/completions", chat),
                "chat + json_schema": ("/chat/completions", {**chat, "response_format": SCHEMA}),
                "chat streamed": ("/chat/completions", {**chat, "stream": True}),
                "responses": ("/responses", responses),
                "responses streamed": ("/responses", {**responses, "stream": True}),
            }
            print(f"schedule [{schedule}], {requests} sequential requests per variant, zero-latency upstream")
            for name, (path, body) in variants.items():
                url = proxy.base_url + path
                for _ in range(10):
                    await timed(session, url, body)
                times = sorted([await timed(session, url, body) for _ in range(requests)])
                p50, p90 = statistics.median(times), times[int(0.9 * len(times)) - 1]
                print(f"{name:<20} p50 {p50 * 1000:6.1f} ms   p90 {p90 * 1000:6.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--schedule", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.schedule))
