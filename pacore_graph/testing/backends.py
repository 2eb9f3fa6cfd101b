"""In-process fake backends for fast tests of graphs built on pacore-graph."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pacore_graph.clients.base import ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage
from pacore_graph.clients.streaming import ChatChunk, tool_call_deltas

__all__ = ["BackendCall", "FunctionBackend"]

Reply = str | Completion | ChatResult
ReplyFunction = Callable[[list[dict[str, Any]], SamplingParams], Reply | Awaitable[Reply]]


@dataclass(frozen=True)
class BackendCall:
    """One recorded call: the messages and params the backend was asked to sample from."""

    messages: list[dict[str, Any]]
    params: SamplingParams
    n: int

    @property
    def last_user_content(self) -> str:
        """The content of the last user message."""
        return next(str(m.get("content")) for m in reversed(self.messages) if m.get("role") == "user")


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


class FunctionBackend:
    """A :class:`~pacore_graph.clients.base.ChatBackend` that answers with a Python function.

    The function gets ``(messages, params)`` and returns a string (the content), a ``Completion``, or a full
    ``ChatResult``; it may be async. Usage is counted in whitespace-separated words unless a ``ChatResult`` is
    returned. Every call is recorded in :attr:`calls`::

        backend = FunctionBackend(lambda messages, params: "<think>hm</think>The answer is 4.")
        graph = build_pacore_graph(backend, "3,2")
    """

    def __init__(self, function: ReplyFunction) -> None:
        self.function = function
        self.calls: list[BackendCall] = []

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Call the function ``n`` times and wrap its replies."""
        copied = [dict(m) for m in messages]
        self.calls.append(BackendCall(messages=copied, params=params, n=n))
        completions: list[Completion] = []
        usage = TokenUsage()
        for _ in range(n):
            reply = self.function(copied, params)
            if inspect.isawaitable(reply):
                reply = await reply
            if isinstance(reply, ChatResult):
                completions.extend(reply.completions)
                usage = usage + reply.usage
                continue
            completion = reply if isinstance(reply, Completion) else Completion(content=reply)
            completions.append(completion)
            usage = usage + TokenUsage(
                prompt_tokens=sum(_words(str(m.get("content"))) for m in copied),
                completion_tokens=max(1, _words(completion.content) + _words(completion.reasoning)),
            )
        return ChatResult(completions=completions, usage=usage)

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Answer as :meth:`chat` does (one recorded call), then yield the reply word by word, as a server would."""
        result = await self.chat(messages, params)
        completion = result.completions[0]
        for piece in re.findall(r"\S*\s*", completion.reasoning or ""):
            if piece:
                yield ChatChunk(reasoning=piece)
        for piece in re.findall(r"\S*\s*", completion.content):
            if piece:
                yield ChatChunk(content=piece)
        calls = tool_call_deltas(completion.tool_calls)
        yield ChatChunk(finish_reason=completion.finish_reason, usage=result.usage, tool_calls=calls)
