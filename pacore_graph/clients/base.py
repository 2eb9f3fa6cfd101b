"""The one small protocol every model backend implements, and the data it exchanges."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatBackend",
    "ChatMessage",
    "ChatResult",
    "Completion",
    "SamplingParams",
    "TokenUsage",
    "ToolCall",
]

#: A chat message in OpenAI form: at least ``role`` and ``content``; other keys (name, tool_calls, ...)
#: are passed through untouched.
ChatMessage = Mapping[str, Any]


class SamplingParams(BaseModel):
    """Sampling parameters for one chat request.

    The defaults are the PaCoRe reference's: temperature 1.0, top_p 1.0, and no max_tokens (the server
    fills up to its context length); the OpenAI penalties are sent only when set. ``extra`` is merged into the
    request body as is, for server-specific fields such as vLLM's ``top_k``, ``min_p`` or ``repetition_penalty``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    extra: dict[str, Any] = Field(default_factory=dict)

    def with_seed_offset(self, offset: int) -> SamplingParams:
        """Return these params with ``seed + offset``, so parallel samples of a seeded run differ."""
        if self.seed is None:
            return self
        return self.model_copy(update={"seed": self.seed + offset})


class TokenUsage(BaseModel):
    """Token counts reported by the server for one request (all its choices together)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "abort", "unknown"]


class ToolCall(BaseModel):
    """One tool call a model proposed: the call's id, the function's name and its arguments as JSON text.

    ``arguments`` is kept as the model wrote it (OpenAI's wire form), even when it is not valid JSON.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    arguments: str = "{}"

    def openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``message.tool_calls`` form."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_openai(cls, data: Mapping[str, Any]) -> ToolCall:
        """Read one entry of OpenAI's ``message.tool_calls`` (raises ``KeyError``/``TypeError`` if malformed)."""
        function = data["function"]
        arguments = function.get("arguments")
        return cls(
            id=str(data.get("id") or ""),
            name=str(function["name"]),
            arguments=arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
        )


class Completion(BaseModel):
    """One sampled choice: its text, the separate reasoning text if the server split it off, why it ended, and
    the tool calls it proposed (when the request carried tools)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatResult(BaseModel):
    """What a backend returns for one request: ``n`` completions and the request's usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    completions: list[Completion]
    usage: TokenUsage = TokenUsage()
    model: str | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that can sample chat completions.

    One required coroutine. Implementations: :class:`pacore_graph.VLLMClient` (OpenAI-compatible HTTP),
    :class:`pacore_graph.LangChainBackend` (any LangChain chat model) and
    :class:`pacore_graph.testing.FunctionBackend` (a Python function, for tests).
    """

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions of ``messages``; raise a :class:`~pacore_graph.errors.BackendError` on failure."""
        ...
