"""A vLLM-like model server simulator: the OpenAI chat API over real HTTP, with continuous batching modelled.

:class:`SimulatorServer` is an ``aiohttp.web`` server on 127.0.0.1 (like
:class:`~pacore_graph.testing.fake_server.FakeOpenAIServer`) whose replies are timed by a model of a
continuous-batching engine, so benchmarks can compare a client's wall time with the physical limit:

* at most ``max_num_seqs`` sequences run at once; further requests queue (FIFO) until sequences finish;
* a request is admitted at a step boundary; that step costs its *uncached* prompt tokens × ``prefill_seconds_per_token``
  plus one decode step. A block-hash prefix cache (blocks of ``block_size`` tokens, hash chains, LRU over
  ``cache_blocks`` blocks) decides which prompt tokens are already computed, as vLLM's automatic prefix cache does;
* each decode step gives every running sequence one token and costs ``decode_step_base + decode_step_per_seq × batch``;
* a choice's length is the request's ``max_tokens`` (else ``default_max_tokens``), or what a scripted
  ``completion_tokens`` function returns (clipped to ``max_tokens``).

Simulated time runs ``1 / time_scale`` times faster than real time (``time_scale=0.05``: 20×); ``time_scale=0``
skips every wait (a zero-latency server whose simulated clock is virtual). Tokens are whitespace words (or
4-character pieces), each message prefixed by a role token. :attr:`SimulatorServer.stats` counts the work done,
and :func:`lower_bound` gives the time no client can beat for a workload on the same configuration. Example::

    config = SimulatorConfig(max_num_seqs=64, time_scale=0.05)
    async with SimulatorServer(config) as server:
        client = VLLMClient(server.base_url)
        ...
        print(server.stats.prefill_tokens, server.sim_elapsed())
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.messages import last_user_text, text_of

__all__ = [
    "LowerBound",
    "SimRequest",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorStats",
    "Stage",
    "lower_bound",
    "tokenize",
]

_HOST = "127.0.0.1"
_MAX_BODY_BYTES = 256 * 1024 * 1024


class SimulatorConfig(BaseModel):
    """The simulated engine's parameters (seconds are simulated seconds).

    ``virtual_settle`` (real seconds) matters only with ``time_scale=0``: before a run of decode steps the engine
    waits until no request has arrived for that long, so requests a client sends "at once" join one batch
    (on a virtual clock nothing else would stop the engine from finishing the first request alone).

    The defaults are in the range of an 8B model on one modern GPU: ~20k prompt tokens/s of prefill and a
    20 ms decode step growing by 0.2 ms per running sequence (~3,600 tokens/s at 256 sequences).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "simulated"
    max_num_seqs: int = Field(256, ge=1)
    prefill_seconds_per_token: float = Field(5e-5, ge=0)
    decode_step_base: float = Field(0.02, ge=0)
    decode_step_per_seq: float = Field(2e-4, ge=0)
    prefix_caching: bool = True
    block_size: int = Field(16, ge=1)
    cache_blocks: int = Field(65_536, ge=0)
    tokenizer: Literal["words", "chars4"] = "words"
    default_max_tokens: int = Field(256, ge=1)
    conclusion_tokens: int = Field(24, ge=1)
    time_scale: float = Field(0.05, ge=0)
    virtual_settle: float = Field(0.002, ge=0)

    def step_seconds(self, batch: int) -> float:
        """The duration of one decode step with ``batch`` running sequences."""
        return self.decode_step_base + self.decode_step_per_seq * batch


@dataclass
class SimulatorStats:
    """What the simulated engine did; times are simulated seconds."""

    requests: int = 0
    sequences: int = 0
    prompt_tokens: int = 0  # every request's prompt, as sent
    prefill_tokens: int = 0  # the prompt tokens actually computed (cache misses)
    cached_tokens: int = 0  # prompt tokens found in the prefix cache
    completion_tokens: int = 0
    steps: int = 0
    busy_seconds: float = 0.0
    max_running: int = 0
    max_waiting: int = 0


