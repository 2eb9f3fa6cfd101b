"""The Responses API (``POST /v1/responses``): the openai SDK's ``responses.create``/``stream``/``parse`` → proxy →
fake server, real HTTP; and the conversion of input items and tool calls to and from the chat path."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from pacore_graph import VLLMClient
from pacore_graph.errors import ConfigError
from pacore_graph.result import PaCoReResult, RunUsage
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.server.responses import ResponseEvents, chat_body, output_items, response_body
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

PROBLEM = "What is 17 * 23?"
ANSWER = "The final answer is 391, since 17 times 23 is 391."
MARKER = "Reference Responses:"
LOW = {"pacore": {"schedule": 2}}


def is_synthesis(request: FakeRequest) -> bool:
    return MARKER in (request.last_user_content or "")


def script(request: FakeRequest) -> FakeReply:
    if is_synthesis(request):
        if "response_format" in request.body:
            return FakeReply(content='{"value": 391}', prompt_tokens=50, completion_tokens=5)
        return FakeReply(content=f"<think>weighing</think>{ANSWER}", prompt_tokens=50, completion_tokens=9)
    return FakeReply(
        content=f"<think>work</think>conclusion {request.index}: 391", prompt_tokens=10, completion_tokens=20
    )


@contextlib.asynccontextmanager
async def proxy_client() -> AsyncIterator[tuple[FakeOpenAIServer, openai.AsyncOpenAI]]:
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as upstream:
            async with PaCoReProxy(upstream, ProxySettings(port=0, shutdown_grace=2.0)) as proxy:
                client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
                try:
                    yield server, client
                finally:
                    await client.close()


async def test_responses_create_plain():
    async with proxy_client() as (server, client):
        response = await client.responses.create(
            model="pacore-low", input=PROBLEM, instructions="Be brief.", max_output_tokens=300, extra_body=LOW
        )
    Response.model_validate(response.to_dict())  # strict: every field the SDK's type requires
    assert response.output_text == ANSWER
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == 2 * 10 + 50 and response.usage.output_tokens == 2 * 20 + 9
    assert response.model_extra["pacore"]["schedule"] == [2]
    assert len(server.requests) == 3
    for request in server.requests:
        assert request.messages[0] == {"role": "system", "content": "Be brief."}
        assert request.body["max_tokens"] == 300


async def test_responses_stream_sends_the_sdk_events():
    async with proxy_client() as (server, client):
        stream = await client.responses.create(model="pacore-low", input=PROBLEM, stream=True, extra_body=LOW)
        events = [event async for event in stream]
    for event in events:
        TypeAdapter(ResponseStreamEvent).validate_python(event.to_dict())  # strict
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == ANSWER and len(deltas) > 3  # the synthesis as it was generated
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].response.output_text == ANSWER
    assert server.requests[-1].stream


async def test_responses_stream_helper_and_parse_with_a_schema():
    class Value(BaseModel):
        value: int

    async with proxy_client() as (server, client):
        async with client.responses.stream(model="pacore-low", input=PROBLEM, extra_body=LOW) as stream:
            texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        parsed = await client.responses.parse(model="pacore-low", input=PROBLEM, text_format=Value, extra_body=LOW)
    assert "".join(texts) == final.output_text == ANSWER
    assert parsed.output_parsed == Value(value=391)
    sent = server.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Value"
    assert sent["json_schema"]["schema"]["required"] == ["value"]


async def test_responses_refusals_name_the_parameter():
    async with proxy_client() as (server, client):
        with pytest.raises(openai.BadRequestError, match="previous_response_id="):
            await client.responses.create(model="pacore-low", input=PROBLEM, previous_response_id="resp_1")
        with pytest.raises(openai.BadRequestError, match=r"reasoning\.summary is not supported"):
            await client.responses.create(model="pacore-low", input=PROBLEM, reasoning={"summary": "auto"})
        with pytest.raises(openai.BadRequestError, match="not a valid JSON schema"):
            await client.responses.create(
                model="pacore-low",
                input=PROBLEM,
                text={"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}},
            )
        with pytest.raises(openai.BadRequestError, match="input_file"):
            await client.responses.create(
                model="pacore-low",
                input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}],
            )
    assert server.requests == []


async def test_reasoning_effort_of_the_responses_api_picks_the_schedule():
    async with proxy_client() as (server, client):
        response = await client.responses.create(model="pacore-high", input=PROBLEM, reasoning={"effort": "low"})
    assert response.model_extra["pacore"]["schedule"] == [4]
    assert len(server.requests) == 5


# -- conversion, tool calls included ---------------------------------------------------------------------


def test_input_items_and_function_tools_become_chat_form():
    body = chat_body(
        {
            "model": "pacore-low",
            "instructions": "Use the tools.",
            "input": [
                {"type": "message", "role": "developer", "content": "Be exact."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
                {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "noon"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": True}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_object"}},
            "max_output_tokens": 64,
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 64


def test_non_function_tools_are_refused():
    with pytest.raises(ConfigError, match="only function tools"):
        chat_body({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})


def result_with_tool_calls(answer: str = "") -> PaCoReResult:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    return PaCoReResult(
        answer=answer,
        finish_reason="tool_calls",
        schedule=[2],
        rounds=[],
        usage=RunUsage(prompt_tokens=1, completion_tokens=2, effective_ttc_tokens=2),
        extra={"tool_calls": calls},
    )


@pytest.mark.parametrize("answer", ["", "Let me look that up."])
def test_tool_calls_of_a_result_become_function_call_items(answer):
    request: dict[str, Any] = {"model": "pacore-low", "input": "Weather in Paris?"}
    result = result_with_tool_calls(answer)
    body = Response.model_validate(
        response_body("resp_1", request, 0, result=result, output=output_items(result, "msg_1"))
    )
    calls = [item for item in body.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [("call_1", "weather", '{"city": "Paris"}')]
    assert body.output_text == answer
    # streamed: every event is one the SDK knows, the call's arguments come whole
    events = ResponseEvents(request)
    stream = [*events.start(), *events.finish(result)]
    parsed = [TypeAdapter(ResponseStreamEvent).validate_python(event) for event in stream]
    done = [e for e in parsed if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"city": "Paris"}']
    assert parsed[-1].type == "response.completed"
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))


# -- a tool-call loop through the Responses API (runs once the chat path has the tool-call support) -------------

LOOKUP = {
    "type": "function",
    "name": "lookup_code",
    "description": "The access code of a person.",
    "parameters": {"type": "object", "properties": {"person": {"type": "string"}}, "required": ["person"]},
}


def tool_script(request: FakeRequest) -> FakeReply:
    """Before the tool ran, every trajectory calls ``lookup_code``; after, it answers from the tool's result."""
    results = [m for m in request.messages if m.get("role") == "tool"]
    if results:
        return FakeReply(content=f"<think>the tool said so</think>The code is {results[-1]['content']}.")
    assert [tool["function"]["name"] for tool in request.body["tools"]] == ["lookup_code"]
    return FakeReply(
        content="<think>I need the code</think>",
        tool_calls=[{"name": "lookup_code", "arguments": {"person": "Ada"}}],
        finish_reason="tool_calls",
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_function_call_loop(stream):
    pytest.importorskip("pacore_graph.tool_calls", reason="the chat path's tool-call support is not in this build")
    async with FakeOpenAIServer(tool_script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as upstream:
            async with PaCoReProxy(upstream, ProxySettings(port=0, shutdown_grace=2.0)) as proxy:
                client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
                question: list[Any] = [{"role": "user", "content": "What is Ada's access code?"}]
                async with client:
                    if stream:
                        async with client.responses.stream(model="pacore-low", input=question, tools=[LOOKUP]) as s:
                            kinds = [event.type async for event in s]
                            first = await s.get_final_response()
                        assert "response.function_call_arguments.done" in kinds
                    else:
                        first = await client.responses.create(model="pacore-low", input=question, tools=[LOOKUP])
                    (call,) = [item for item in first.output if item.type == "function_call"]
                    assert call.name == "lookup_code" and json.loads(call.arguments) == {"person": "Ada"}
                    history = [
                        *question,
                        call.model_dump(exclude_none=True, include={"type", "call_id", "name", "arguments"}),
                    ]
                    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "7F3K-QX"})
                    second = await client.responses.create(model="pacore-low", input=history, tools=[LOOKUP])
    assert second.output_text == "The code is 7F3K-QX."
    last = server.requests[-1].messages
    assert last[-2]["tool_calls"][0]["function"]["name"] == "lookup_code" and last[-1]["role"] == "tool"
