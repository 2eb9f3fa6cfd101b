"""Tool calls through PaCoRe in Python: checking tools, the client's parsing, compaction of proposed calls, the
result's tool calls, and P(x, M) for a conversation that ends in tool results. Real HTTP against the fake server."""

from __future__ import annotations

import json

import pytest

from pacore_graph import ConfigError, VLLMClient, build_pacore_graph, run_graph
from pacore_graph.clients.base import Completion, SamplingParams, TokenUsage, ToolCall
from pacore_graph.compaction import CompactionPolicy, compact, reduce_completion
from pacore_graph.prompts import build_prompt, normalize_problem
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest, FunctionBackend
from pacore_graph.tool_calls import PROPOSED_CALL_PREFIX, proposed_calls_text, tool_options

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MARKER = "Reference Responses:"


def trajectory(content: str, calls: list[ToolCall], index: int = 0, finish: str = "tool_calls"):
    completion = Completion(content=content, finish_reason=finish, tool_calls=calls)
    return reduce_completion(completion, round_number=1, index=index, usage=TokenUsage(), started_at=0.0, seconds=0.0)


# -- the canonical text form ------------------------------------------------------------------------


def test_a_proposed_call_is_its_name_and_canonical_json_arguments_marked_not_executed():
    calls = [
        ToolCall(id="a", name="get_weather", arguments='{"unit":"C",  "city":"Zürich"}'),
        ToolCall(id="b", name="broken", arguments="{city: Paris"),
    ]
    assert proposed_calls_text(calls) == (
        'Proposed tool call (not executed): get_weather({"city": "Zürich", "unit": "C"})\n'
        'Proposed tool call (not executed): broken("{city: Paris")'
    )


def test_compaction_appends_the_calls_to_the_conclusion_and_keeps_a_calls_only_trajectory():
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    with_text = trajectory("<think>hm</think>I should check the weather.\n", [call], index=0)
    calls_only = trajectory("<think>need data</think>", [call], index=1)
    empty = trajectory("<think>nothing</think>  ", [], index=2, finish="stop")
    compacted = compact([with_text, calls_only, empty], CompactionPolicy())
    line = f'{PROPOSED_CALL_PREFIX}get_weather({{"city": "Paris"}})'
    assert sorted(compacted.messages) == sorted([f"I should check the weather.\n\n{line}", line])
    assert compacted.dropped_empty == 1
    assert with_text["tool_calls"] == [call.openai()]


# -- checking a run's tools ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}], None, "JSON schema"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], None, "type 'object'"),
        ([{"type": "function", "function": {"description": "no name"}}], None, "name"),
        ([{"type": "retrieval"}], None, "type"),
        ([WEATHER], {"type": "function", "function": {"name": "get_time"}}, "'get_time', which is not among"),
        ([WEATHER], "sometimes", "tool_choice"),
        ([WEATHER, WEATHER], None, "more than once"),
        (None, "required", "without tools"),
        ("get_weather", None, "tools: Input should be a valid list"),
    ],
)
def test_bad_tools_are_a_config_error_that_says_what_is_wrong(tools, choice, message):
    with pytest.raises(ConfigError, match=message):
        tool_options(tools, choice)


def test_checked_tools_are_sent_as_openai_has_them():
    options = tool_options([WEATHER], {"type": "function", "function": {"name": "get_weather"}}, False)
    assert options is not None
    assert options.request_fields() == {
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    assert tool_options(None, "none") is None


# -- the client ------------------------------------------------------------------------------------


async def test_the_client_reads_tool_calls_from_json_and_from_a_stream():
    reply = FakeReply(
        content=None,
        tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "arguments": "{}"},
        ],
        finish_reason="tool_calls",
    )
    async with FakeOpenAIServer(lambda request: reply) as server, VLLMClient(server.base_url) as client:
        params = SamplingParams(extra={"tools": [WEATHER]})
        result = await client.chat([{"role": "user", "content": "weather?"}], params)
        streamed = [chunk async for chunk in client.stream_chat([{"role": "user", "content": "weather?"}], params)]
    completion = result.completions[0]
    assert completion.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("call_0_get_weather", "get_weather", {"city": "Paris"}),
        ("call_1_get_weather", "get_weather", {}),
    ]
    from pacore_graph.clients.streaming import StreamAccumulator

    accumulated = StreamAccumulator()
    for chunk in streamed:
        accumulated.add(chunk)
    assert accumulated.result().completions[0].tool_calls == completion.tool_calls
    assert sum(1 for chunk in streamed if chunk.tool_calls) > 2  # the arguments came in pieces
    assert server.requests[0].body["tools"] == [WEATHER]


class ChatOnly:
    """A backend that cannot stream: the synthesis goes through ``chat``."""

    def __init__(self, inner: VLLMClient) -> None:
        self.inner = inner

    async def chat(self, messages, params, *, n=1):
        return await self.inner.chat(messages, params, n=n)


