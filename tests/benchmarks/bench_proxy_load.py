"""Load on the OpenAI-compatible proxy: many concurrent clients, a fake upstream with realistic latency.

Not a test (timings vary by machine): run it by hand and read the figures::

    .venv/bin/python tests/benchmarks/bench_proxy_load.py [--clients 200] [--requests 1000] [--schedule 2]

The proxy runs as a real ``pacore serve`` child process (so its event loop and RSS are its own), in front of a
:class:`~pacore_graph.testing.FakeOpenAIServer` (in this process, on its own thread and loop) whose every
request waits a uniform 50-200 ms. ``--clients`` aiohttp clients send ``--requests`` chat completions in all
(schedule ``--schedule`` through the ``pacore`` field), bounded by ``--seconds``.

For each request the upstream's critical path is known exactly: every request carries an id in its problem, the
fake server records each upstream call's delay under that id, and the path is the slowest explorer of each
round plus the synthesis. Overhead = client-observed latency - critical path. Printed: requests, errors by
status (goal: none besides deliberate 429s), p50/p99 latency and overhead, throughput, and the proxy's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp

from pacore_graph.schedule import Schedule
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

ID = re.compile(r"problem #(\d+):")


def make_script(delays: dict[int, list[tuple[bool, float]]], low: float, high: float):
    """Each upstream call sleeps uniform(low, high); its delay is recorded under the request id it carries."""
    rng = random.Random(7)

    def script(request: FakeRequest) -> FakeReply:
        text = request.last_user_content or ""
        match = ID.search(text)
        delay = rng.uniform(low, high)
        synthesis = "Reference Responses:" in text
        if match:
            delays[int(match.group(1))].append((synthesis, delay))
        return FakeReply(content="<think>w</think>The answer is 42.", delay=delay, completion_tokens=8)

    return script


def start_proxy(upstream: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "pacore_graph.cli", "serve", "--upstream", upstream, "--port", "0",
        "--max-concurrent-runs", str(args.max_runs), "--concurrency", str(args.upstream_concurrency),
    ]  # fmt: skip
    proxy = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proxy.stderr is not None
    for line in proxy.stderr:
        found = re.search(r"PaCoRe proxy on (http://\S+/v1)", line)
        if found:
            return proxy, found.group(1)
    raise RuntimeError(f"the proxy did not start (exit {proxy.wait()})")


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def critical_path(calls: list[tuple[bool, float]], schedule: Schedule) -> float:
    """The upstream time a run cannot avoid: per parallel round its slowest call, then the synthesis.

    Calls of one round overlap in time, so without per-round tags this takes the explorers as one round when
    the schedule has one parallel round (the default) and otherwise sums each round's slowest in arrival order.
    """
    explorers = [d for synthesis, d in calls if not synthesis]
    referenced = [d for synthesis, d in calls if synthesis]
    total, start = 0.0, 0
    rounds = list(schedule.rounds)
    # Round 1 sees the bare problem; later rounds and the final synthesis see references.
    total += max(explorers[: rounds[0]], default=0.0)
    for k in [*rounds[1:], 1]:
        total += max(referenced[start : start + k], default=0.0)
        start += k
    return total


async def client_loop(
    session: aiohttp.ClientSession,
    url: str,
    ids: asyncio.Queue[int],
    schedule: str,
    deadline: float,
    results: list[tuple[int, int, float]],
) -> None:
    while time.monotonic() < deadline:
        try:
            request_id = ids.get_nowait()
        except asyncio.QueueEmpty:
            return
        body = {
            "model": "pacore-low",
            "messages": [{"role": "user", "content": f"problem #{request_id}: what is 6 * 7?"}],
            "pacore": {"schedule": schedule},
        }
        started = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientError:
            status = -1
        results.append((request_id, status, time.perf_counter() - started))


async def main(args: argparse.Namespace) -> None:
    delays: dict[int, list[tuple[bool, float]]] = defaultdict(list)
    schedule = Schedule.parse(args.schedule)
    with FakeOpenAIServer(make_script(delays, args.min_latency, args.max_latency)).in_thread() as upstream:
        proxy, base_url = start_proxy(upstream.base_url, args)
        try:
            ids: asyncio.Queue[int] = asyncio.Queue()
            for i in range(args.requests):
                ids.put_nowait(i)
            results: list[tuple[int, int, float]] = []
            cpu_before = cpu_seconds(proxy.pid)
            connector = aiohttp.TCPConnector(limit=args.clients)
            timeout = aiohttp.ClientTimeout(total=120)
            started = time.perf_counter()
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                deadline = time.monotonic() + args.seconds
                url = f"{base_url}/chat/completions"
                await asyncio.gather(
                    *(client_loop(session, url, ids, args.schedule, deadline, results) for _ in range(args.clients))
                )
            elapsed = time.perf_counter() - started
            rss = peak_rss_mib(proxy.pid)
            cpu = cpu_seconds(proxy.pid) - cpu_before
        finally:
            proxy.send_signal(signal.SIGINT)
            proxy.wait(timeout=30)
    statuses = Counter(status for _, status, _ in results)
    ok = [(i, latency) for i, status, latency in results if status == 200]
    latencies = sorted(latency for _, latency in ok)
    overheads = sorted(latency - critical_path(delays[i], schedule) for i, latency in ok)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    errors = {status: n for status, n in statuses.items() if status not in (200, 429)}
    print(f"clients {args.clients}, requests {len(results)} in {elapsed:.1f} s ({len(results) / elapsed:.0f}/s)")
    print(f"schedule [{args.schedule}] + synthesis; upstream latency {args.min_latency * 1000:.0f}-"
          f"{args.max_latency * 1000:.0f} ms per call; {len(upstream.requests)} upstream calls")  # fmt: skip
    print(f"statuses: {dict(statuses)}; errors besides 429: {sum(errors.values())}")
    if latencies:
        print(f"latency  p50 {pct(latencies, 0.5):.0f} ms  p99 {pct(latencies, 0.99):.0f} ms")
        print(
            f"overhead p50 {pct(overheads, 0.5):.1f} ms  p99 {pct(overheads, 0.99):.1f} ms  "
            f"mean {statistics.fmean(overheads) * 1000:.1f} ms"
        )
    print(
        f"proxy peak RSS {rss:.0f} MiB; proxy CPU {cpu:.1f} s ({cpu / max(1, len(results)) * 1000:.1f} ms per request)"
    )
    print(f"machine: {os.cpu_count()} CPUs, shared by the proxy, the fake upstream and the clients")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop sending new requests after this long")
    parser.add_argument("--schedule", default="2")
    parser.add_argument("--min-latency", type=float, default=0.05)
    parser.add_argument("--max-latency", type=float, default=0.2)
    parser.add_argument("--max-runs", type=int, default=256, help="the proxy's --max-concurrent-runs")
    parser.add_argument("--upstream-concurrency", type=int, default=512, help="the proxy's --concurrency")
    asyncio.run(main(parser.parse_args()))