@dataclass(frozen=True)
class SimRequest:
    """One chat request as the simulator saw it (what a ``completion_tokens`` script receives)."""

    id: int
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    prompt_tokens: int
    arrived: float  # simulated time
    seed: int | None = None

    @property
    def last_user_content(self) -> str:
        """The text of the last user message ('' if none)."""
        return last_user_text(self.messages) or ""


@dataclass
class _Pending:
    request: SimRequest
    tokens: list[str]
    lengths: list[int]
    future: asyncio.Future[None]
    arrived: float  # time.monotonic(), or the virtual clock when time_scale == 0
    unfinished: int = 0


@dataclass
class _Sequence:
    pending: _Pending
    remaining: int


@dataclass(frozen=True)
class Stage:
    """One step of a workload's dependency chain: ``sequences`` samples of one prompt, run in parallel.

    ``prompt_tokens`` is what the prompt costs to prefill at best: its tokens that no earlier prompt can have
    left in the prefix cache (prefilled once, with n-batching or a prefix cache). ``output_tokens`` is each
    sample's length (or ``lengths``, one per sample, when they vary); ``request_n`` the most choices any one of its
    requests asks for (the simulator runs a request larger than its batch alone, so such a step holds more than
    ``max_num_seqs`` sequences).
    """

    prompt_tokens: int
    sequences: int
    output_tokens: int
    request_n: int = 1
    #: each sample's own length, when they differ (then ``sequences == len(lengths)``; ``output_tokens`` is ignored)
    lengths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.lengths and len(self.lengths) != self.sequences:
            raise ValueError(f"a stage of {self.sequences} sequences was given {len(self.lengths)} lengths")

    @property
    def tokens(self) -> int:
        """Every sample's output tokens together."""
        return sum(self.lengths) if self.lengths else self.sequences * self.output_tokens

    @property
    def longest(self) -> int:
        """The longest sample's length: the stage takes at least that many decode steps."""
        return max(self.lengths) if self.lengths else self.output_tokens


@dataclass(frozen=True)
class LowerBound:
    """The time no client can beat for a workload: the largest of three bounds, in simulated seconds."""

    work: float  # all prefill, and all decode at the best per-token cost the workload's width allows
    critical_path: float  # the longest chain of stages, each at its own best
    barrier: float  # the largest "finish every stage <= r, then one chain's remaining stages" (see lower_bound)
    decode_tokens: int
    prefill_tokens: int

    @property
    def seconds(self) -> float:
        """The bound itself."""
        return max(self.work, self.critical_path, self.barrier)


def lower_bound(config: SimulatorConfig, chains: Sequence[Sequence[Stage]]) -> LowerBound:
    """The lower bound on the simulated time to run ``chains`` (e.g. one chain of rounds per problem).

    Stages of one chain run one after another (round r + 1 needs round r); chains are independent. A step
    costs ``base + per_seq × b`` for ``b`` sequences, so a token's cost ``step(b) / b`` falls as ``b`` grows.
    A set of ``S`` sequences never has more than ``m = min(S, B)`` tokens in one step (``B = max_num_seqs``, or a
    stage's ``request_n`` if larger),
    and other sequences sharing the step only make it longer, so decoding the set's tokens takes at least
    ``tokens × step(m) / m``; every prompt is prefilled at least once. Three bounds follow:

    * work: every stage of every chain, as one set;
    * critical path: each chain alone, stage after stage, each stage as one set;
    * barrier: for each stage index r, every chain's stages up to r as one set, plus the shortest remaining
      path of stages after r: whichever chain is the last to finish its stage r still has to run the rest.
    """

    def set_seconds(stages: Sequence[Stage]) -> float:
        sequences = sum(s.sequences for s in stages)
        widest = max([config.max_num_seqs, *(s.request_n for s in stages)])
        m = max(1, min(sequences, widest))
        tokens = sum(s.tokens for s in stages)
        return sum(s.prompt_tokens for s in stages) * config.prefill_seconds_per_token + tokens * (
            config.step_seconds(m) / m
        )

    def path_seconds(stages: Sequence[Stage]) -> float:
        return sum(set_seconds([stage]) for stage in stages)

    everything = [stage for chain in chains for stage in chain]
    depth = max((len(chain) for chain in chains), default=0)
    barrier = 0.0
    for r in range(depth):
        done = [stage for chain in chains for stage in chain[: r + 1]]
        rest = min(path_seconds(chain[r + 1 :]) for chain in chains)
        barrier = max(barrier, set_seconds(done) + rest)
    return LowerBound(
        work=set_seconds(everything),
        critical_path=max((path_seconds(chain) for chain in chains), default=0.0),
        barrier=barrier,
        decode_tokens=sum(s.tokens for s in everything),
        prefill_tokens=sum(s.prompt_tokens for s in everything),
    )


