"""``SequenceLimiter``: how many sequences a client keeps in flight, and which waiting request goes next.

A model server runs sequences, not requests: a request with ``n`` choices puts ``n`` sequences in its batch. The
limiter counts them that way, and when it is full, queues requests by priority (higher first), then by arrival.
The priority is ambient, so graphs set it without threading it through every backend: PaCoRe runs each round
under :func:`request_priority` with the round's number, so when many problems share one client, a problem's
later rounds (and its synthesis) overtake other problems' first rounds and it finishes sooner. Among requests of
one priority, an ``order`` (PaCoRe passes when its run started) goes before arrival: the problem that started
first is served first, so problems finish in the order they started rather than all together at the end.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["SequenceLimiter", "current_request_order", "current_request_priority", "request_priority"]

_PRIORITY: ContextVar[int] = ContextVar("pacore_request_priority", default=0)
_ORDER: ContextVar[int] = ContextVar("pacore_request_order", default=0)


@contextmanager
def request_priority(priority: int, order: int | None = None) -> Iterator[None]:
    """Requests started inside this block queue with ``priority`` (higher goes first; the default is 0).

    ``order`` breaks ties among equal priorities before arrival does (lower goes first; the default is 0, or the
    enclosing block's): PaCoRe passes when its run started, so of two problems in the same round, the older one's
    requests go first.
    """
    token = _PRIORITY.set(priority)
    order_token = _ORDER.set(order) if order is not None else None
    try:
        yield
    finally:
        _PRIORITY.reset(token)
        if order_token is not None:
            _ORDER.reset(order_token)


def current_request_priority() -> int:
    """The priority set by the innermost :func:`request_priority` block, or 0."""
    return _PRIORITY.get()


def current_request_order() -> int:
    """The order set by the innermost :func:`request_priority` block that set one, or 0."""
    return _ORDER.get()


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int, int]  # (-priority, order, arrival): the smallest goes first
    sequences: int = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class SequenceLimiter:
    """At most ``limit`` sequences in flight; waiting requests go in by priority, then order, then arrival.

    A request larger than the limit goes in alone once nothing else is in flight, so no request waits forever.
    ``limit`` can be changed at any time (adaptive concurrency does); raising it admits waiters at once.
    """

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self.in_flight = 0
        #: sequences waiting in front of this limiter, e.g. at a BalancedBackend: demand it cannot see itself
        self.backlog = 0
        #: called after every change of ``limit`` (a BalancedBackend resizes its own window from them)
        self.on_limit_change: list[Callable[[], None]] = []
        #: called when a request has to wait for room (an adaptive window takes a reading sooner)
        self.on_queue: list[Callable[[], None]] = []
        self._waiters: list[_Waiter] = []
        self._queued = 0  # kept, not summed: read on every request by a balancer
        self._arrivals = itertools.count()

    @property
    def limit(self) -> int:
        """The most sequences in flight at once."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        changed = max(1, value) != self._limit
        self._limit = max(1, value)
        self._wake()
        if changed:
            for callback in self.on_limit_change:
                callback()

    @property
    def queued(self) -> int:
        """Sequences of the requests waiting for room."""
        return self._queued

    @asynccontextmanager
    async def hold(self, sequences: int = 1, priority: int | None = None) -> AsyncIterator[None]:
        """Hold room for ``sequences`` for the duration of the block (``priority`` defaults to the ambient one)."""
        await self._acquire(sequences, current_request_priority() if priority is None else priority)
        try:
            yield
        finally:
            self._release(sequences)

    def _fits(self, sequences: int) -> bool:
        return self.in_flight == 0 or self.in_flight + sequences <= self._limit

    async def _acquire(self, sequences: int, priority: int) -> None:
        if not self._waiters and self._fits(sequences):
            self.in_flight += sequences
            return
        rank = (-priority, current_request_order(), next(self._arrivals))
        waiter = _Waiter(rank, sequences, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, waiter)
        self._queued += sequences
        for callback in self.on_queue:
            callback()
        self._wake()  # it may outrank a head that does not fit, and fit itself
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(sequences)  # admitted, then cancelled before it could use the room
            else:
                self._queued -= sequences
                waiter.future.cancel()  # its heap entry is skipped, and whoever is behind it may now fit
                self._wake()
            raise

    def _release(self, sequences: int) -> None:
        self.in_flight -= sequences
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                heapq.heappop(self._waiters)
                continue
            if not self._fits(head.sequences):
                return
            heapq.heappop(self._waiters)
            self._queued -= head.sequences
            self.in_flight += head.sequences
            head.future.set_result(None)
