"""PaCoRe against the physical limit: wall time, overhead, prefill and memory, measured side by side.

Not a test (timings vary by machine): run it by hand and read the ratios (see BENCHMARKS.md)::

    .venv/bin/python tests/benchmarks/bench_pacore.py                 # scenarios a-d (simulator), ~1 min
    .venv/bin/python tests/benchmarks/bench_pacore.py --only e        # e: the real embedded engine (`pacore engine up`)
    .venv/bin/python tests/benchmarks/bench_pacore.py --only a,c
    .venv/bin/python tests/benchmarks/bench_pacore.py --only a,c --n-batch 16   # the graph sends n=16 requests
    .venv/bin/python tests/benchmarks/bench_pacore.py --only w        # varied lengths: ours vs the official pipeline
    .venv/bin/python tests/benchmarks/bench_pacore.py --only h        # two servers: prefix-aware routing, vllm-router
    .venv/bin/python tests/benchmarks/bench_pacore.py --only s        # the step model: admission orders vs the bound
    .venv/bin/python tests/benchmarks/bench_pacore.py --only t        # the first round's start: LangGraph vs HTTP

Scenarios:

a. eval of P problems × [16] and × [32,4] against the simulator: simulated wall time / the simulator's lower
   bound for the same requests (work / capacity, and the critical path across rounds).
b. framework overhead per trajectory: one PaCoRe [K] run vs a raw aiohttp + asyncio.gather client sending the
   same K + 1 requests, both against the same zero-latency simulator.
c. prefill tokens the simulator computed for a K fan-out: K requests (what the graph sends today) vs one request
   with n=K (sent directly through ``VLLMClient.chat(n=K)``), prefix cache on and off; and whether prompts are
   prefix-stable across rounds and byte-identical across reruns.
d. one round of K = 256, 512, 1024 with 2k-token outputs on a zero-latency simulator, each in a subprocess: time
   and peak RSS (``ru_maxrss``; the simulator shares the process, so the figure includes it).
e. on the real embedded engine: PaCoRe [4] completion tokens/s over the run / the engine's raw throughput on the
   same request mix (4 concurrent requests, then 1 synthesis-like request).
f. several endpoints: the same PaCoRe workload on one simulator, on ``BalancedBackend`` over two equal simulators,
   and over a fast and a 2× slower one (twice the decode step), least outstanding vs round-robin; wall times as
   speed-ups over the one simulator, for all problems at once and for an eval-like stream of problems.
w. realistic workloads: 16 and 64 problems × [16] and × [32,4] with output lengths drawn from a distribution
   (uniform [128, 896], and a long-tailed lognormal), by our client and by a reimplementation of the official
   pipeline's request pattern, against the step-counting bound (``testing.bound.step_lower_bound``).
s. the simulator's step model without HTTP or client time: decode steps of several admission orders (including a
   clairvoyant one that knows every length) over the step bound, on w's workloads and several seeds.
t. the first round's start in real time: LangGraph's setup of P runs × [K] with a backend that never answers;
   256 requests sent at once without LangGraph (the official pipeline's, ours on new and on kept-alive
   connections); and when w's 16 × [16] requests reach the simulator, by both clients and by ours on a
   long-lived client's next run (w's time scale).
h. two simulators with prefix caches: least outstanding, prefix affinity, and vLLM's own router (``vllm-router``)
   in front of them: prefill tokens computed and wall / bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp

from pacore_graph.clients.balanced import BalancedBackend
from pacore_graph.clients.base import ChatBackend, SamplingParams
from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.config import PaCoReConfig
from pacore_graph.gc_tuning import tune_gc
from pacore_graph.graph import build_pacore_graph
from pacore_graph.prompts import build_prompt
from pacore_graph.testing.bound import StepBound, step_lower_bound
from pacore_graph.testing.lengths import LengthDistribution, ScriptedLengths
from pacore_graph.testing.router import vllm_router
from pacore_graph.testing.simulator import (
    SimRequest,
    SimulatorConfig,
    SimulatorServer,
    Stage,
    _PrefixCache,
    lower_bound,
    tokenize,
)

PROBLEM_ID = re.compile(r"problem #(\d+):")


def problem_text(i: int, words: int = 120) -> str:
    """A problem statement of about ``words`` words, tagged with its id."""
    return f"problem #{i}: " + " ".join(f"fact{i}_{j}" for j in range(words)) + " What is the answer?"


def stages_from_log(server: SimulatorServer | Sequence[SimulatorServer], varied: bool = False) -> list[list[Stage]]:
    """The workload the simulator(s) saw, as one chain per problem: distinct prompts in arrival order.

    A prompt's cost is what an unbounded prefix cache, fed every prompt in arrival order, would still compute
    (prompts share the template's opening and a problem's later rounds share more), so the bound stays a bound.
    """
    servers = [server] if isinstance(server, SimulatorServer) else list(server)
    config = servers[0].config
    cache = _PrefixCache(config.block_size, capacity=1 << 40)
    by_problem: dict[int, dict[str, list[Any]]] = defaultdict(dict)
    # Every server's requests, in the order they arrived (each server's clock starts when it does).
    log = sorted(
        ((s._t0 + r.arrived * (s.config.time_scale or 1), r, s) for s in servers for r in s.requests),
        key=lambda item: (item[0], item[1].id),
    )
    for _, request, origin in log:
        text = json.dumps(request.messages)
        match = PROBLEM_ID.search(text)
        problem = int(match.group(1)) if match else -1
        if text not in by_problem[problem]:
            tokens = tokenize(request.messages, config.tokenizer)
            by_problem[problem][text] = [len(tokens) - cache.admit(tokens), 0, 0, 1]
        entry = by_problem[problem][text]
        entry[1] += request.n
        entry[2] = max(entry[2], request.max_tokens or config.default_max_tokens)
        entry[3] = max(entry[3], request.n)
        entry.extend(origin.completion_lengths[request.id])
    if varied:  # each sample's own length, as the simulator drew it
        return [
            [Stage(p, k, out, n, lengths=tuple(rest)) for p, k, out, n, *rest in prompts.values()]
            for prompts in by_problem.values()
        ]
    return [[Stage(p, k, out, n) for p, k, out, n, *_ in prompts.values()] for prompts in by_problem.values()]


# --- a ---------------------------------------------------------------------------------------------------


def graph_config(schedule: list[int], max_tokens: int, seed: int, n_batch: int | None) -> PaCoReConfig:
    """The graph's config in a and c: ``n_batch`` None sends one request per trajectory."""
    return PaCoReConfig(schedule=schedule, params=SamplingParams(max_tokens=max_tokens, seed=seed), n_batch=n_batch)