def tokenize(messages: Sequence[dict[str, Any]], mode: Literal["words", "chars4"] = "words") -> list[str]:
    """The simulator's tokens for a prompt: per message a role token, then words (or 4-character pieces)."""
    tokens: list[str] = []
    for message in messages:
        tokens.append(f"<|{message.get('role', '')}|>")
        text = text_of(message.get("content"))
        if mode == "words":
            tokens.extend(text.split())
        else:
            tokens.extend(text[i : i + 4] for i in range(0, len(text), 4))
    return tokens


class _PrefixCache:
    """vLLM-style automatic prefix caching: full blocks keyed by a hash chain, evicted least recently used."""

    def __init__(self, block_size: int, capacity: int) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self._blocks: collections.OrderedDict[int, None] = collections.OrderedDict()

    def admit(self, tokens: Sequence[str]) -> int:
        """Look up and insert ``tokens``' full blocks; return how many leading tokens were already cached."""
        parent = 0
        cached = 0
        missed = False
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            # Chained: a block's key covers everything before it, so only a shared *prefix* can hit.
            parent = hash((parent, tuple(tokens[start : start + self.block_size])))
            if not missed and parent in self._blocks:
                self._blocks.move_to_end(parent)
                cached += self.block_size
                continue
            missed = True
            self._blocks[parent] = None
            self._blocks.move_to_end(parent)
            while len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)
        return cached


