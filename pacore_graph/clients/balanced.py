"""``BalancedBackend``: several model servers behind one backend, least outstanding requests first.

When every backend has a concurrency window (a :class:`~pacore_graph.VLLMClient`'s ``limiter``), requests wait
in the balancer, by priority like in a client, until some backend's window has room, and go to the backend with
the most room: a fast server frees room sooner, so it pulls more of a burst, and a slow one is not handed half
of it on arrival. Other backends get each request on arrival, on the one with the fewest sequences in flight
(a request of ``n`` choices counts ``n``). Ties go round-robin. Failures are not retried on another backend:
each backend retries on its own.

With ``prefix_affinity``, requests that share a prompt prefix go to the same backend while it has room, so its
prefix cache computes the prefix once: a PaCoRe round's K explorers share one prompt, and a problem's later
rounds share the instruction and the problem, so the key is the run (every request of one PaCoRe problem; see
:func:`~pacore_graph.clients.limiter.request_priority`'s ``group``), or the whole prompt for requests outside a
run. The first request of a key goes to the least loaded backend, which becomes the key's home; later ones go
home while its window has room (without windows: while it holds at most ``affinity_slack`` sequences more than
the least loaded backend), else to the least loaded.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Protocol, runtime_checkable

from pacore_graph.budget import TokenCountingBackend
from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, SamplingParams
from pacore_graph.clients.limiter import SequenceLimiter, current_request_group
from pacore_graph.clients.streaming import ChatChunk, StreamingChatBackend, chunks_of
from pacore_graph.errors import ConfigError

__all__ = ["BalancedBackend"]

_HOMES = 4096  # keys remembered for prefix affinity (least recently routed forgotten first)


@runtime_checkable
class _ModelNaming(Protocol):
    """A backend that can say which model it serves (e.g. a ``VLLMClient``)."""

    async def resolve_model(self) -> str: ...


class BalancedBackend:
    """Spread requests over ``backends`` (least outstanding sequences first); a ``ChatBackend`` itself.

    ``prefix_affinity`` keeps requests that share a prompt prefix on one backend while it has room (see the
    module docstring); ``affinity_slack`` is the imbalance it accepts for backends without windows.

    Also implements :class:`~pacore_graph.clients.streaming.StreamingChatBackend` (a backend that cannot stream
    answers with one chunk), ``count_tokens`` (asked of the first backend that can count) and ``resolve_model``
    (likewise). ``requests[i]`` counts the requests sent to backend ``i``. Use it as
    ``async with BalancedBackend([...]) as backend:`` or call :meth:`aclose`, which closes every backend that has
    an ``aclose``.
    """

    def __init__(
        self, backends: Sequence[ChatBackend], *, prefix_affinity: bool = False, affinity_slack: int = 64
    ) -> None:
        if not backends:
            raise ConfigError("BalancedBackend needs at least one backend")
        self.backends = list(backends)
        self.prefix_affinity = prefix_affinity
        self.affinity_slack = affinity_slack
        self._homes: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self.outstanding = [0] * len(self.backends)  # sequences in flight per backend
        self.requests = [0] * len(self.backends)
        self._next = 0  # where the round-robin tie-break starts
        windows = [getattr(backend, "limiter", None) for backend in self.backends]
        self._windows = [w for w in windows if isinstance(w, SequenceLimiter)]
        if len(self._windows) != len(windows):
            self._windows = []  # some backend has no window: route on arrival
        self._gate = SequenceLimiter(self._room())
        for window in self._windows:  # a window that grows admits requests waiting here at once
            window.on_limit_change.append(self._resize_gate)

    def __repr__(self) -> str:
        return f"BalancedBackend({self.backends!r})"

    async def __aenter__(self) -> BalancedBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every backend that can be closed."""
        for backend in self.backends:
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    def _room(self) -> int:
        """The balancer's own window: the sum of the backends' windows (they change as servers report load)."""
        return sum(w.limit for w in self._windows) or 1

    def _pick(self, n: int) -> int:
        """The backend with the most free room in its window, or without windows the fewest in flight; count ``n``."""
        if self._windows:
            scores = [-self._free(index) for index in range(len(self._windows))]
        else:
            scores = list(self.outstanding)
        low = min(scores)
        count = len(self.backends)
        for step in range(count):
            index = (self._next + step) % count
            if scores[index] == low:
                break
        self._next = (index + 1) % count
        self.outstanding[index] += n
        self.requests[index] += 1
        return index

    def _has_room(self, index: int, n: int) -> bool:
        """Whether backend ``index`` can take ``n`` more sequences without waiting (prefix affinity's test)."""
        if self._windows:
            return self._free(index) >= n
        return self.outstanding[index] - min(self.outstanding) < self.affinity_slack

    def _free(self, index: int) -> int:
        """Backend ``index``'s free room: its window less what it holds, or what was routed to it if more.

        A routed request reaches the client's window only after its first await (the model lookup, the body), so
        the window alone would show room that is already promised.
        """
        window = self._windows[index]
        return window.limit - max(window.in_flight + window.queued, self.outstanding[index])

    def _pick_for(self, n: int, key: Hashable | None) -> int:
        """``_pick``, but with prefix affinity a key goes to its home backend while that one has room."""
        if key is None:
            return self._pick(n)
        home = self._homes.get(key)
        if home is not None and self._has_room(home, n):
            self._homes.move_to_end(key)
            self.outstanding[home] += n
            self.requests[home] += 1
            return home
        index = self._pick(n)
        if home is None:
            self._homes[key] = index
            if len(self._homes) > _HOMES:
                self._homes.popitem(last=False)
        return index

    def _affinity_key(self, messages: Sequence[ChatMessage]) -> Hashable | None:
        """The request's prefix key: its PaCoRe run, else its prompt; None without prefix affinity."""
        if not self.prefix_affinity:
            return None
        group = current_request_group()
        if group is not None:
            return ("run", group)
        return ("prompt", json.dumps(list(messages), sort_keys=True, default=str))

    @asynccontextmanager
    async def _route(self, n: int, key: Hashable | None = None) -> AsyncIterator[int]:
        """Hold a backend for ``n`` sequences: wait for room in some window first, when the backends have them."""
        if not self._windows:
            index = self._pick_for(n, key)
            try:
                yield index
            finally:
                self.outstanding[index] -= n
            return
        self._gate.limit = self._room()
        self._share_backlog(n)  # this request, in case it has to wait
        try:
            async with self._gate.hold(n):
                self._share_backlog()
                index = self._pick_for(n, key)
                try:
                    yield index
                finally:
                    self.outstanding[index] -= n
                    self._gate.limit = self._room()
        finally:
            self._share_backlog()

    def _resize_gate(self) -> None:
        """Follow the backends' windows."""
        self._gate.limit = self._room()

    def _share_backlog(self, extra: int = 0) -> None:
        """Tell every window what waits here, so adaptive windows grow for demand they cannot see."""
        backlog = self._gate.queued + extra
        for window in self._windows:
            window.backlog = backlog

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions from the least loaded backend."""
        async with self._route(n, self._affinity_key(messages)) as index:
            return await self.backends[index].chat(messages, params, n=n)

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Stream one completion from the least loaded backend (one chunk if that backend cannot stream)."""
        async with self._route(1, self._affinity_key(messages)) as index:
            backend = self.backends[index]
            if isinstance(backend, StreamingChatBackend):
                async for chunk in backend.stream_chat(messages, params):
                    yield chunk
                return
            for chunk in chunks_of(await backend.chat(messages, params)):
                yield chunk

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's token count from the first backend that can count (all serve the same model), or None."""
        for backend in self.backends:
            if isinstance(backend, TokenCountingBackend):
                return await backend.count_tokens(messages)
        return None

    async def context_length(self) -> int | None:
        """The smallest context the backends report (all serve the same model), or None if one does not say."""
        lengths = [await b.context_length() if hasattr(b, "context_length") else None for b in self.backends]
        known = [length for length in lengths if isinstance(length, int)]
        return min(known) if known and len(known) == len(lengths) else None

    @property
    def default_max_tokens(self) -> int | None:
        """The smallest default ``max_tokens`` cap of the backends (see :mod:`pacore_graph.budget`), if any has one."""
        caps = [cap for b in self.backends if isinstance(cap := getattr(b, "default_max_tokens", None), int)]
        return min(caps) if caps else None

    async def resolve_model(self) -> str:
        """The model name of the first backend that can name one (a ``VLLMClient``: its own, or its server's first).

        The other backends are left as they are: each resolves its own name when it first sends a request.
        """
        for backend in self.backends:
            if isinstance(backend, _ModelNaming):
                return await backend.resolve_model()
        raise ConfigError("none of the balanced backends can name its model")
