"""The synthesis as a LangChain chat-model run, so LangGraph's own streams carry the answer.

LangGraph's ``stream_mode="messages"`` and ``astream_events(version="v2")`` listen to chat-model callbacks
(``on_chat_model_start``, ``on_llm_new_token`` with a ``ChatGenerationChunk``, ``on_llm_end``) on the running
node's callback manager. The backends are not LangChain models, so the synthesizer reports its call through
:class:`SynthesisRun`: the answer's text arrives as ``AIMessageChunk`` objects tagged with the ``synthesize``
node, then the whole ``AIMessage`` (with the run's usage) ends the run. Explorer calls are not reported, and
reasoning text never is: a separate reasoning field is not sent, and inline ``<think>`` text is held back by
:class:`~pacore_graph.compaction.ConclusionStream`, so the chunks add up to the answer (the conclusion).

The message id is the run's (``run-<uuid>``), as LangChain's models do, and the node returns the same
``AIMessage``, so the messages stream deduplicates it and shows each token once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, AIMessageChunk, convert_to_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
from langchain_core.runnables.config import get_async_callback_manager_for_config
from langgraph.config import get_config

from pacore_graph.compaction import ConclusionStream

__all__ = ["SYNTHESIS_RUN_NAME", "SynthesisRun", "answer_message"]

#: The name the synthesis call has in callbacks and ``astream_events`` (``event["name"]``).
SYNTHESIS_RUN_NAME = "pacore-synthesis"


def answer_message(answer: str, finish_reason: str, usage: Mapping[str, Any], message_id: str | None) -> AIMessage:
    """The answer as an ``AIMessage``: the run's token totals in ``usage_metadata``, the details in metadata."""
    return AIMessage(
        content=answer,
        id=message_id,
        usage_metadata=_usage_metadata(usage),
        response_metadata={"finish_reason": finish_reason, "usage": dict(usage)},
    )


def _usage_metadata(usage: Mapping[str, Any]) -> UsageMetadata:
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)


class SynthesisRun:
    """One chat-model run on the current node's callback manager (a no-op outside a LangGraph node)."""

    def __init__(self) -> None:
        self.message_id = f"run-{uuid.uuid4()}"
        self._manager: AsyncCallbackManagerForLLMRun | None = None
        self._conclusion = ConclusionStream()

    async def start(self, prompt: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> None:
        """Report the call's start with its prompt (as LangChain messages) and sampling params."""
        try:
            config = get_config()
        except RuntimeError:  # called outside a runnable context: nobody is listening
            return
        callbacks = get_async_callback_manager_for_config(config)
        if not callbacks.handlers:
            return  # nobody listens (plain ainvoke): skip building messages
        run_id = uuid.UUID(self.message_id.removeprefix("run-"))
        managers = await callbacks.on_chat_model_start(
            {"name": SYNTHESIS_RUN_NAME},
            [convert_to_messages([dict(m) for m in prompt])],
            run_id=run_id,
            name=SYNTHESIS_RUN_NAME,
            invocation_params=dict(params),
        )
        self._manager = managers[0]

    async def token(self, text: str) -> None:
        """Report one piece of the answer (never reasoning text)."""
        if self._manager is None or not text:
            return
        await self._send(self._conclusion.feed(text))

    async def _send(self, text: str) -> None:
        if self._manager is not None and text:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text, id=self.message_id))
            await self._manager.on_llm_new_token(text, chunk=chunk)

    async def end(self, message: AIMessage) -> None:
        """Report the finished answer: a last, empty chunk with the usage and finish reason, then the message."""
        if self._manager is None:
            return
        await self._send(self._conclusion.finish(str(message.content)))
        last = AIMessageChunk(
            content="",
            id=self.message_id,
            usage_metadata=message.usage_metadata,
            response_metadata={"finish_reason": message.response_metadata.get("finish_reason")},
            chunk_position="last",
        )
        await self._manager.on_llm_new_token("", chunk=ChatGenerationChunk(message=last))
        await self._manager.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))
        self._manager = None

    async def error(self, exc: BaseException) -> None:
        """Report that the call failed."""
        if self._manager is not None:
            await self._manager.on_llm_error(exc)
            self._manager = None