async def eval_once(
    config: SimulatorConfig,
    schedule: list[int],
    problems: int,
    max_tokens: int,
    concurrency: int,
    n_batch: int | None = None,
    adaptive: bool = True,
) -> tuple[float, float, SimulatorServer, int]:
    """P problems at once through the graph; (simulated s, real s, the server with its log, the client's window)."""
    async with (
        SimulatorServer(config) as server,
        VLLMClient(
            server.base_url, max_concurrency=concurrency, adaptive_concurrency=adaptive, metrics_interval=0.1
        ) as c,
    ):
        graph = build_pacore_graph(c, config=graph_config(schedule, max_tokens, 1, n_batch))
        await c.resolve_model()
        start_real, start_sim = time.perf_counter(), server.sim_now()
        await asyncio.gather(*(graph.ainvoke({"problem": problem_text(i)}) for i in range(problems)))
        return server.sim_now() - start_sim, time.perf_counter() - start_real, server, c.limiter.limit


async def scenario_a(
    problems: int,
    max_tokens: int,
    concurrency: int,
    time_scale: float,
    n_batch: int | None = None,
    modes: Sequence[str] = ("fixed", "adaptive"),
) -> None:
    config = SimulatorConfig(time_scale=time_scale, max_num_seqs=256)
    print(
        f"\n## a. eval: {problems} problems, max_tokens {max_tokens}, client concurrency {concurrency}, "
        f"n_batch {n_batch}"
    )
    print(f"simulator: {config.model_dump()}")
    for schedule, mode in itertools.product(([16], [32, 4]), modes):
        sim, real, server, window = await eval_once(
            config, schedule, problems, max_tokens, concurrency, n_batch, adaptive=mode == "adaptive"
        )
        chains = stages_from_log(server)
        bound = lower_bound(config, chains)
        lockstep = lockstep_ideal(config, chains)
        print(
            f"[{','.join(map(str, schedule))}] {mode} window ({concurrency} -> {window}): "
            f"simulated wall {sim:7.2f} s (real {real:.2f} s); bound "
            f"{bound.seconds:7.2f} s (work {bound.work:.2f}, critical path {bound.critical_path:.2f}, barrier "
            f"{bound.barrier:.2f}); lockstep "
            f"ideal {lockstep:.2f} s; wall/bound {sim / bound.seconds:.3f}, wall/lockstep {sim / lockstep:.3f}; "
            f"busy {server.stats.busy_seconds / sim:.0%}, max running {server.stats.max_running}; "
            f"{server.stats.requests} requests, prefill computed {server.stats.prefill_tokens} of "
            f"{server.stats.prompt_tokens} prompt tokens sent"
        )


def lockstep_ideal(config: SimulatorConfig, chains: list[list[Stage]]) -> float:
    """The engine time if every problem's round r ran together, with no client time: a reference, not a bound.

    Round r's S sequences of L tokens take ``S × L × step(b) / b`` with ``b = min(S, max_num_seqs)``, after the
    prefill of its prompts; rounds follow each other.
    """
    total = 0.0
    for r in range(max(len(c) for c in chains)):
        stages = [c[r] for c in chains if len(c) > r]
        seqs = sum(s.sequences for s in stages)
        b = min(seqs, config.max_num_seqs)
        tokens = sum(s.sequences * s.output_tokens for s in stages)
        prefill = sum(s.prompt_tokens for s in stages) * config.prefill_seconds_per_token
        total += prefill + tokens * config.step_seconds(b) / b
    return total


# --- w ---------------------------------------------------------------------------------------------------

REFERENCE_LINE = re.compile(r"^Reference \d+:$", re.MULTILINE)

#: w's output lengths: the issue's uniform range, and a long tail (median 320, a few 5-10× longer)
DISTRIBUTIONS = {
    "uniform": LengthDistribution(kind="uniform", low=128, high=896, seed=1),
    "longtail": LengthDistribution(kind="lognormal", median=320, sigma=0.75, low=16, high=4096, seed=1),
    "fixed": LengthDistribution(kind="fixed", high=512),
}


def workload_key(request: SimRequest) -> tuple[int, int]:
    """A request's (problem, round): its problem's id and how many references its prompt carries.

    Both clients render the same template, so the j-th sequence of a problem's round gets the same length from
    either, whatever the order of arrival: they run the same workload.
    """
    text = request.last_user_content
    match = PROBLEM_ID.search(text)
    return (int(match.group(1)) if match else -1, len(REFERENCE_LINE.findall(text)))


async def official_pipeline(
    base_url: str,
    model: str,
    problems: Sequence[str],
    schedule: Sequence[int],
    max_tokens: int,
    max_concurrent: int = 1024,
    stream: bool = True,
) -> None:
    """The request pattern of the official pipeline, stepfun-ai/PaCoRe ``pacore/batch_inference/base_exp.py``
    (commit 98e846f), with its example's settings (``playground/example_batch_inference_pacore_low_1210.py``:
    ``max_concurrent`` 1024, ``stream`` on).

    Every problem at once (``asyncio.gather``); one FIFO semaphore of ``max_concurrent`` requests; each round's K
    requests created together and collected with ``as_completed``; a new aiohttp session (no keep-alive) per
    request; conclusions after the last ``</think>``, sorted by length and shuffled with ``Random(42)``; the
    synthesis prompt replaces the last user message. ``max_tokens`` is set (the example leaves it to the server's
    context length) so both clients ask for the same lengths.
    """
    semaphore = asyncio.Semaphore(max_concurrent)
    url = base_url + "/chat/completions"

    async def call(messages: list[dict[str, Any]]) -> str:
        payload = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "top_p": 1.0,
            "stream": stream,
        }
        async with semaphore:
            timeout = aiohttp.ClientTimeout(total=7200, connect=60, sock_connect=20, sock_read=1000)
            connector = aiohttp.TCPConnector(keepalive_timeout=0)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                async with session.post(url, json=payload) as response:
                    if not stream:
                        data = await response.json()
                        return str(data["choices"][0]["message"]["content"])
                    content = ""
                    async for raw in response.content:
                        line = raw.decode().strip()
                        if not line.startswith("data: "):
                            continue
                        line = line[6:].strip()
                        if line == "[DONE]":
                            break
                        piece = json.loads(line)
                        for choice in piece.get("choices") or []:
                            content += choice.get("delta", {}).get("content") or ""
                    return content

    async def process_single(messages: list[dict[str, Any]]) -> None:
        previous: list[str] = []
        for round_index, num in enumerate([*schedule, 1]):
            current = messages if round_index == 0 else build_prompt(messages, previous)
            tasks = [asyncio.create_task(call(current)) for _ in range(num)]
            responses = [await task for task in asyncio.as_completed(tasks)]
            responses.sort(key=len)
            random.Random(42).shuffle(responses)
            previous = [r.split("</think>")[-1] for r in responses if r]

    await asyncio.gather(*(process_single([{"role": "user", "content": p}]) for p in problems))


