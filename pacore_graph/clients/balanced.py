"""``BalancedBackend``: several model servers behind one backend, least outstanding requests first.

Each request goes to the backend with the fewest sequences in flight (a request of ``n`` choices counts ``n``,
since that is the load it puts on a vLLM server); ties go round-robin, so idle servers share the first requests.
A slow server keeps its requests longer, so it gets fewer new ones: no latency model is needed. Failures are not
retried on another backend: each backend (e.g. a :class:`~pacore_graph.VLLMClient`) retries on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Protocol, runtime_checkable

from pacore_graph.budget import TokenCountingBackend
from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, SamplingParams
from pacore_graph.clients.streaming import ChatChunk, StreamingChatBackend
from pacore_graph.errors import ConfigError

__all__ = ["BalancedBackend"]


@runtime_checkable
class _ModelNaming(Protocol):
    """A backend that can say which model it serves (e.g. a ``VLLMClient``)."""

    async def resolve_model(self) -> str: ...


class BalancedBackend:
    """Spread requests over ``backends`` (least outstanding sequences first); a ``ChatBackend`` itself.

    Also implements :class:`~pacore_graph.clients.streaming.StreamingChatBackend` (a backend that cannot stream
    answers with one chunk), ``count_tokens`` (asked of the first backend that can count) and ``resolve_model``
    (likewise). ``requests[i]`` counts the requests sent to backend ``i``. Use it as
    ``async with BalancedBackend([...]) as backend:`` or call :meth:`aclose`, which closes every backend that has
    an ``aclose``.
    """

    def __init__(self, backends: Sequence[ChatBackend]) -> None:
        if not backends:
            raise ConfigError("BalancedBackend needs at least one backend")
        self.backends = list(backends)
        self.outstanding = [0] * len(self.backends)  # sequences in flight per backend
        self.requests = [0] * len(self.backends)
        self._next = 0  # where the round-robin tie-break starts

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

    def _acquire(self, n: int) -> int:
        """Pick the least loaded backend and count ``n`` sequences on it."""
        low = min(self.outstanding)
        count = len(self.backends)
        for step in range(count):
            index = (self._next + step) % count
            if self.outstanding[index] == low:
                break
        self._next = (index + 1) % count
        self.outstanding[index] += n
        self.requests[index] += 1
        return index

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions from the least loaded backend."""
        index = self._acquire(n)
        try:
            return await self.backends[index].chat(messages, params, n=n)
        finally:
            self.outstanding[index] -= n

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Stream one completion from the least loaded backend (one chunk if that backend cannot stream)."""
        index = self._acquire(1)
        backend = self.backends[index]
        try:
            if isinstance(backend, StreamingChatBackend):
                async for chunk in backend.stream_chat(messages, params):
                    yield chunk
                return
            result = await backend.chat(messages, params)
            for completion in result.completions[:1]:
                yield ChatChunk(
                    content=completion.content,
                    reasoning=completion.reasoning or "",
                    finish_reason=completion.finish_reason,
                    usage=result.usage,
                )
        finally:
            self.outstanding[index] -= 1

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's token count from the first backend that can count (all serve the same model), or None."""
        for backend in self.backends:
            if isinstance(backend, TokenCountingBackend):
                return await backend.count_tokens(messages)
        return None

    async def resolve_model(self) -> str:
        """The model name of the first backend that can name one (a ``VLLMClient``: its own, or its server's first).

        The other backends are left as they are: each resolves its own name when it first sends a request.
        """
        for backend in self.backends:
            if isinstance(backend, _ModelNaming):
                return await backend.resolve_model()
        raise ConfigError("none of the balanced backends can name its model")
