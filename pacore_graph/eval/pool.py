"""Round-1 pool reuse: the paper's evaluation trick, as a backend wrapper, with no change to the graphs.

Round 1 of every PaCoRe schedule (and every sample of self-consistency) is K_1 independent samples of the
*original* problem. So a pool of first-round trajectories per problem can be generated once, and each run of
each schedule draws its K_1 from it: a scaling curve over several schedules then pays for round 1 once.

* :class:`TrajectoryPool` holds the trajectories, keyed by the problem's messages and the sampling params
  (seed excluded), slot by slot; it is filled on demand and persisted as JSONL (flushed and fsynced per line).
* :class:`PoolBackend` wraps the real backend for one run of one graph on one problem. A request whose
  messages equal the problem's original messages is answered from the pool, drawing slots without replacement
  in a seeded order; every other request (syntheses, later rounds) goes to the real backend.

The usage of a pooled trajectory is the usage recorded when it was generated, so effective TTC counts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage
from pacore_graph.clients.streaming import ChatChunk, chunks_of
from pacore_graph.clients.wrapper import WrapperBackend
from pacore_graph.errors import ConfigError
from pacore_graph.eval.jsonl import append_record, read_records

__all__ = ["CountingBackend", "EvalCounters", "PoolBackend", "PoolEntry", "TrajectoryPool", "pool_key", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A seed from ``parts`` that is the same in every process (``hash()`` of a str is not)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def pool_key(messages: Sequence[ChatMessage], params: SamplingParams, model: str | None = None) -> str:
    """Which pool a request draws from: the model, the messages and the sampling params (the seed excluded)."""
    payload = {
        "model": model,
        "messages": [dict(m) for m in messages],
        "params": params.model_dump(mode="json", exclude={"seed"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class PoolEntry(BaseModel):
    """One stored round-1 trajectory: its pool, its slot, the completion and what it cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    slot: int
    content: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class EvalCounters:
    """What an evaluation really asked of the model server, and what the pool saved."""

    requests: int = 0  # requests sent to the real backend
    generated_tokens: int = 0  # completion tokens the real backend produced
    pool_served: int = 0  # round-1 trajectories answered from the pool
    pool_generated: int = 0  # of those, how many had to be generated first (the rest were reused)


