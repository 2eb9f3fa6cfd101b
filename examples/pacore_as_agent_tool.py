"""PaCoRe as one tool of a tool-calling agent (a ReAct loop built with LangGraph).

The agent has two tools: ``deep_reason`` (PaCoRe on the problem it is given) and ``run_python`` (the sandboxed
code runner). The loop is the classic one: the chat model answers or asks for tools, a ``ToolNode`` runs them,
the results go back to the model. Here the agent's chat model is a small scripted stand-in (it delegates the
question to ``deep_reason`` and reports the result) so the example runs anywhere; put any tool-calling chat
model in its place (``ChatOpenAI(...).bind_tools(tools)`` and so on). PaCoRe itself runs on a real server::

    PACORE_BASE_URL=http://127.0.0.1:8000/v1 python examples/pacore_as_agent_tool.py
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from pacore_graph import ChatBackend, CompactionPolicy, SamplingParams, VLLMClient, build_pacore_graph
from pacore_graph.events import parse_event
from pacore_graph.progress import RunProgress
from pacore_graph.tools import make_code_runner_tool, make_deep_reason_tool


class DelegatingChatModel(BaseChatModel):
    """A scripted tool-calling chat model: send the user's question to ``deep_reason``, then report its answer."""

    @property
    def _llm_type(self) -> str:
        return "delegating-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> DelegatingChatModel:
        return self  # the script already knows its tools

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(content=f"After deep reasoning: {last.content}")
        else:
            question = next(m.content for m in reversed(messages) if isinstance(m, HumanMessage))
            reply = AIMessage(
                content="", tool_calls=[{"name": "deep_reason", "args": {"problem": question}, "id": "call-1"}]
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def build_agent(backend: ChatBackend, model: BaseChatModel | None = None):
    """agent ⇄ tools, until the model answers without calling a tool."""
    # A small budget for a small model, which may ramble past it: keep what it cut off rather than fail the round
    # (PaCoRe-8B's own: max_tokens=32768 and the default compaction, truncated ones dropped).
    pacore = build_pacore_graph(
        backend, [2], params=SamplingParams(max_tokens=512), compaction=CompactionPolicy(truncated="keep")
    )
    tools = [make_deep_reason_tool(pacore), make_code_runner_tool()]
    chat = (model or DelegatingChatModel()).bind_tools(tools)

    async def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await chat.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


async def ask(backend: ChatBackend) -> str:
    """Ask the agent one question; return its final message.

    Streamed rather than ``ainvoke``d so that PaCoRe's events, from inside the tool, show as plain progress lines
    on stderr (RunProgress); the last top-level ``values`` chunk is the agent's final state.
    """
    progress, state = RunProgress(rounds=1), None
    inputs = {"messages": [HumanMessage("What is 17 * 23?")]}
    async for namespace, mode, chunk in build_agent(backend).astream(
        inputs, stream_mode=["custom", "values"], subgraphs=True
    ):
        if mode == "custom" and (event := parse_event(chunk)) is not None:
            progress(event)
        elif mode == "values" and not namespace:
            state = chunk
    assert state is not None
    return str(state["messages"][-1].content)


async def main(backend: ChatBackend | None = None) -> str:
    """Run the agent; without a backend, PaCoRe uses the server at ``PACORE_BASE_URL``."""
    if backend is not None:
        return await ask(backend)
    async with VLLMClient(os.environ.get("PACORE_BASE_URL", "http://127.0.0.1:8000/v1")) as client:
        return await ask(client)


if __name__ == "__main__":
    print(asyncio.run(main()))
