"""``LangChainBackend``: any LangChain ``BaseChatModel`` as a PaCoRe backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages

from pacore_graph.clients.base import ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage, ToolCall

__all__ = ["LangChainBackend"]


class LangChainBackend:
    """Adapts a LangChain chat model to :class:`~pacore_graph.clients.base.ChatBackend`.

    Sampling params are bound with ``model.bind(...)`` (temperature, top_p, max_tokens, seed, stop, the penalties
    and ``extra``), which the OpenAI-style chat models accept; ``n`` completions are ``n`` concurrent calls.
    The reasoning text is read from ``additional_kwargs["reasoning_content"]`` or ``["reasoning"]``. A run's
    tools arrive in ``extra`` (``tools``, ``tool_choice``) and are bound the same way, as ``bind_tools`` binds
    them for OpenAI-style models; the reply's ``tool_calls`` become the completion's.
    """

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions through the wrapped chat model."""
        kwargs: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, **params.extra}
        for key in ("max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty"):
            value = getattr(params, key)
            if value is not None:
                kwargs[key] = value
        runnable = self.model.bind(**kwargs)
        lc_messages = convert_to_messages([dict(m) for m in messages])
        replies = await asyncio.gather(*(runnable.ainvoke(lc_messages) for _ in range(n)))
        completions = [_completion(reply) for reply in replies]
        usage = sum((_usage(reply) for reply in replies), TokenUsage())
        return ChatResult(completions=completions, usage=usage)


def _completion(reply: BaseMessage) -> Completion:
    reasoning = reply.additional_kwargs.get("reasoning_content") or reply.additional_kwargs.get("reasoning")
    finish = reply.response_metadata.get("finish_reason") or reply.response_metadata.get("stop_reason") or "stop"
    calls = reply.tool_calls if isinstance(reply, AIMessage) else []
    return Completion(
        content=reply.text if isinstance(reply.text, str) else str(reply.content),
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=str(finish),
        tool_calls=[
            ToolCall(id=call.get("id") or f"call_{i}", name=call["name"], arguments=json.dumps(call["args"]))
            for i, call in enumerate(calls)
        ],
    )


def _usage(reply: BaseMessage) -> TokenUsage:
    meta = reply.usage_metadata if isinstance(reply, AIMessage) else None
    if not meta:
        return TokenUsage()
    return TokenUsage(prompt_tokens=meta.get("input_tokens", 0), completion_tokens=meta.get("output_tokens", 0))
