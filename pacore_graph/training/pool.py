"""The message cache pool (paper §2.2): per problem, ``pool_size`` round-1 messages, generated once and kept.

The pool *is* the eval harness's round-1 pool: the same :class:`~pacore_graph.eval.pool.TrajectoryPool`, the same
JSONL file format (one entry a line, flushed and fsynced, so a kill loses only the requests in flight) and the
same key (:func:`~pacore_graph.eval.pool.pool_key`: the model, the problem's messages and the round-1 sampling
params). A pool file written by ``pacore eval`` can be given to ``pacore train build`` and the other way round; a
rerun generates only the slots that are missing.

Every request is a round-1 explorer on the original problem, sent through the shared client under
:func:`~pacore_graph.clients.limiter.request_priority` ``1``, as the graph sends round 1, so the client's adaptive
window and round priorities apply. Each stored trajectory becomes its message with the graph's compaction rules
(:func:`~pacore_graph.compaction.reduce_completion`, :func:`~pacore_graph.compaction.select`): the text after the
last ``</think>``; an empty one, or one cut off mid-thought (unless ``truncated="keep"``), is no message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pacore_graph.clients.base import ChatBackend, Completion, SamplingParams, TokenUsage
from pacore_graph.clients.limiter import request_priority
from pacore_graph.compaction import CompactionPolicy, reduce_completion, reference_text, select
from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.pool import PoolEntry, TrajectoryPool, pool_key

__all__ = ["PoolProgress", "ProblemPool", "build_pools", "message_of"]

#: The round the pool's requests belong to: round 1, so the client queues them as the graph's explorers.
POOL_ROUND = 1


@dataclass(frozen=True)
class ProblemPool:
    """One problem's pool: its key, the stored entries by slot, and each slot's message (None: no message)."""

    problem: Problem
    key: str
    entries: list[PoolEntry]
    messages: list[str | None]

    @property
    def usable(self) -> list[int]:
        """The slots that hold a message, in slot order."""
        return [slot for slot, message in enumerate(self.messages) if message is not None]


@dataclass
class PoolProgress:
    """How far pool building is: slots stored (reused or generated) of all slots, and how many were generated."""

    total: int
    done: int = 0
    generated: int = 0
    reused: int = 0
    completion_tokens: int = 0


def message_of(entry: PoolEntry, policy: CompactionPolicy) -> str | None:
    """C(ω) for one stored trajectory, by the graph's rules: its reference text, or None when compaction drops it."""
    completion = Completion(content=entry.content, reasoning=entry.reasoning, finish_reason=entry.finish_reason)
    usage = TokenUsage(prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens)
    trajectory = reduce_completion(
        completion,
        round_number=POOL_ROUND,
        index=entry.slot,
        usage=usage,
        started_at=0.0,
        seconds=0.0,
        keep_full=policy.keep == "full",
    )
    kept = select([trajectory], policy).kept
    return reference_text(kept[0], policy) if kept else None


async def build_pools(
    problems: Sequence[Problem],
    backend: ChatBackend,
    pool: TrajectoryPool,
    *,
    pool_size: int,
    params: SamplingParams,
    policy: CompactionPolicy,
    model: str | None = None,
    parallel: int = 8,
    on_progress: Callable[[PoolProgress], None] | None = None,
) -> list[ProblemPool]:
    """Fill ``pool_size`` slots of every problem's pool (only the missing ones are requested) and compact them.

    At most ``parallel`` problems are filled at once, each with all its missing slots in flight together (the
    client's window decides how many run). ``on_progress`` hears after every slot. Returns the pools in the
    problems' order.
    """
    keys = [pool_key(p.messages, params, model) for p in problems]
    progress = PoolProgress(total=len(problems) * pool_size)
    progress.reused = progress.done = sum(pool.has(k, s) for k in keys for s in range(pool_size))
    if on_progress is not None:
        on_progress(progress)
    limit = asyncio.Semaphore(parallel)

    async def slot(problem: Problem, key: str, index: int) -> PoolEntry:
        if pool.has(key, index):
            entry, _ = await pool.get(key, index, backend, problem.messages, params)
            return entry
        with request_priority(POOL_ROUND):
            entry, generated = await pool.get(key, index, backend, problem.messages, params)
        progress.done += 1
        progress.generated += generated
        progress.completion_tokens += entry.completion_tokens
        if on_progress is not None:
            on_progress(progress)
        return entry

    async def fill(problem: Problem, key: str) -> ProblemPool:
        async with limit:
            entries = list(await asyncio.gather(*(slot(problem, key, i) for i in range(pool_size))))
        return ProblemPool(problem, key, entries, [message_of(e, policy) for e in entries])

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(fill(p, k)) for p, k in zip(problems, keys, strict=True)]
    except BaseExceptionGroup as failures:  # the server went away: raise that error, not a group
        raise _first_leaf(failures) from None
    return [task.result() for task in tasks]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