class CollectorClock:
    """The seconds the garbage collector ran while this is entered (``gc.callbacks``), and its full collections."""

    def __init__(self) -> None:
        self.seconds, self.full, self._started = 0.0, 0, 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> CollectorClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def workload_once(
    config: SimulatorConfig,
    distribution: LengthDistribution,
    client: str,
    schedule: list[int],
    problems: int,
) -> dict[str, Any]:
    """One run of P problems × ``schedule`` with scripted lengths, by ``client``; its figures and the bound."""
    lengths = ScriptedLengths(distribution, key=workload_key)
    max_tokens = distribution.high
    async with SimulatorServer(config, completion_tokens=lengths) as server:
        texts = [problem_text(i) for i in range(problems)]
        window = 0
        if client == "official":
            start = server.sim_now()
            with CollectorClock() as collector:
                await official_pipeline(server.base_url, config.model, texts, schedule, max_tokens)
            wall = server.sim_now() - start
        else:
            async with VLLMClient(server.base_url, **CLIENT_VARIANTS[client]) as c:
                graph = build_pacore_graph(c, config=graph_config(schedule, max_tokens, 1, None))
                await c.resolve_model()
                start = server.sim_now()
                with CollectorClock() as collector:
                    await asyncio.gather(*(graph.ainvoke({"problem": text}) for text in texts))
                # The answers are in: the wall ends here, as in scenario a, not after the pool's close.
                wall = server.sim_now() - start
                window = c.limiter.limit
        stats = server.stats
        bound = step_lower_bound(config, stages_from_log(server, varied=True))
        arrivals = sorted(r.arrived - start for r in server.requests)
    return {
        "wall": wall,
        "arrivals": arrivals,
        "bound": bound,
        "steps": stats.steps,
        "busy": stats.busy_seconds,
        "occupancy": stats.completion_tokens / max(1, stats.steps),
        "window": window,
        "max_running": stats.max_running,
        "collector": collector,
    }


#: w's own clients: keyword arguments of VLLMClient
CLIENT_VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "start256": {"max_concurrency": 256},
    "fixed256": {"max_concurrency": 256, "adaptive_concurrency": False},
    "fixed288": {"max_concurrency": 288, "adaptive_concurrency": False},
    "fixed1024": {"max_concurrency": 1024, "adaptive_concurrency": False},
    "fixed320": {"max_concurrency": 320, "adaptive_concurrency": False},
}


async def scenario_w(
    problem_counts: Sequence[int],
    schedules: Sequence[list[int]],
    distributions: Sequence[str],
    clients: Sequence[str],
    time_scale: float,
    repeats: int,
) -> None:
    config = SimulatorConfig(time_scale=time_scale, max_num_seqs=256)
    print(
        f"\n## w. realistic workloads: time_scale {time_scale}, max_num_seqs {config.max_num_seqs}, {repeats} repeats"
    )
    for name in distributions:
        print(f"lengths {name}: {DISTRIBUTIONS[name].label}")
    for name, problems, schedule in itertools.product(distributions, problem_counts, schedules):
        walls: dict[str, list[float]] = defaultdict(list)
        for repeat in range(repeats):
            order = list(clients) if repeat % 2 == 0 else list(reversed(clients))
            for client in order:
                run = await workload_once(config, DISTRIBUTIONS[name], client, schedule, problems)
                bound: StepBound = run["bound"]
                walls[client].append(run["wall"])
                print(
                    f"  {name} {problems} × {schedule} {client:9s} wall {run['wall']:7.2f} s, bound "
                    f"{bound.seconds:7.2f} s (steps: capacity {bound.capacity_steps}, path {bound.path_steps}, "
                    f"window {bound.window_steps}; prefill {bound.prefill:.2f} + per-token {bound.token_seconds:.2f} "
                    f"+ base × {bound.steps}), wall/bound {run['wall'] / bound.seconds:.3f}; {run['steps']} steps "
                    f"(at no idle time {bound.seconds_at(run['steps']) / bound.seconds:.3f}× the bound), "
                    f"idle {run['wall'] - run['busy']:.2f} s, mean batch {run['occupancy']:.0f}, "
                    f"max running {run['max_running']}, window {run['window']}; the collector ran "
                    f"{run['collector'].seconds:.2f} s real ({run['collector'].full} full collections)",
                    flush=True,
                )
        summary = ", ".join(f"{c} {statistics.median(w):.2f} s ({min(w):.2f}-{max(w):.2f})" for c, w in walls.items())
        print(f"{name} {problems} × {schedule}: median wall {summary}", flush=True)


