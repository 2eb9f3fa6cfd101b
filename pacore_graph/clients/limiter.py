"""``SequenceLimiter``: how many sequences a client keeps in flight, and which waiting request goes next.

A model server runs sequences, not requests: a request with ``n`` choices puts ``n`` sequences in its batch. The
limiter counts them that way, and when it is full, queues requests by priority (higher first), then by arrival.
The priority is ambient, so graphs set it without threading it through every backend
(:func:`request_priority`). Within one priority, requests go by ``order`` (lower first), then by arrival.
PaCoRe leaves the priority alone and passes as ``order`` the time a request was made, minus a head start of
:data:`LATER_ROUND_HEAD_START` per round after the first: a problem's next round overtakes requests made at most
that long before it (so a problem that reaches its synthesis while other problems' explorers are still being
sent finishes first), but requests that have waited longer go first. Serving older requests first keeps every
problem's first round moving, so the last first-round explorers start, and the run ends, sooner than when every
later round jumps the queue (measured in BENCHMARKS.md, scenario w). The ambient ``group`` names the run a
request belongs to, for routers that keep a run's requests together
(:class:`~pacore_graph.clients.balanced.BalancedBackend`'s ``prefix_affinity``).

Waiters are admitted at most :data:`ADMISSIONS_PER_TURN` per turn of the event loop. When a window opens wide
(an adaptive window's first reading can free a thousand waiters at once), every admitted request then sets up
its connection and writes its body interleaved with all the others, so none reaches the server before all are
set up; admitted in waves, the first ones are on the wire while the later ones are still being admitted, in
rank order (measured in BENCHMARKS.md, scenario w).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "ADMISSIONS_PER_TURN",
    "LATER_ROUND_HEAD_START",
    "SequenceLimiter",
    "current_request_group",
    "current_request_order",
    "current_request_priority",
    "request_priority",
]

#: seconds by which each PaCoRe round after the first is ranked ahead of the time its requests were made
LATER_ROUND_HEAD_START = 1.0

#: the most waiters admitted in one turn of the event loop; the rest go in on the next turns (see above)
ADMISSIONS_PER_TURN = 16

_PRIORITY: ContextVar[int] = ContextVar("pacore_request_priority", default=0)
_ORDER: ContextVar[int] = ContextVar("pacore_request_order", default=0)
_GROUP: ContextVar[int | None] = ContextVar("pacore_request_group", default=None)


@contextmanager
def request_priority(priority: int, order: int | None = None, group: int | None = None) -> Iterator[None]:
    """Requests started inside this block queue with ``priority`` (higher goes first; the default is 0).

    ``order`` ranks requests of equal priority before arrival does (lower goes first; the default is 0); ``group``
    names the run they belong to (see the module docstring). Either, when None, stays the enclosing block's.
    """
    priority_token = _PRIORITY.set(priority)
    order_token = _ORDER.set(order) if order is not None else None
    group_token = _GROUP.set(group) if group is not None else None
    try:
        yield
    finally:
        if group_token is not None:
            _GROUP.reset(group_token)
        if order_token is not None:
            _ORDER.reset(order_token)
        _PRIORITY.reset(priority_token)


def current_request_priority() -> int:
    """The priority set by the innermost :func:`request_priority` block, or 0."""
    return _PRIORITY.get()


def current_request_order() -> int:
    """The order set by the innermost :func:`request_priority` block that set one, or 0."""
    return _ORDER.get()


def current_request_group() -> int | None:
    """The group (a run) set by the innermost :func:`request_priority` block that set one, or None."""
    return _GROUP.get()


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int, int]  # (-priority, order, arrival): the smallest goes first
    sequences: int = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class SequenceLimiter:
    """At most ``limit`` sequences in flight; waiting requests go in by priority, then order, then arrival.

    A request larger than the limit goes in alone once nothing else is in flight, so no request waits forever.
    ``limit`` can be changed at any time (adaptive concurrency does); raising it admits waiters at once, up to
    :data:`ADMISSIONS_PER_TURN` of them, and the rest in the next turns of the event loop.
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
        self._admitted_this_turn = 0  # waiters admitted since the loop last turned (see ADMISSIONS_PER_TURN)

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
        """Hold room for ``sequences`` for the duration of the block (``priority`` defaults to the ambient one).

        A hold of no sequences (a model lookup) takes no room, never waits and is not counted as in flight: a
        window's first reading must see the client's first chat requests, not a lookup made before them.
        """
        if sequences == 0:
            yield
            return
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
            if not self._fits(head.sequences) or self._admitted_this_turn >= ADMISSIONS_PER_TURN:
                return
            heapq.heappop(self._waiters)
            if self._admitted_this_turn == 0:
                head.future.get_loop().call_soon(self._next_turn)
            self._admitted_this_turn += 1
            self._queued -= head.sequences
            self.in_flight += head.sequences
            head.future.set_result(None)

    def _next_turn(self) -> None:
        """The loop has turned since the first admission of the last wave: admit the next wave, if any fits."""
        self._admitted_this_turn = 0
        self._wake()
