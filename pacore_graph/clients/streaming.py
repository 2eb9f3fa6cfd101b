"""Streaming: an optional backend capability, detected with its own protocol so ``ChatBackend`` stays minimal.

A backend that can stream implements ``stream_chat(messages, params)``, an async iterator of
:class:`ChatChunk` (one choice, ``n = 1``). The synthesizer uses it when the backend has it (asked with
:func:`~pacore_graph.clients.wrapper.supports_streaming`, which looks through wrappers), so the final answer can be
shown while it is generated; any other backend is called with ``chat`` as before.
:class:`pacore_graph.VLLMClient` and :class:`pacore_graph.testing.FunctionBackend` implement it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pacore_graph.clients.base import ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage

__all__ = ["ChatChunk", "StreamAccumulator", "StreamingChatBackend", "chunks_of"]


class ChatChunk(BaseModel):
    """One piece of a streamed completion: text deltas, and on the last pieces the finish reason and usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: TokenUsage | None = None


@runtime_checkable
class StreamingChatBackend(Protocol):
    """A backend that can also stream one completion as it is generated (an optional capability)."""

    def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Yield the completion of ``messages`` piece by piece; raise a ``BackendError`` on failure."""
        ...


def chunks_of(result: ChatResult) -> list[ChatChunk]:
    """A finished result as the one chunk a stream of it would have been (nothing for a result without choices)."""
    return [
        ChatChunk(
            content=completion.content,
            reasoning=completion.reasoning or "",
            finish_reason=completion.finish_reason,
            usage=result.usage,
        )
        for completion in result.completions[:1]
    ]


class StreamAccumulator:
    """Joins the chunks of one stream into the :class:`ChatResult` that ``chat`` would have returned."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage = TokenUsage()

    def add(self, chunk: ChatChunk) -> None:
        """Take one chunk into account."""
        if chunk.content:
            self._content.append(chunk.content)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def result(self, model: str | None = None) -> ChatResult:
        """The completion so far, as one ``ChatResult``."""
        completion = Completion(
            content="".join(self._content),
            reasoning="".join(self._reasoning) or None,
            finish_reason=self.finish_reason or "unknown",
        )
        return ChatResult(completions=[completion], usage=self.usage, model=model)