def step_model_makespan(
    problems: int,
    schedule: list[int],
    distribution: LengthDistribution,
    slots: int,
    key: Any,
) -> tuple[int, StepBound]:
    """The simulator's step model with no client time: how many decode steps an admission order takes.

    Requests wait in one queue ordered by ``key(problem, round, ready_step, remaining_path)`` (smallest first) and
    join whenever a slot is free; a round's next round is ready the step after its last trajectory. Lengths are
    w's (``workload_key``), so ``remaining_path`` (a sequence's length plus its problem's later rounds' longest)
    lets a *clairvoyant* order be measured too. Returns the steps and the step bound of the same workload.
    """
    import heapq

    rounds = [*schedule, 1]
    lengths = [
        [[distribution.sample((p, 0 if r == 0 else rounds[r - 1]), j) for j in range(k)] for r, k in enumerate(rounds)]
        for p in range(problems)
    ]
    tails = [[sum(max(ls) for ls in lengths[p][r + 1 :]) for r in range(len(rounds))] for p in range(problems)]
    queue: list[tuple[Any, int, int, int, int]] = []
    arrivals = itertools.count()

    def release(p: int, r: int, step: int) -> None:
        for length in lengths[p][r]:
            rank = key(p, r, step, length + tails[p][r])
            heapq.heappush(queue, (rank, next(arrivals), p, r, length))

    for p in range(problems):
        release(p, 0, 0)
    running: list[list[int]] = []
    left = {(p, r): len(lengths[p][r]) for p in range(problems) for r in range(len(rounds))}
    ready: list[tuple[int, int, int]] = []
    step = 0
    while queue or running or ready:
        while ready and ready[0][0] <= step:
            _, p, r = heapq.heappop(ready)
            release(p, r, step)
        while queue and len(running) < slots:
            _, _, p, r, length = heapq.heappop(queue)
            running.append([length, p, r])
        step += 1
        still = []
        for seq in running:
            seq[0] -= 1
            if seq[0] > 0:
                still.append(seq)
                continue
            left[(seq[1], seq[2])] -= 1
            if left[(seq[1], seq[2])] == 0 and seq[2] + 1 < len(rounds):
                heapq.heappush(ready, (step, seq[1], seq[2] + 1))
        running = still
    chains = [[Stage(0, len(ls), 0, lengths=tuple(ls)) for ls in chain] for chain in lengths]
    return step, step_lower_bound(SimulatorConfig(max_num_seqs=slots), chains)


#: s's admission orders: key(problem, round, ready step, remaining path) -> rank (smallest first)
STEP_MODEL_ORDERS: dict[str, Any] = {
    "arrival (FIFO; this client, the official)": lambda p, r, t, rest: (t,),
    "later rounds first (the previous client)": lambda p, r, t, rest: (-r, t),
    "problem that started first": lambda p, r, t, rest: (p, -r),
    "clairvoyant: longest remaining path": lambda p, r, t, rest: (-rest,),
}


