"""Tools through the proxy, end to end over real HTTP: the openai SDK (plain and streamed), bad tools refused before
anything goes upstream, and real agent loops (LangChain's ``create_agent`` over ``ChatOpenAI``, pydantic-ai's
``Agent``) that finish a task only the tool's result can answer, against the fake server scripted to call tools."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from pacore_graph import VLLMClient
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

#: The tool's secret: no model can know it without calling the tool.
SECRET = "7F3K-QX"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_code",
        "description": "The access code of a person.",
        "parameters": {"type": "object", "properties": {"person": {"type": "string"}}, "required": ["person"]},
    },
}


def agent_script(request: FakeRequest) -> FakeReply:
    """Before the tool ran, every trajectory calls ``lookup_code``; after, it answers from the tool's result."""
    tool_names = [tool["function"]["name"] for tool in request.body.get("tools", [])]
    results = [m for m in request.messages if m.get("role") == "tool"]
    if results:
        return FakeReply(content=f"<think>the tool said so</think>The access code is {results[-1]['content']}.")
    assert "lookup_code" in tool_names, "the tools must reach every upstream request"
    return FakeReply(
        content="<think>I need the code</think>",
        tool_calls=[{"name": "lookup_code", "arguments": {"person": "Ada"}}],
        finish_reason="tool_calls",
    )


@contextlib.asynccontextmanager
async def stack(script=agent_script) -> AsyncIterator[tuple[FakeOpenAIServer, PaCoReProxy]]:
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            async with PaCoReProxy(client, ProxySettings(port=0, shutdown_grace=2.0)) as proxy:
                yield server, proxy


@contextlib.asynccontextmanager
async def sdk(proxy: PaCoReProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
    try:
        yield client
    finally:
        await client.close()


QUESTION = [{"role": "user", "content": "What is Ada's access code?"}]


async def test_the_answer_is_the_synthesis_tool_calls_with_finish_reason_tool_calls():
    async with stack() as (server, proxy), sdk(proxy) as client:
        response = await client.chat.completions.create(
            model="pacore-low", messages=QUESTION, tools=[LOOKUP], tool_choice="auto", parallel_tool_calls=False
        )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "lookup_code"
    assert json.loads(call.function.arguments) == {"person": "Ada"}
    assert len(server.requests) == 5  # pacore-low: 4 explorers and the synthesis, each with the tools
    assert all(r.body["parallel_tool_calls"] is False and r.body["tool_choice"] == "auto" for r in server.requests)
    assert server.requests[-1].last_user_content.count("Proposed tool call (not executed): lookup_code") == 4


async def test_streamed_tool_calls_come_in_openai_delta_format():
    async with stack() as (_, proxy), sdk(proxy) as client:
        stream = await client.chat.completions.create(
            model="pacore-low", messages=QUESTION, tools=[LOOKUP], stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    (delta,) = deltas
    (call,) = delta.tool_calls
    assert call.index == 0 and call.id and call.type == "function" and call.function.name == "lookup_code"
    assert json.loads(call.function.arguments) == {"person": "Ada"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_a_conversation_that_ends_in_a_tool_result_gets_a_text_answer():
    turns = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup_code", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": SECRET},
    ]
    async with stack() as (server, proxy), sdk(proxy) as client:
        response = await client.chat.completions.create(model="pacore-low", messages=turns, tools=[LOOKUP])
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content == f"The access code is {SECRET}."
    assert response.choices[0].message.tool_calls is None
    assert server.requests[-1].messages[1:] == turns[1:]  # the tool turns stay after the replaced user message


BROKEN_SCHEMA = {"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}
BAD = [
    ({"tools": [BROKEN_SCHEMA]}, "not a valid JSON schema"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "name"),
    ({"tools": [LOOKUP], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "'get_time'"),
    ({"tools": [LOOKUP], "tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": "required"}, "without tools"),
    ({"tools": [LOOKUP], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
]


@pytest.mark.parametrize(("fields", "message"), BAD, ids=[m for _, m in BAD])
async def test_bad_tools_are_a_400_naming_the_problem_and_nothing_goes_upstream(fields, message):
    async with stack() as (server, proxy), sdk(proxy) as client:
        with pytest.raises(openai.BadRequestError, match=message) as caught:
            await client.chat.completions.create(model="pacore-low", messages=QUESTION, **fields)
        with pytest.raises(openai.BadRequestError, match=message):
            stream = await client.chat.completions.create(model="pacore-low", messages=QUESTION, stream=True, **fields)
            async for _ in stream:
                pass
    assert caught.value.status_code == 400
    assert server.requests == []


# -- real agent loops ------------------------------------------------------------------------------


async def test_a_langchain_agent_over_chatopenai_finishes_a_task_that_needs_the_tool():
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    looked_up: list[str] = []

    @tool
    def lookup_code(person: str) -> str:
        """The access code of a person."""
        looked_up.append(person)
        return SECRET

    async with stack() as (server, proxy), httpx.AsyncClient() as http:  # closed here, not at interpreter exit
        model = ChatOpenAI(
            base_url=proxy.base_url, api_key="unused", model="pacore-low", max_retries=0, http_async_client=http
        )
        agent = create_agent(model, [lookup_code])
        state = await agent.ainvoke({"messages": [{"role": "user", "content": "What is Ada's access code?"}]})
    assert looked_up == ["Ada"]
    assert state["messages"][-1].content == f"The access code is {SECRET}."
    assert len(server.requests) == 10  # two PaCoRe runs of 4 explorers and a synthesis: call, then answer


async def test_a_pydantic_ai_agent_with_a_tool_finishes_a_task_that_needs_the_tool():
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async with stack() as (_, proxy), sdk(proxy) as client:
        model = OpenAIChatModel("pacore-low", provider=OpenAIProvider(openai_client=client))
        agent = Agent(model)
        looked_up: list[str] = []

        @agent.tool_plain
        def lookup_code(person: str) -> str:
            """The access code of a person."""
            looked_up.append(person)
            return SECRET

        result = await agent.run("What is Ada's access code?")
        streamed_text = ""
        async with agent.run_stream("What is Ada's access code?") as run:
            async for text in run.stream_text():
                streamed_text = text
    assert looked_up == ["Ada", "Ada"]
    assert result.output == f"The access code is {SECRET}."
    assert streamed_text == f"The access code is {SECRET}."