# -- a run with tools ------------------------------------------------------------------------------


def tool_script(request: FakeRequest) -> FakeReply:
    """Explorers propose a call; the synthesis (which sees references) decides on it."""
    if MARKER in (request.last_user_content or ""):
        return FakeReply(
            content="<think>both want the weather</think>",
            tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
            finish_reason="tool_calls",
        )
    return FakeReply(
        content=f"<think>draft {request.index}</think>Let me look it up.",
        tool_calls=[{"name": "get_weather", "arguments": '{"city":"Paris"}'}],
        finish_reason="tool_calls",
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streamed-synthesis", "json-synthesis"])
async def test_explorers_and_synthesis_sample_with_the_tools_and_the_answer_is_the_synthesis_calls(stream):
    async with FakeOpenAIServer(tool_script) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client if stream else ChatOnly(client), "2")
        inputs = {
            "messages": [{"role": "user", "content": "Should I take an umbrella in Paris?"}],
            "tools": [WEATHER],
            "tool_choice": "auto",
        }
        result = await run_graph(graph, inputs)
    assert len(server.requests) == 3
    assert all(r.body["tools"] == [WEATHER] and r.body["tool_choice"] == "auto" for r in server.requests)
    synthesis = server.requests[-1].last_user_content or ""
    line = 'Proposed tool call (not executed): get_weather({"city": "Paris"})'
    assert synthesis.count(f"Let me look it up.\n\n{line}") == 2
    assert result.finish_reason == "tool_calls"
    assert result.answer == ""
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in result.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert result.rounds[-1].messages == 1  # a tool-call answer is an answer


async def test_a_text_answer_has_no_tool_calls_and_a_thread_does_not_keep_old_ones():
    from langgraph.checkpoint.memory import InMemorySaver

    calls = {"n": 0}

    def reply(messages, params):
        calls["n"] += 1
        if calls["n"] <= 2:
            return Completion(content="", finish_reason="tool_calls", tool_calls=[ToolCall(id="x", name="get_weather")])
        return "Take an umbrella."

    backend = FunctionBackend(reply)
    graph = build_pacore_graph(backend, "1", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    first = await run_graph(graph, {"problem": "Umbrella?", "tools": [WEATHER]}, config=config)
    second = await run_graph(graph, {"problem": "Umbrella?", "tools": [WEATHER]}, config=config)
    assert first.tool_calls and first.finish_reason == "tool_calls"
    assert second.tool_calls == [] and second.answer == "Take an umbrella."
    assert backend.calls[0].params.extra["tools"] == [WEATHER]


async def test_bad_tools_fail_the_run_before_anything_is_sent():
    async with FakeOpenAIServer(tool_script) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, "2")
        bad_choice = {"type": "function", "function": {"name": "get_time"}}
        with pytest.raises(ConfigError, match="get_time"):
            await run_graph(graph, {"problem": "Umbrella?", "tools": [WEATHER], "tool_choice": bad_choice})
        broken = {"type": "function", "function": {"name": "f", "parameters": {"properties": 3}}}
        with pytest.raises(ConfigError, match="not a valid JSON schema"):
            await run_graph(graph, {"problem": "Umbrella?", "tools": [broken]})
    assert server.requests == []


# -- P(x, M) when the conversation ends in tool results --------------------------------------------

AGENT_TURNS = [
    {"role": "system", "content": "You are a weather assistant."},
    {"role": "user", "content": "Should I take an umbrella in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Rain, 12 °C"},
]


def test_p_of_x_and_m_replaces_only_the_last_user_message_and_keeps_the_tool_turns_after_it():
    conversation = normalize_problem(AGENT_TURNS)
    assert build_prompt(conversation, []) == AGENT_TURNS  # round 1: unchanged
    later = build_prompt(conversation, ["Yes, it rains."])
    assert later[0] == AGENT_TURNS[0] and later[2:] == AGENT_TURNS[2:]
    assert later[1]["role"] == "user"
    assert later[1]["content"].startswith("You are given a problem and a list of reference responses.")
    assert "Original Problem:\nShould I take an umbrella in Paris?\n" in later[1]["content"]
    assert "Reference 1:\nYes, it rains.\n" in later[1]["content"]


def test_an_assistant_tool_call_turn_may_leave_its_content_out():
    turns = [dict(AGENT_TURNS[1]), {k: v for k, v in AGENT_TURNS[2].items() if k != "content"}, AGENT_TURNS[3]]
    assert normalize_problem(turns)[1]["tool_calls"] == AGENT_TURNS[2]["tool_calls"]