def scenario_s(problem_counts: Sequence[int], schedules: Sequence[list[int]], seeds: int) -> None:
    print(f"\n## s. the step model (no client time, 256 slots): decode steps / the step bound, {seeds} seeds")
    for name in ("uniform", "longtail"):
        for problems, schedule in itertools.product(problem_counts, schedules):
            ratios: dict[str, list[float]] = defaultdict(list)
            for seed in range(1, seeds + 1):
                distribution = DISTRIBUTIONS[name].model_copy(update={"seed": seed})
                for order, key in STEP_MODEL_ORDERS.items():
                    steps, bound = step_model_makespan(problems, schedule, distribution, 256, key)
                    ratios[order].append(bound.seconds_at(steps) / bound.seconds)
            print(
                f"{name} {problems} × {schedule}: "
                + "; ".join(f"{o} {statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for o, v in ratios.items()),
                flush=True,
            )


# --- t ---------------------------------------------------------------------------------------------------


class NeverAnswers:
    """A backend that records when each chat() call came and never answers: LangGraph's setup, timed alone."""

    def __init__(self, expected: int) -> None:
        self.calls: list[float] = []
        self.expected = expected
        self.all_called = asyncio.Event()

    async def chat(self, messages: Any, params: SamplingParams, *, n: int = 1) -> Any:
        self.calls.append(time.perf_counter())
        if len(self.calls) == self.expected:
            self.all_called.set()
        await asyncio.Event().wait()


async def langgraph_setup(problems: int, k: int) -> tuple[float, float]:
    """Real ms from starting P runs × [K] to the first and to the last explorer's chat() call."""
    backend = NeverAnswers(problems * k)
    graph = build_pacore_graph(backend, config=graph_config([k], 896, 1, None))
    started = time.perf_counter()
    runs = [asyncio.create_task(graph.ainvoke({"problem": problem_text(i)})) for i in range(problems)]
    await backend.all_called.wait()
    for run in runs:
        run.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    return (backend.calls[0] - started) * 1000, (backend.calls[-1] - started) * 1000


class ArrivalClock:
    """A ``completion_tokens`` script that records when each request reached the simulator (perf_counter)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.arrived: list[float] = []

    def __call__(self, request: SimRequest, index: int) -> int:
        if index == 0:
            self.arrived.append(time.perf_counter())
        return self.tokens


async def requests_on_the_wire(n: int, time_scale: float, official_first: bool) -> dict[str, float]:
    """Real ms from sending n chat requests at once until the simulator has the last, without LangGraph.

    The official pipeline's request (a session and a connection per request), and ours (``VLLMClient`` with a
    fixed window of n) on a new client's pool (new connections), then again on the same pool (kept alive).
    """
    config = SimulatorConfig(time_scale=time_scale, max_num_seqs=256)
    clock = ArrivalClock(16)
    figures: dict[str, float] = {}
    prompt = [{"role": "user", "content": problem_text(0)}]
    async with SimulatorServer(config, completion_tokens=clock) as server:

        async def official() -> None:
            clock.arrived.clear()
            started = time.perf_counter()
            await official_pipeline(server.base_url, config.model, [problem_text(0)], [n], 16)
            figures["official"] = (clock.arrived[n - 1] - started) * 1000

        if official_first:
            await official()
        async with VLLMClient(server.base_url, max_concurrency=n, adaptive_concurrency=False) as client:
            await client.resolve_model()
            for label in ("ours, new connections", "ours, kept-alive connections"):
                clock.arrived.clear()
                started = time.perf_counter()
                await asyncio.gather(*(client.chat(prompt, SamplingParams(max_tokens=16)) for _ in range(n)))
                figures[label] = (clock.arrived[n - 1] - started) * 1000
        if not official_first:
            await official()
    return figures


async def next_run_once(
    config: SimulatorConfig, distribution: LengthDistribution, schedule: list[int], problems: int
) -> dict[str, Any]:
    """w's workload as a long-lived client's next run: its pool kept alive and its window learned.

    An earlier run of 256 one-token requests (not counted) leaves them so; the figures are ``workload_once``'s.
    """
    async with SimulatorServer(config, completion_tokens=ScriptedLengths(distribution, key=workload_key)) as server:
        async with VLLMClient(server.base_url) as client:
            graph = build_pacore_graph(client, config=graph_config(schedule, distribution.high, 1, None))
            await client.resolve_model()
            earlier = [{"role": "user", "content": "an earlier run"}]
            await asyncio.gather(*(client.chat(earlier, SamplingParams(max_tokens=1)) for _ in range(256)))
            seen, steps = len(server.requests), server.stats.steps
            start = server.sim_now()
            await asyncio.gather(*(graph.ainvoke({"problem": problem_text(i)}) for i in range(problems)))
            wall = server.sim_now() - start
        arrivals = sorted(r.arrived - start for r in server.requests[seen:])
        return {"wall": wall, "arrivals": arrivals, "steps": server.stats.steps - steps}


async def scenario_t(time_scale: float, repeats: int) -> None:
    """The first round's start in real time: LangGraph's setup, the requests' HTTP, and w's arrivals."""
    print(f"\n## t. the first round's start, real ms; {repeats} repeats, median (range)")

    def spread(values: Sequence[float]) -> str:
        return f"{statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})"

    for problems, k in ((16, 16), (16, 32), (64, 16)):
        setups = [await langgraph_setup(problems, k) for _ in range(repeats)]
        print(
            f"LangGraph, {problems} runs × [{k}], a backend that never answers: first chat() call "
            f"{spread([s[0] for s in setups])}, last {spread([s[1] for s in setups])}",
            flush=True,
        )
    on_the_wire: dict[str, list[float]] = defaultdict(list)
    for repeat in range(repeats):
        for label, ms in (await requests_on_the_wire(256, time_scale, repeat % 2 == 0)).items():
            on_the_wire[label].append(ms)
    for label, values in on_the_wire.items():
        print(f"256 requests at once, no LangGraph, {label}: the last at the server after {spread(values)}", flush=True)
    config = SimulatorConfig(time_scale=time_scale, max_num_seqs=256)
    for name in ("uniform", "longtail"):
        marks: dict[str, list[list[float]]] = defaultdict(list)
        for repeat in range(repeats):
            clients = ("official", "ours", "ours, next run")
            for client in clients if repeat % 2 == 0 else reversed(clients):
                if client == "ours, next run":
                    run = await next_run_once(config, DISTRIBUTIONS[name], [16], 16)
                else:
                    run = await workload_once(config, DISTRIBUTIONS[name], client, [16], 16)
                real = [a * time_scale * 1000 for a in run["arrivals"]]
                marks[client].append([real[0], real[63], real[255], run["wall"], run["steps"]])
        for client, rows in marks.items():
            print(
                f"w's {name} 16 × [16] at time scale {time_scale}, {client}: first request at the server "
                f"{spread([r[0] for r in rows])}, 64th {spread([r[1] for r in rows])}, 256th "
                f"{spread([r[2] for r in rows])}; wall {spread([r[3] for r in rows])} s simulated, decode steps "
                f"{spread([r[4] for r in rows])}",
                flush=True,
            )


# --- b ---------------------------------------------------------------------------------------------------


async def raw_run(session: aiohttp.ClientSession, url: str, model: str, problem: str, k: int, max_tokens: int) -> None:
    """What PaCoRe [K] sends, without the framework: K concurrent requests, then one on the references."""

    async def post(messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0}
        async with session.post(url, json=body) as response:
            data: dict[str, Any] = await response.json()
            return data

    first = [{"role": "user", "content": problem}]
    answers = await asyncio.gather(*(post(first) for _ in range(k)))
    refs = [a["choices"][0]["message"]["content"].rpartition("</think>")[2] for a in answers]
    await post(build_prompt(first, refs))


async def scenario_b(k: int, repeats: int, max_tokens: int) -> None:
    config = SimulatorConfig(time_scale=0, max_num_seqs=max(k, 1))
    print(
        f"\n## b. framework overhead: PaCoRe [{k}] vs raw aiohttp + gather, zero-latency simulator, best of {repeats}"
    )
    async with SimulatorServer(config) as server:
        url = server.base_url + "/chat/completions"
        best_raw = best_graph = float("inf")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=k)) as session:
            for r in range(repeats):
                started = time.perf_counter()
                await raw_run(session, url, config.model, problem_text(r), k, max_tokens)
                best_raw = min(best_raw, time.perf_counter() - started)
        async with VLLMClient(server.base_url, max_concurrency=k) as client:
            graph = build_pacore_graph(client, [k], params=SamplingParams(max_tokens=max_tokens))
            await client.resolve_model()
            for r in range(repeats):
                started = time.perf_counter()
                await graph.ainvoke({"problem": problem_text(r)})
                best_graph = min(best_graph, time.perf_counter() - started)
    per = (best_graph - best_raw) / (k + 1) * 1000
    print(
        f"raw {best_raw * 1000:.1f} ms, PaCoRe {best_graph * 1000:.1f} ms for {k + 1} trajectories: "
        f"overhead {per:.3f} ms per trajectory (raw itself {best_raw / (k + 1) * 1000:.3f} ms)"
    )


# --- c ---------------------------------------------------------------------------------------------------


async def scenario_c(k: int, max_tokens: int, n_batch: int | None = None) -> None:
    print(f"\n## c. prefill for a K={k} fan-out (problem of ~1,000 tokens)")
    problem = [{"role": "user", "content": problem_text(0, words=1000)}]
    params = SamplingParams(max_tokens=max_tokens)
    for caching in (True, False):
        config = SimulatorConfig(time_scale=0, max_num_seqs=256, prefix_caching=caching)
        figures = {}
        for label in ("K requests (today)", "one request n=K"):
            async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
                if label.startswith("K"):
                    await asyncio.gather(*(client.chat(problem, params) for _ in range(k)))
                else:
                    await client.chat(problem, params, n=k)
                figures[label] = (server.stats.prompt_tokens, server.stats.prefill_tokens)
        (sent_naive, naive), (sent_batched, batched) = figures["K requests (today)"], figures["one request n=K"]
        print(
            f"prefix cache {'on ' if caching else 'off'}: K requests send {sent_naive} prompt tokens, compute "
            f"{naive}; one n=K request sends {sent_batched}, computes {batched}; "
            f"n=K / K requests = {batched / naive:.3f} (1/K = {1 / k:.3f})"
        )
    # The graph's own requests (n-batched with --n-batch): prefill over a [K, K] run, cache on and off.
    for caching in (True, False):
        config = SimulatorConfig(time_scale=0, max_num_seqs=256, prefix_caching=caching)
        async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
            graph = build_pacore_graph(client, config=graph_config([k, k], max_tokens, 7, n_batch))
            await graph.ainvoke({"messages": problem})
            stats = server.stats
        print(
            f"PaCoRe [{k},{k}] n_batch {n_batch} (cache {'on' if caching else 'off'}): {stats.requests} requests, "
            f"prompt tokens sent {stats.prompt_tokens}, computed {stats.prefill_tokens}"
        )
    # Prefix stability across rounds and reruns.
    config = SimulatorConfig(time_scale=0, max_num_seqs=256)
    prompts_by_run: list[list[list[str]]] = []
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=graph_config([k, k], max_tokens, 7, n_batch))
        for _ in range(2):
            server.reset_stats()
            server.clear_cache()
            await graph.ainvoke({"messages": problem})
            distinct: dict[str, list[str]] = {}
            for request in server.requests:
                distinct.setdefault(json.dumps(request.messages), tokenize(request.messages))
            prompts_by_run.append(list(distinct.values()))
        stats = server.stats
    rounds = prompts_by_run[0]
    identical = prompts_by_run[0] == prompts_by_run[1]
    shared = [_common_prefix(a, b) for a, b in itertools.pairwise(rounds)]
    print(
        f"PaCoRe [{k},{k}] (cache on): {stats.requests} requests, {len(rounds)} distinct prompts of "
        f"{[len(p) for p in rounds]} tokens; prompt tokens sent {stats.prompt_tokens}, computed "
        f"{stats.prefill_tokens} ({stats.prefill_tokens / stats.prompt_tokens:.1%}); shared prefix with the previous "
        f"round's prompt: {shared} tokens; a rerun sends byte-identical prompts: {identical}"
    )


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- d ---------------------------------------------------------------------------------------------------


async def one_round(k: int, max_tokens: int) -> dict[str, float]:
    """Run PaCoRe [K] once on a zero-latency simulator in this process; time and peak RSS."""
    config = SimulatorConfig(time_scale=0, max_num_seqs=k)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url, max_concurrency=k) as client:
        graph = build_pacore_graph(client, [k], params=SamplingParams(max_tokens=max_tokens))
        await client.resolve_model()
        started = time.perf_counter()
        await graph.ainvoke({"problem": problem_text(0)})
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"k": k, "seconds": seconds, "peak_rss_mib": peak}


def scenario_d(ks: list[int], max_tokens: int, collector: str) -> None:
    print(f"\n## d. one round of K trajectories × {max_tokens} tokens, zero-latency simulator, one subprocess each")
    for k in ks:
        out = subprocess.run(
            [sys.executable, __file__, "--child-d", str(k), "--max-tokens-d", str(max_tokens), "--gc", collector],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"K={k:5d}: {figures['seconds']:6.2f} s ({figures['seconds'] / k * 1000:.2f} ms per trajectory), "
            f"peak RSS {figures['peak_rss_mib']:7.1f} MiB"
        )


# --- e ---------------------------------------------------------------------------------------------------


async def scenario_e(base_url: str, max_tokens: int, repeats: int) -> None:
    print(f"\n## e. real engine at {base_url}: PaCoRe [4] vs raw batched requests, max_tokens {max_tokens}")
    # ignore_eos makes every request generate exactly max_tokens, so both sides do the same work.
    params = SamplingParams(max_tokens=max_tokens, seed=3, extra={"ignore_eos": True})
    # Every request hits max_tokens, so truncated trajectories must be kept as references.
    compaction = CompactionPolicy(truncated="keep")
    rates: dict[str, list[float]] = {"pacore": [], "raw": []}
    async with VLLMClient(base_url, max_concurrency=64) as client:
        await client.resolve_model()
        await client.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4))  # warm up
        graph = build_pacore_graph(client, [4], params=params, compaction=compaction)
        for r in range(repeats):
            # A new problem each repeat (no prefix-cache carry-over); the two sides alternate who goes first.
            problem = f"Problem {r}: what is the sum of the first {100 + r} odd numbers? Think step by step."
            for side in ("raw", "pacore") if r % 2 else ("pacore", "raw"):
                started = time.perf_counter()
                if side == "pacore":
                    state = await graph.ainvoke({"problem": problem})
                    tokens = state["usage"]["completion_tokens"]
                else:
                    messages = [{"role": "user", "content": problem}]
                    results = await asyncio.gather(
                        *(client.chat(messages, params.with_seed_offset(i)) for i in range(4))
                    )
                    refs = [x.completions[0].content.rpartition("</think>")[2] for x in results]
                    final = await client.chat(build_prompt(messages, refs), params.with_seed_offset(4))
                    tokens = sum(x.usage.completion_tokens for x in results) + final.usage.completion_tokens
                seconds = time.perf_counter() - started
                rates[side].append(tokens / seconds)
                print(f"  repeat {r} {side:6s}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tok/s")
    pacore, raw = statistics.median(rates["pacore"]), statistics.median(rates["raw"])
    print(f"median: PaCoRe [4] {pacore:.1f} tok/s, raw {raw:.1f} tok/s; ratio {pacore / raw:.3f}")


def engine_url() -> str:
    url = os.environ.get("PACORE_BASE_URL")
    if url:
        return url
    status = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pacore"), "engine", "status"], capture_output=True, text=True
    ).stdout
    found = re.search(r"(http://\S+/v1)", status)
    if not found:
        raise SystemExit("scenario e needs a running engine: `pacore engine up` (or set PACORE_BASE_URL)")
    return found.group(1)


# --- f ---------------------------------------------------------------------------------------------------


class OnArrival(BalancedBackend):
    """f's first baseline: each request goes on arrival to the backend with the fewest sequences in flight."""

    def __init__(self, backends: Sequence[ChatBackend]) -> None:
        super().__init__(backends)
        self._windows = []  # ignore the clients' windows: route on arrival, as for backends without one