class TrajectoryPool:
    """Round-1 trajectories by (pool key, slot), filled on demand and appended to a JSONL file if given."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[tuple[str, int], PoolEntry] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[PoolEntry]] = {}
        self.loaded = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        for entry in read_records(path, PoolEntry, "a pool entry; delete the file"):
            self._entries[(entry.key, entry.slot)] = entry
        self.loaded = len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self, key: str) -> list[PoolEntry]:
        """The stored entries of pool ``key``, by slot."""
        return sorted((e for (k, _), e in self._entries.items() if k == key), key=lambda e: e.slot)

    def has(self, key: str, slot: int) -> bool:
        """Whether slot ``slot`` of pool ``key`` is already generated."""
        return (key, slot) in self._entries

    async def get(
        self, key: str, slot: int, backend: ChatBackend, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> tuple[PoolEntry, bool]:
        """The entry at ``slot``, generating (and persisting) it first if needed; True when it was generated.

        Concurrent callers asking for the same missing slot share one request.
        """
        slot_id = (key, slot)
        if slot_id in self._entries:
            return self._entries[slot_id], False
        pending = self._pending.get(slot_id)
        if pending is not None:
            return await asyncio.shield(pending), False
        future: asyncio.Future[PoolEntry] = asyncio.get_running_loop().create_future()
        self._pending[slot_id] = future
        try:
            # A seeded eval gives every slot its own seed, so slots are distinct samples.
            slot_params = params if params.seed is None else params.model_copy(update={"seed": params.seed + slot})
            result = await backend.chat(messages, slot_params)
            if not result.completions:
                raise ConfigError("the backend returned no completion for a round-1 request")
            completion = result.completions[0]
            entry = PoolEntry(
                key=key,
                slot=slot,
                content=completion.content,
                reasoning=completion.reasoning,
                finish_reason=completion.finish_reason,
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
            )
            self._entries[slot_id] = entry
            self._append(entry)
            future.set_result(entry)
            return entry, True
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a future nobody awaits logs nothing
            raise
        finally:
            del self._pending[slot_id]

    def _append(self, entry: PoolEntry) -> None:
        if self.path is not None:
            append_record(self.path, entry)


class CountingBackend(WrapperBackend):
    """Forwards to a backend and counts requests and generated completion tokens (streamed ones too)."""

    def __init__(self, inner: ChatBackend, counters: EvalCounters) -> None:
        super().__init__(inner)
        self.counters = counters

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Forward the request and count it."""
        result = await self.wrapped.chat(messages, params, n=n)
        self.counters.requests += 1
        self.counters.generated_tokens += result.usage.completion_tokens
        return result

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Forward the stream and count it once it answered (its usage comes with its last chunks)."""
        answered = False
        usage = TokenUsage()
        try:
            async for chunk in super().stream_chat(messages, params):
                answered = True
                usage = chunk.usage or usage
                yield chunk
        finally:  # a stream cut short still spent what it reported
            if answered:
                self.counters.requests += 1
            self.counters.generated_tokens += usage.completion_tokens


class PoolBackend(WrapperBackend):
    """A backend for one run: round-1 requests come from the pool, everything else from ``inner``.

    ``model`` names the model behind ``inner``, so a pool file shared across servers never mixes models.
    ``draw_seed`` orders the ``pool_size`` slots; this run takes them in that order, without replacement. A run
    that needs more round-1 trajectories than ``pool_size`` fails with :class:`ConfigError`. Every other
    capability of ``inner`` (streaming, token counting, ...) passes through.
    """

    def __init__(
        self,
        inner: ChatBackend,
        pool: TrajectoryPool,
        problem_messages: Sequence[ChatMessage],
        *,
        pool_size: int,
        draw_seed: int,
        model: str | None = None,
        counters: EvalCounters | None = None,
    ) -> None:
        super().__init__(inner)
        self.pool = pool
        self.round1 = [dict(m) for m in problem_messages]
        self.pool_size = pool_size
        self.model = model
        self.order = random.Random(draw_seed).sample(range(pool_size), pool_size)
        self.counters = counters or EvalCounters()
        self.drawn = 0
        self.served = 0
        self.generated = 0
        self.keys: list[str] = []  # the pools this run drew from, in order

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Answer a round-1 request from the pool (as one chunk); stream any other request from ``inner``."""
        if [dict(m) for m in messages] == self.round1:
            for chunk in chunks_of(await self.chat(messages, params)):
                yield chunk
            return
        async for chunk in super().stream_chat(messages, params):
            yield chunk

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Answer a round-1 request from the pool; forward any other request."""
        if [dict(m) for m in messages] != self.round1:
            return await self.wrapped.chat(messages, params, n=n)
        if self.drawn + n > self.pool_size:
            raise ConfigError(
                f"this run needs more than {self.pool_size} round-1 trajectories of one problem, the pool size; "
                "raise --pool-size"
            )
        slots = self.order[self.drawn : self.drawn + n]
        self.drawn += n
        key = pool_key(messages, params, self.model)
        if key not in self.keys:
            self.keys.append(key)
        # The draws of one request are independent slots: generate the missing ones concurrently.
        got = await asyncio.gather(*(self.pool.get(key, slot, self.wrapped, messages, params) for slot in slots))
        completions: list[Completion] = []
        usage = TokenUsage()
        for entry, generated in got:
            completions.append(
                Completion(content=entry.content, reasoning=entry.reasoning, finish_reason=entry.finish_reason)
            )
            usage = usage + TokenUsage(prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens)
            self.served += 1
            self.counters.pool_served += 1
            if generated:
                self.generated += 1
                self.counters.pool_generated += 1
        return ChatResult(completions=completions, usage=usage)