async def test_a_run_on_a_conversation_that_ends_in_a_tool_result_answers_from_it():
    def script(request: FakeRequest) -> FakeReply:
        result = request.messages[-1]
        assert result["role"] == "tool"  # every round sees the tool result last
        return FakeReply(content=f"<think>ok</think>Yes: {result['content']}.")

    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url) as client:
        result = await run_graph(build_pacore_graph(client, "2"), {"messages": AGENT_TURNS, "tools": [WEATHER]})
    assert result.answer == "Yes: Rain, 12 °C."
    assert result.tool_calls == []
    first, synthesis = server.requests[0].messages, server.requests[-1].messages
    assert first == AGENT_TURNS
    assert synthesis[2:] == AGENT_TURNS[2:]
    assert "Reference 2:\nYes: Rain, 12 °C.\n" in synthesis[1]["content"]


# -- the README's snippet --------------------------------------------------------------------------


def readme_snippet(section: str) -> str:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("\n```", 1)[0]


async def test_the_readme_tools_snippet_runs_an_agent_turn_and_answers_from_the_tool_result(capsys):
    import ast

    def reply(messages, params):
        assert params.extra["tools"][0]["function"]["name"] == "get_weather"
        if messages[-1]["role"] == "tool":
            return f"<think>it rains</think>Yes: {messages[-1]['content']}, take one."
        call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
        return Completion(content="<think>check</think>", finish_reason="tool_calls", tool_calls=[call])

    backend = FunctionBackend(reply)
    code = compile(readme_snippet("Tools through PaCoRe"), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    await eval(code, {"backend": backend})  # our own README
    assert capsys.readouterr().out == "Yes: Rain, 12 °C, take one.\n"
    assert len(backend.calls) == 6  # two runs of PaCoRe [2]: the call, then the answer
    assert backend.calls[-1].messages[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 12 °C"}


# -- the embedded engine's tool-calling flags ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "parser", "extra", "expected"),
    [
        (None, None, (), ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]),
        (None, "", (), []),
        ("org/model", None, (), []),
        ("org/model", "llama3_json", (), ["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"]),
        (None, None, ("--enable-auto-tool-choice", "--tool-call-parser=mistral"), []),
    ],
)
def test_the_engine_launcher_turns_on_vllm_tool_calling(model, parser, extra, expected):
    from pacore_graph.engine.detect import EngineEnvironment
    from pacore_graph.engine.launcher import _Options, _plan

    options = _Options(
        model, None, "127.0.0.1", None, None, None, None, None, extra, {}, 1.0, None, True, 1.0, None, parser
    )
    argv = list(_plan(EngineEnvironment("python3", True, None, None, False, None), "/m", options).argv_tail)
    joined = " ".join(argv)
    assert " ".join(expected) in joined
    assert joined.count("tool-call-parser") == (1 if expected or extra else 0)  # never given twice
    assert joined.count("--enable-auto-tool-choice") == (1 if expected or extra else 0)


async def test_a_langchain_chat_model_backend_samples_with_the_tools_and_returns_the_calls():
    import httpx
    from langchain_openai import ChatOpenAI

    from pacore_graph import LangChainBackend

    async with FakeOpenAIServer(tool_script) as server, httpx.AsyncClient() as http:
        model = ChatOpenAI(base_url=server.base_url, api_key="unused", model="fake-model", http_async_client=http)
        result = await run_graph(
            build_pacore_graph(LangChainBackend(model), "2"), {"problem": "Umbrella in Paris?", "tools": [WEATHER]}
        )
    assert all(request.body["tools"] == [WEATHER] for request in server.requests)
    assert "Proposed tool call (not executed): get_weather" in (server.requests[-1].last_user_content or "")
    assert [c["function"]["name"] for c in result.tool_calls] == ["get_weather"]
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}


async def test_without_parallel_tool_calls_the_answer_has_one_call_and_the_trace_has_every_proposal():
    from pacore_graph import TrajectoryFinished, stream_run

    two = [ToolCall(id="a", name="get_weather", arguments='{"city": "Paris"}'), ToolCall(id="b", name="get_weather")]
    backend = FunctionBackend(
        lambda messages, params: Completion(content="", finish_reason="tool_calls", tool_calls=two)
    )
    inputs = {"problem": "Paris and Rome?", "tools": [WEATHER], "parallel_tool_calls": False}
    items = [item async for item in stream_run(build_pacore_graph(backend, "2"), inputs)]
    result = items[-1]
    assert [c["id"] for c in result.tool_calls] == ["a"]
    assert all(call.params.extra["parallel_tool_calls"] is False for call in backend.calls)
    finished = [item for item in items if isinstance(item, TrajectoryFinished)]
    assert [len(item.tool_calls) for item in finished] == [2, 2, 2]


async def test_a_tool_call_with_arguments_that_are_not_an_object_reaches_the_server_unchanged():
    # A weak model may call a tool with a JSON array; LangChain cannot hold that call, the conversation must still run.
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "[1, 2]"}}
    conversation = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    async with FakeOpenAIServer(lambda request: FakeReply(content="It is sunny.")) as server:
        async with VLLMClient(server.base_url) as client:
            out = await build_pacore_graph(client, [1]).ainvoke({"messages": conversation})
        assert out["answer"] == "It is sunny."
        assert server.requests[0].body["messages"] == conversation