class SimulatorServer:
    """A vLLM-like OpenAI chat server on 127.0.0.1 whose latency comes from a continuous-batching model.

    Args:
        config: the engine's parameters (:class:`SimulatorConfig`).
        completion_tokens: optional ``f(request, choice_index) -> tokens`` for each choice's length; it is
            clipped to the request's ``max_tokens``. Default: ``max_tokens`` or ``config.default_max_tokens``.

    Serves ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (vLLM's running and waiting gauges as of the end
    of the last step, as vLLM publishes them, so adaptive concurrency has something to follow) and
    ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``: the whole text in one chunk, then the usage,
    then ``[DONE]``). Each choice's content is ``<think> tok tok … </think>`` followed by a conclusion of
    ``config.conclusion_tokens`` words naming the request and the choice, so compaction sees distinct conclusions.
    Use as ``async with SimulatorServer(config) as s``.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        completion_tokens: Callable[[SimRequest, int], int] | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.completion_tokens = completion_tokens
        self.stats = SimulatorStats()
        self.requests: list[SimRequest] = []
        #: each logged request's choice lengths, by request id
        self.completion_lengths: dict[int, list[int]] = {}
        self._cache = _PrefixCache(self.config.block_size, self.config.cache_blocks)
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._waiting_sequences = 0  # the choices of the requests in _waiting
        self._running: list[_Sequence] = []
        self._wake = asyncio.Event()
        self._virtual = 0.0  # the simulated clock when time_scale == 0
        self._clock = 0.0  # the real time at which the engine's last step ends (time_scale > 0)
        self._t0 = 0.0
        # vLLM publishes its scheduler gauges once per step, after it: what the last step ended with.
        self._gauges = (0, 0)
        # The run of decode steps in progress in real time: its planned start, one step's length and its steps.
        self._run: tuple[float, float, int] | None = None
        self._engine: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{_HOST}:{self._port}/v1"

    def sim_now(self) -> float:
        """Simulated seconds since the server started (real time / time_scale, or the virtual clock)."""
        if self.config.time_scale == 0:
            return self._virtual
        return (time.monotonic() - self._t0) / self.config.time_scale

    def reset_stats(self) -> None:
        """Zero the counters and the request log (the prefix cache is kept: call between measured phases)."""
        self.stats = SimulatorStats()
        self.requests = []
        self.completion_lengths = {}

    def clear_cache(self) -> None:
        """Empty the prefix cache."""
        self._cache = _PrefixCache(self.config.block_size, self.config.cache_blocks)

    async def start(self) -> None:
        """Bind a free port and start serving, and start the engine loop."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_get("/health", self._handle_health)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_HOST, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=4096).start()
        self._t0 = self._clock = time.monotonic()
        self._engine = asyncio.create_task(self._engine_loop(), name="simulator-engine")

    async def close(self) -> None:
        """Stop the engine and the server; waiting requests are cancelled."""
        if self._engine is not None:
            self._engine.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine
            self._engine = None
        for pending in [*self._waiting, *(s.pending for s in self._running)]:
            if not pending.future.done():
                pending.future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the engine -------------------------------------------------------------------------------------

    async def _engine_loop(self) -> None:
        config = self.config
        while True:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                self._clock = time.monotonic()  # idle until now: the next step starts now
                continue
            began = self._engine_clock()
            uncached = self._admit()
            step = config.step_seconds(len(self._running))
            if uncached >= 0:
                # An admission step: the new prompts' uncached tokens plus one decode step for everyone.
                await self._spend(uncached * config.prefill_seconds_per_token + step)
                self._decode(1)
                self._gauges = self._gauges_after_step(began)
                continue
            # Decode up to the next finish in one sleep; wake early (at a step boundary) if a request can join.
            steps = min(s.remaining for s in self._running)
            done = await self._decode_steps(steps, step)
            self._decode(done)
            if done:
                tick = step * config.time_scale if config.time_scale else step
                self._gauges = self._gauges_after_step(began + (done - 1) * tick)

    def _engine_clock(self) -> float:
        """Now on the engine's clock: the planned real time of its step boundaries, or the virtual clock."""
        return self._clock if self.config.time_scale else self._virtual

    def _gauges_after_step(self, began: float) -> tuple[int, int]:
        """The gauges at the end of a step that began at ``began``: running, and waiting sequences.

        A request that arrives during a step joins the scheduler's queue only when the next step begins, so it
        counts as waiting only from the end of that step.
        """
        # The queue is in arrival order: only its tail, what arrived since, is walked (a sum over a queue of
        # hundreds at every step cost the engine's event loop, shared with the client, ~1.5% of its time).
        waiting = self._waiting_sequences
        for pending in reversed(self._waiting):
            if pending.arrived <= began:
                break
            waiting -= len(pending.lengths)
        return len(self._running), waiting

    def _current_gauges(self) -> tuple[int, int]:
        """The gauges as vLLM's /metrics shows them now: from the end of the last step."""
        if self._run is not None:
            # Inside a run of steps nobody joins or leaves until its last step, whose end the loop records.
            began, tick, steps = self._run
            ended = min(steps - 1, math.floor((time.monotonic() - began) / tick))
            if ended >= 1:
                return self._gauges_after_step(began + (ended - 1) * tick)
        return self._gauges

    def _admit(self) -> int:
        """Move waiting requests into the batch while there is room; their uncached prompt tokens, or -1."""
        config = self.config
        uncached = -1
        while self._waiting:
            pending = self._waiting[0]
            n = len(pending.lengths)
            # A request bigger than the whole batch still runs, alone, rather than wait forever.
            if self._running and len(self._running) + n > config.max_num_seqs:
                break
            self._waiting.popleft()
            self._waiting_sequences -= n
            tokens = pending.tokens
            cached = self._cache.admit(tokens) if config.prefix_caching else 0
            # The n choices share the prompt's blocks: it is prefilled once per request.
            self.stats.prefill_tokens += len(tokens) - cached
            self.stats.cached_tokens += cached
            uncached = max(uncached, 0) + len(tokens) - cached
            pending.unfinished = n
            self._running.extend(_Sequence(pending, length) for length in pending.lengths)
        self.stats.max_running = max(self.stats.max_running, len(self._running))
        return uncached

    def _decode(self, steps: int) -> None:
        """Give every running sequence ``steps`` tokens; finish those that are done."""
        if steps <= 0:
            return
        self.stats.steps += steps
        still: list[_Sequence] = []
        for seq in self._running:
            seq.remaining -= steps
            if seq.remaining > 0:
                still.append(seq)
                continue
            seq.pending.unfinished -= 1
            if seq.pending.unfinished == 0 and not seq.pending.future.done():
                seq.pending.future.set_result(None)
        self._running = still

    async def _spend(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass, busy."""
        self.stats.busy_seconds += seconds
        if self.config.time_scale == 0:
            self._virtual += seconds
            await asyncio.sleep(0)  # let the HTTP handlers run between steps
        else:
            await self._sleep_until(self._clock + seconds * self.config.time_scale)

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until the real ``deadline`` and make it the engine's clock; only yield if it has passed.

        Steps follow each other on this planned clock, not on when the sleep happened to end: the event loop
        the simulator shares with its client may wake it late, and a real engine's steps do not stretch when
        its client is busy (only the answers reach the client later).
        """
        delay = deadline - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
        self._clock = deadline

    async def _decode_steps(self, steps: int, step: float) -> int:
        """Run up to ``steps`` decode steps of ``step`` seconds; stop after the step in progress when woken."""
        real_step = step * self.config.time_scale
        if real_step > 0:  # the gauges work out which of these steps have ended (none is recorded until the last)
            self._run = (self._clock, real_step, steps)
        try:
            return await self._run_decode_steps(steps, step, real_step)
        finally:
            self._run = None

    async def _run_decode_steps(self, steps: int, step: float, real_step: float) -> int:
        """The steps themselves (see :meth:`_decode_steps`); ``real_step`` is one step in real seconds (0: none)."""
        if len(self._running) >= self.config.max_num_seqs or step == 0:
            await self._spend(steps * step)
            return steps
        if self.config.time_scale == 0:
            if await self._arrivals_settle():
                return 0  # newcomers: admit them before decoding
            await self._spend(steps * step)
            return steps
        self._wake.clear()
        head = self._waiting[0] if self._waiting else None
        if head is not None and len(self._running) + len(head.lengths) <= self.config.max_num_seqs:
            return 0  # it arrived during the last step (its wake-up is spent): admit it at this boundary
        started = self._clock
        remaining = started + steps * real_step - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError  # running late: these steps are already due
            await asyncio.wait_for(self._wake.wait(), remaining)
        except TimeoutError:
            await self._sleep_until(started + steps * real_step)
            self.stats.busy_seconds += steps * step
            return steps
        # A request arrived: finish the step in progress, as an engine would, then admit it.
        done = min(steps, math.floor((time.monotonic() - started) / real_step) + 1)
        self._run = (started, real_step, done)  # the run ends early: the gauges must not count steps after it
        await self._sleep_until(started + done * real_step)
        self.stats.busy_seconds += done * step
        return done

    async def _arrivals_settle(self) -> bool:
        """On the virtual clock: wait out a burst of arrivals; True if any request arrived meanwhile."""
        arrived = self.stats.requests
        while True:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.virtual_settle)
            except TimeoutError:
                return self.stats.requests != arrived

    # --- HTTP -------------------------------------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        # vLLM's scheduler gauges, in sequences (vLLM runs a request of n choices as n requests). No KV-cache
        # gauge: the simulator's only capacity is max_num_seqs.
        running, waiting = self._current_gauges()
        labels = f'{{engine="0",model_name="{self.config.model}"}}'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{labels} {float(running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{labels} {float(waiting)}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _handle_models(self, request: web.Request) -> web.Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "simulator"}
        return web.json_response({"object": "list", "data": [model]})

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            messages = list(body["messages"])
            n = int(body.get("n") or 1)
            raw_max = body.get("max_tokens") or body.get("max_completion_tokens")
            max_tokens = int(raw_max) if raw_max is not None else None
            seed = int(body["seed"]) if body.get("seed") is not None else None
        except (ValueError, KeyError, TypeError) as exc:
            error = {"message": f"bad request: {exc}", "type": "invalid_request_error", "code": 400}
            return web.json_response({"error": error}, status=400)
        tokens = tokenize(messages, self.config.tokenizer)
        sim_request = SimRequest(
            id=self.stats.requests,
            messages=messages,
            n=n,
            max_tokens=max_tokens,
            prompt_tokens=len(tokens),
            arrived=self.sim_now(),
            seed=seed,
        )
        self.stats.requests += 1
        self.stats.sequences += n
        self.stats.prompt_tokens += len(tokens)
        self.requests.append(sim_request)
        lengths = [self._length(sim_request, i) for i in range(n)]
        self.completion_lengths[sim_request.id] = lengths
        arrived = time.monotonic() if self.config.time_scale else self._virtual
        pending = _Pending(sim_request, tokens, lengths, asyncio.get_running_loop().create_future(), arrived)
        self._waiting.append(pending)
        self._waiting_sequences += n
        self.stats.max_waiting = max(self.stats.max_waiting, len(self._waiting))
        self._wake.set()
        await pending.future
        self.stats.completion_tokens += sum(lengths)
        choices = [self._choice(sim_request, i, length) for i, length in enumerate(lengths)]
        usage = {
            "prompt_tokens": len(tokens),
            "completion_tokens": sum(lengths),
            "total_tokens": len(tokens) + sum(lengths),
        }
        envelope = {"id": f"chatcmpl-sim-{sim_request.id}", "created": int(time.time()), "model": self.config.model}
        if not body.get("stream"):
            return web.json_response({**envelope, "object": "chat.completion", "choices": choices, "usage": usage})
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events: list[dict[str, Any]] = [
            {
                **envelope,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": c["index"], "delta": c["message"], "finish_reason": c["finish_reason"]} for c in choices
                ],
            },
            {**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage},
        ]
        for event in events:
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _length(self, request: SimRequest, index: int) -> int:
        cap = request.max_tokens
        if self.completion_tokens is not None:
            length = self.completion_tokens(request, index)
            return max(1, min(length, cap) if cap is not None else length)
        return cap if cap is not None else self.config.default_max_tokens

    def _choice(self, request: SimRequest, index: int, length: int) -> dict[str, Any]:
        # Two tokens go to the think tags; the rest is thinking, then the conclusion (exact for length >= 3).
        conclusion_words = max(1, min(length - 2, self.config.conclusion_tokens))
        # Seeded requests get seed-named conclusions, so a rerun sends byte-identical prompts.
        name = f"s{request.seed}c{index}" if request.seed is not None else f"r{request.id}c{index}"
        label = [name, "The", "answer", "is", "\\boxed{42}."]
        conclusion = (label + ["so"] * max(0, conclusion_words - len(label)))[:conclusion_words]
        thinking = ["tok"] * max(0, length - conclusion_words - 2)
        content = " ".join(["<think>", *thinking, "</think>", *conclusion])
        return {
            "index": index,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }
