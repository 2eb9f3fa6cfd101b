"""Streaming: an optional backend capability, detected with its own protocol so ``ChatBackend`` stays minimal.

A backend that can stream implements ``stream_chat(messages, params)``, an async iterator of
:class:`ChatChunk` (one choice, ``n = 1``). The synthesizer uses it when the backend has it (asked with
:func:`~pacore_graph.clients.wrapper.supports_streaming`, which looks through wrappers), so the final answer can be
shown while it is generated; any other backend is called with ``chat`` as before.
:class:`pacore_graph.VLLMClient` and :class:`pacore_graph.testing.FunctionBackend` implement it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.clients.base import ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage, ToolCall

__all__ = ["ChatChunk", "StreamAccumulator", "StreamingChatBackend", "chunks_of", "tool_call_deltas"]


class ChatChunk(BaseModel):
    """One piece of a streamed completion: text deltas, and on the last pieces the finish reason and usage.

    ``tool_calls`` holds tool-call deltas in OpenAI's stream form (``{"index", "id", "function": {"name",
    "arguments"}}``, the arguments in pieces); :class:`StreamAccumulator` joins them by ``index``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


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
            tool_calls=tool_call_deltas(completion.tool_calls),
        )
        for completion in result.completions[:1]
    ]


def tool_call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Whole tool calls as the stream deltas that carry them (one delta per call, arguments in one piece)."""
    return [{"index": i, "type": "function", **call.openai()} for i, call in enumerate(calls)]


class StreamAccumulator:
    """Joins the chunks of one stream into the :class:`ChatResult` that ``chat`` would have returned."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage = TokenUsage()
        self._calls: dict[int, dict[str, Any]] = {}  # tool calls by their stream index

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
        for delta in chunk.tool_calls:
            index = delta.get("index", len(self._calls))
            blank = {"id": "", "name": "", "arguments": ""}
            call = self._calls.setdefault(index if isinstance(index, int) else 0, blank)
            function = delta.get("function")
            if not isinstance(function, dict):
                function = {}
            if delta.get("id"):
                call["id"] = str(delta["id"])
            if function.get("name") and not call["name"]:
                call["name"] = str(function["name"])  # sent whole, in the call's first delta (vLLM, OpenAI)
            if isinstance(function.get("arguments"), str):
                call["arguments"] += function["arguments"]

    def result(self, model: str | None = None) -> ChatResult:
        """The completion so far, as one ``ChatResult``."""
        completion = Completion(
            content="".join(self._content),
            reasoning="".join(self._reasoning) or None,
            finish_reason=self.finish_reason or "unknown",
            tool_calls=[
                ToolCall(id=call["id"], name=call["name"], arguments=call["arguments"] or "{}")
                for _, call in sorted(self._calls.items())
            ],
        )
        return ChatResult(completions=[completion], usage=self.usage, model=model)