class RoundRobin(OnArrival):
    """f's second baseline: requests take turns over the backends, whatever their load."""

    def _pick(self, n: int) -> int:
        index = self._next
        self._next = (index + 1) % len(self.backends)
        self.outstanding[index] += n
        self.requests[index] += 1
        return index


def lockstep_split(configs: list[SimulatorConfig], chains: list[list[Stage]]) -> float:
    """``lockstep_ideal`` over several servers: each round's sequences split between them as well as possible.

    A reference, not a bound: round r's prompts are prefilled (on one server's clock), then its S sequences
    of L tokens are split so the slowest server's share, ``s × L × step(b) / b`` with ``b = min(s, B)``, is least.
    """

    def share(config: SimulatorConfig, s: int, length: float) -> float:
        b = min(s, config.max_num_seqs)
        return s * length * config.step_seconds(b) / b if s else 0.0

    total = 0.0
    for r in range(max(len(c) for c in chains)):
        stages = [c[r] for c in chains if len(c) > r]
        seqs = sum(s.sequences for s in stages)
        length = sum(s.sequences * s.output_tokens for s in stages) / seqs
        prefill = sum(s.prompt_tokens for s in stages) * configs[0].prefill_seconds_per_token
        splits = [(seqs,)] if len(configs) == 1 else [(a, seqs - a) for a in range(seqs + 1)]
        best = min(max(share(c, s, length) for c, s in zip(configs, split, strict=True)) for split in splits)
        total += prefill + best
    return total


