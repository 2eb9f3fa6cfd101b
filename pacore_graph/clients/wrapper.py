"""``WrapperBackend``: the base of every backend that wraps another, so optional capabilities pass through.

A wrapper (a token meter, a request counter, a trajectory pool) changes one or two calls; everything else must
reach the wrapped backend as if the wrapper were not there. As pydantic-ai's ``WrapperModel`` does, the base holds
``wrapped`` and forwards each capability a backend may have: ``chat``, ``stream_chat``, ``count_tokens``,
``resolve_model``, the concurrency window ``limiter`` (which a :class:`~pacore_graph.BalancedBackend` reads) and
``aclose``. A subclass overrides only what it changes; a subclass that observes ``chat`` (to count usage, say)
overrides ``stream_chat`` too, or streamed requests go past it.

Optional capabilities are detected through the whole chain: :func:`supports_streaming` asks the innermost backend,
and the base's ``count_tokens`` returns None (the caller then estimates) when the wrapped backend cannot count. A
wrapper's ``stream_chat`` always works: over a backend that cannot stream it answers with one chunk (of the wrapped
backend's ``chat``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeGuard, runtime_checkable

from pacore_graph.budget import TokenCountingBackend
from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, SamplingParams
from pacore_graph.clients.limiter import SequenceLimiter
from pacore_graph.clients.streaming import ChatChunk, StreamingChatBackend, chunks_of
from pacore_graph.errors import ConfigError

__all__ = ["WrapperBackend", "supports_streaming", "unwrap"]


@runtime_checkable
class _ModelNaming(Protocol):
    async def resolve_model(self) -> str: ...


@runtime_checkable
class _Closing(Protocol):
    async def aclose(self) -> None: ...


class WrapperBackend:
    """A ``ChatBackend`` that forwards everything to ``wrapped``; subclass it and override what the wrapper changes.

    Use it as ``async with`` or call :meth:`aclose`, which closes the wrapped backend.
    """

    def __init__(self, wrapped: ChatBackend) -> None:
        self.wrapped = wrapped

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions from the wrapped backend."""
        return await self.wrapped.chat(messages, params, n=n)

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Stream from the wrapped backend; one chunk (from its ``chat``) if the chain's innermost cannot stream."""
        if supports_streaming(self.wrapped) and isinstance(self.wrapped, StreamingChatBackend):
            async for chunk in self.wrapped.stream_chat(messages, params):
                yield chunk
            return
        # The wrapped backend's chat, not self.chat: a subclass observing both calls must see this request once.
        for chunk in chunks_of(await self.wrapped.chat(messages, params)):
            yield chunk

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The wrapped backend's exact token count, or None when it cannot count (the caller estimates)."""
        if isinstance(self.wrapped, TokenCountingBackend):
            return await self.wrapped.count_tokens(messages)
        return None

    async def context_length(self) -> int | None:
        """The wrapped backend's context (see :class:`~pacore_graph.budget.ContextReportingBackend`), or None."""
        length = getattr(self.wrapped, "context_length", None)
        return await length() if callable(length) else None

    @property
    def default_max_tokens(self) -> int | None:
        """The wrapped backend's default ``max_tokens`` cap (see :mod:`pacore_graph.budget`), if it has one."""
        cap = getattr(self.wrapped, "default_max_tokens", None)
        return cap if isinstance(cap, int) else None

    async def resolve_model(self) -> str:
        """The model the wrapped backend serves; ``ConfigError`` if it cannot name one."""
        if isinstance(self.wrapped, _ModelNaming):
            return await self.wrapped.resolve_model()
        raise ConfigError(f"{self.wrapped!r} cannot name its model; pass the model name explicitly")

    @property
    def limiter(self) -> SequenceLimiter | None:
        """The wrapped backend's concurrency window, if it has one (a balancer routes by it)."""
        window = getattr(self.wrapped, "limiter", None)
        return window if isinstance(window, SequenceLimiter) else None

    async def aclose(self) -> None:
        """Close the wrapped backend, if it can be closed."""
        if isinstance(self.wrapped, _Closing):
            await self.wrapped.aclose()


def unwrap(backend: object) -> object:
    """The innermost backend under a chain of :class:`WrapperBackend`."""
    while isinstance(backend, WrapperBackend):
        backend = backend.wrapped
    return backend


def supports_streaming(backend: object) -> TypeGuard[StreamingChatBackend]:
    """Whether ``backend`` really streams: through wrappers, whether the backend they wrap does.

    Use this rather than ``isinstance(backend, StreamingChatBackend)``, which every wrapper passes.
    """
    return isinstance(unwrap(backend), StreamingChatBackend)