async def endpoints_once(
    configs: list[SimulatorConfig],
    policy: str,
    schedule: list[int],
    problems: int,
    in_flight: int,
    max_tokens: int,
) -> tuple[float, list[SimulatorServer]]:
    """P problems, at most ``in_flight`` at a time, over one simulator per config; (real seconds, the servers)."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(SimulatorServer(config)) for config in configs]
        # Default clients: each one's window follows its simulator's /metrics.
        clients = [await stack.enter_async_context(VLLMClient(s.base_url, metrics_interval=0.1)) for s in servers]
        for client in clients:
            await client.resolve_model()
        backend: ChatBackend = clients[0]
        if policy == "round-robin":
            backend = RoundRobin(clients)
        elif policy == "on arrival":
            backend = OnArrival(clients)
        elif policy == "windows":
            backend = BalancedBackend(clients)
        graph = build_pacore_graph(backend, config=graph_config(schedule, max_tokens, 1, None))
        gate = asyncio.Semaphore(in_flight)

        async def solve(i: int) -> None:
            async with gate:
                await graph.ainvoke({"problem": problem_text(i)})

        started = time.perf_counter()
        await asyncio.gather(*(solve(i) for i in range(problems)))
        return time.perf_counter() - started, servers


async def scenario_f(max_tokens: int, time_scale: float, max_num_seqs: int) -> None:
    fast = SimulatorConfig(time_scale=time_scale, max_num_seqs=max_num_seqs)
    slow = fast.model_copy(
        update={"decode_step_base": 2 * fast.decode_step_base, "decode_step_per_seq": 2 * fast.decode_step_per_seq}
    )
    print(
        f"\n## f. several endpoints: max_tokens {max_tokens}, max_num_seqs {max_num_seqs} per simulator, "
        f"time_scale {time_scale}; slow = decode step ×2 ({slow.step_seconds(max_num_seqs) * 1000:.1f} vs "
        f"{fast.step_seconds(max_num_seqs) * 1000:.1f} ms at a full batch), so the pair's capacity is "
        f"{1 + fast.step_seconds(max_num_seqs) / slow.step_seconds(max_num_seqs):.2f}× one fast server's"
    )
    setups = [
        ("one simulator", [fast], "one"),
        ("two equal, by windows", [fast, fast], "windows"),
        ("two equal, on arrival", [fast, fast], "on arrival"),
        ("two equal, round-robin", [fast, fast], "round-robin"),
        ("fast + slow, by windows", [fast, slow], "windows"),
        ("fast + slow, on arrival", [fast, slow], "on arrival"),
        ("fast + slow, round-robin", [fast, slow], "round-robin"),
    ]
    # A warm-up run, so the first measured setup does not pay for first-time imports and connections.
    await endpoints_once([fast.model_copy(update={"time_scale": 0})], "one", [4], 1, 1, 16)
    for problems, in_flight, schedule in ((8, 8, [32, 4]), (12, 4, [32, 4])):
        at_once = in_flight >= problems
        shape = "all at once" if at_once else f"at most {in_flight} in flight (eval-like)"
        print(f"{problems} problems × {schedule}, {shape}; speed-up = one simulator's wall / this wall:")
        one = 0.0
        chains: list[list[Stage]] = []
        for label, configs, policy in setups:
            real, servers = await endpoints_once(configs, policy, schedule, problems, in_flight, max_tokens)
            if not one:
                one, chains = real, stages_from_log(servers[0])
            # The lock-step reference assumes every problem's round r runs together: only true all at once.
            ideal = f"{lockstep_split([fast], chains) / lockstep_split(configs, chains):4.2f}×" if at_once else "n/a"
            print(
                f"  {label:31s} wall {real:5.2f} s (simulated {real / time_scale:5.1f} s), speed-up {one / real:4.2f}× "
                f"(lock-step ideal {ideal}); sequences per server {[s.stats.sequences for s in servers]}"
            )


# --- h ---------------------------------------------------------------------------------------------------


async def routing_once(
    config: SimulatorConfig, routing: str, problems: int, schedule: list[int], words: int, repeat: int
) -> dict[str, Any]:
    """P problems at once over two simulators, routed by ``routing``; wall, prefill computed, bound."""
    lengths = ScriptedLengths(DISTRIBUTIONS["uniform"], key=workload_key)
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(SimulatorServer(config, completion_tokens=lengths)) for _ in range(2)
        ]
        if routing.startswith("vllm-router"):
            url = await stack.enter_async_context(
                vllm_router([s.base_url.removesuffix("/v1") for s in servers], routing.split()[-1])
            )
            # The router serves no vLLM gauges: a fixed window as large as both servers' batches together.
            backend: Any = await stack.enter_async_context(
                VLLMClient(url, max_concurrency=2 * config.max_num_seqs, adaptive_concurrency=False)
            )
        else:
            clients = [await stack.enter_async_context(VLLMClient(s.base_url)) for s in servers]
            backend = BalancedBackend(clients, prefix_affinity=routing == "prefix affinity")
        await backend.resolve_model()
        graph = build_pacore_graph(backend, config=graph_config(schedule, DISTRIBUTIONS["uniform"].high, 1, None))
        texts = [problem_text(1000 * repeat + i, words=words) for i in range(problems)]
        start = time.perf_counter()
        await asyncio.gather(*(graph.ainvoke({"problem": text}) for text in texts))
        wall = (time.perf_counter() - start) / config.time_scale
        bound = step_lower_bound(config, stages_from_log(servers, varied=True), servers=2)
        return {
            "wall": wall,
            "bound": bound,
            "prefill": sum(s.stats.prefill_tokens for s in servers),
            "sent": sum(s.stats.prompt_tokens for s in servers),
            "sequences": [s.stats.sequences for s in servers],
        }


ROUTINGS = ("least outstanding", "prefix affinity", "vllm-router cache_aware", "vllm-router round_robin")


async def scenario_h(
    problems: int, schedule: list[int], words: int, time_scale: float, repeats: int, routings: Sequence[str]
) -> None:
    config = SimulatorConfig(time_scale=time_scale, max_num_seqs=128)
    print(
        f"\n## h. two simulators with prefix caches ({config.max_num_seqs} slots each, time_scale {time_scale}): "
        f"{problems} problems of ~{words} words × {schedule}, lengths {DISTRIBUTIONS['uniform'].label}"
    )
    figures: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for repeat in range(repeats):
        order = list(routings) if repeat % 2 == 0 else list(reversed(routings))
        for routing in order:
            run = await routing_once(config, routing, problems, schedule, words, repeat)
            figures[routing].append(run)
            print(
                f"  {routing:24s} wall {run['wall']:6.2f} s, bound {run['bound'].seconds:6.2f} s, wall/bound "
                f"{run['wall'] / run['bound'].seconds:.3f}; prefill computed {run['prefill']} of {run['sent']} "
                f"prompt tokens sent; sequences per server {run['sequences']}",
                flush=True,
            )
    for routing, runs in figures.items():
        ratios = [r["wall"] / r["bound"].seconds for r in runs]
        prefill = [r["prefill"] for r in runs]
        print(
            f"{routing:24s} wall/bound median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}), "
            f"prefill computed median {statistics.median(prefill):.0f} ({min(prefill)}-{max(prefill)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="a,b,c,d", help="scenarios to run, e.g. a,c or e (default a,b,c,d)")
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=512, help="output length for a and c")
    parser.add_argument("--concurrency", type=int, default=64, help="VLLMClient max_concurrency in a")
    parser.add_argument(
        "--window", choices=("fixed", "adaptive", "both"), default="both", help="a: the client's window, or both"
    )
    parser.add_argument("--n-batch", type=int, default=None, help="PaCoReConfig.n_batch for the graph in a and c")
    parser.add_argument("--time-scale", type=float, default=0.1, help="real seconds per simulated second in a")
    parser.add_argument("--k-overhead", type=int, default=256)
    parser.add_argument("--ks", default="256,512,1024")
    parser.add_argument("--max-tokens-d", type=int, default=2048)
    parser.add_argument("--max-tokens-e", type=int, default=128)
    parser.add_argument("--repeats-e", type=int, default=4)
    parser.add_argument("--max-tokens-f", type=int, default=256)
    parser.add_argument("--time-scale-f", type=float, default=0.04, help="real seconds per simulated second in f")
    parser.add_argument("--max-num-seqs-f", type=int, default=64, help="each simulator's max_num_seqs in f")
    parser.add_argument("--problems-w", default="16,64", help="w: problem counts")
    parser.add_argument("--schedules-w", default="16;32,4", help="w: schedules, separated by ';'")
    parser.add_argument(
        "--lengths-w", default="uniform,longtail", help=f"w: length distributions {list(DISTRIBUTIONS)}"
    )
    parser.add_argument("--clients-w", default="official,ours", help=f"w: clients, official or {list(CLIENT_VARIANTS)}")
    parser.add_argument("--time-scale-w", type=float, default=0.1)
    parser.add_argument("--repeats-w", type=int, default=1)
    parser.add_argument("--seeds-s", type=int, default=6, help="s: length seeds per workload")
    parser.add_argument("--repeats-t", type=int, default=4, help="t: repeats of each measurement")
    parser.add_argument("--problems-h", type=int, default=8)
    parser.add_argument("--schedule-h", default="32,4")
    parser.add_argument("--words-h", type=int, default=1000, help="h: problem length in words (tokens)")
    parser.add_argument("--time-scale-h", type=float, default=0.1)
    parser.add_argument("--repeats-h", type=int, default=2)
    parser.add_argument("--routings-h", default=",".join(ROUTINGS), help=f"h: routings, from {list(ROUTINGS)}")
    parser.add_argument(
        "--gc",
        choices=("pacore", "default"),
        default="pacore",
        help="the collector's settings: pacore's (gc_tuning.tune_gc, as the pacore command runs) or CPython's default",
    )
    parser.add_argument("--child-d", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gc == "pacore":
        tune_gc()  # every client this process runs (the official pipeline too) runs under the pacore process's settings
    if args.child_d:
        print(json.dumps(asyncio.run(one_round(args.child_d, args.max_tokens_d))))
        return
    only = set(args.only.split(","))
    print(f"# bench_pacore on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, collector: {args.gc}")
    if "a" in only:
        modes = ("fixed", "adaptive") if args.window == "both" else (args.window,)
        asyncio.run(scenario_a(args.problems, args.max_tokens, args.concurrency, args.time_scale, args.n_batch, modes))
    if "w" in only:
        asyncio.run(
            scenario_w(
                [int(p) for p in args.problems_w.split(",")],
                [[int(k) for k in schedule.split(",")] for schedule in args.schedules_w.split(";")],
                args.lengths_w.split(","),
                args.clients_w.split(","),
                args.time_scale_w,
                args.repeats_w,
            )
        )
    if "s" in only:
        scenario_s(
            [int(p) for p in args.problems_w.split(",")],
            [[int(k) for k in schedule.split(",")] for schedule in args.schedules_w.split(";")],
            args.seeds_s,
        )
    if "t" in only:
        asyncio.run(scenario_t(args.time_scale_w, args.repeats_t))
    if "h" in only:
        asyncio.run(
            scenario_h(
                args.problems_h,
                [int(k) for k in args.schedule_h.split(",")],
                args.words_h,
                args.time_scale_h,
                args.repeats_h,
                args.routings_h.split(","),
            )
        )
    if "b" in only:
        asyncio.run(scenario_b(args.k_overhead, 3, 16))
    if "c" in only:
        asyncio.run(scenario_c(16, args.max_tokens, args.n_batch))
    if "d" in only:
        scenario_d([int(k) for k in args.ks.split(",")], args.max_tokens_d, args.gc)
    if "e" in only:
        asyncio.run(scenario_e(engine_url(), args.max_tokens_e, args.repeats_e))
    if "f" in only:
        asyncio.run(scenario_f(args.max_tokens_f, args.time_scale_f, args.max_num_seqs_f))


if __name__ == "__main__":
    main()
