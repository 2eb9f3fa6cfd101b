"""LangGraph's conventions: the messages stream, MessagesState parents, threads, sync calls, schemas, context."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, MessagesState, StateGraph

from pacore_graph import (
    ConfigError,
    PaCoReConfig,
    SamplingParams,
    UpstreamError,
    VLLMClient,
    build_pacore_graph,
    run_graph,
)
from pacore_graph.bridge import run_sync
from pacore_graph.graphs import load_graph
from pacore_graph.overrides import Overrides
from pacore_graph.state import PaCoReContext
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest, Fault, FunctionBackend
from pacore_graph.tools import make_deep_reason_tool

ANSWER = "The answer is forty two, said plainly."


def script(request: FakeRequest) -> FakeReply:
    """Explorers and the synthesis say distinct things, each with reasoning that must never be streamed."""
    if "Reference Responses" in (request.last_user_content or ""):
        return FakeReply(content=ANSWER, reasoning="synthesis private thoughts")
    return FakeReply(content="explorer draft words", reasoning="explorer private thoughts")


def counts(usage):
    """A usage without its timings (round rows' seconds), for comparing two runs."""
    return {**usage, "rounds": [{k: v for k, v in row.items() if k != "seconds"} for row in usage["rounds"]]}


def seeded(messages, params):
    return f"<think>hidden {params.seed}</think>answer {params.seed} for {messages[-1]['content'][:20]}"


# -- the messages stream and astream_events -------------------------------------------------------------------


async def test_messages_mode_streams_the_synthesis_only_as_ai_message_chunks():
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        graph = build_pacore_graph(client, [3])
        items = [item async for item in graph.astream({"problem": "What is 6*7?"}, stream_mode="messages")]
        synthesis = [r for r in server.requests if "Reference Responses" in (r.last_user_content or "")]
        assert synthesis and all(r.stream for r in synthesis)  # the synthesis really was streamed over HTTP
    assert len(items) > 2  # token by token, not one message
    assert all(isinstance(message, AIMessageChunk) for message, _ in items)
    assert {meta["langgraph_node"] for _, meta in items} == {"synthesize"}
    assert len({message.id for message, _ in items}) == 1
    text = "".join(str(message.content) for message, _ in items)
    assert text == ANSWER
    assert "thoughts" not in text and "explorer" not in text
    last = items[-1][0]
    assert last.usage_metadata is not None and last.usage_metadata["output_tokens"] > 0
    assert last.response_metadata["finish_reason"] == "stop"


async def test_astream_events_v2_has_one_chat_model_run_for_the_synthesis():
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        graph = build_pacore_graph(client, [2])
        events = [e async for e in graph.astream_events({"problem": "What is 6*7?"}, version="v2")]
    chat = [e for e in events if e["event"].startswith("on_chat_model")]
    assert chat[0]["event"] == "on_chat_model_start"
    assert chat[-1]["event"] == "on_chat_model_end"
    assert {e["metadata"]["langgraph_node"] for e in chat} == {"synthesize"}
    streamed = "".join(str(e["data"]["chunk"].content) for e in chat if e["event"] == "on_chat_model_stream")
    assert streamed == ANSWER
    end = chat[-1]["data"]["output"]
    assert isinstance(end, AIMessage) and end.content == ANSWER
    # The prompt is reported as LangChain messages: the synthesis prompt P(x, M), not the explorers'.
    assert "Reference Responses" in chat[0]["data"]["input"]["messages"][0][-1].content


async def test_messages_mode_with_a_function_backend_holds_back_inline_thinking():
    graph = build_pacore_graph(FunctionBackend(seeded), [2])
    items = [item async for item in graph.astream({"problem": "Q"}, stream_mode="messages")]
    result = await graph.ainvoke({"problem": "Q"})
    assert {meta["langgraph_node"] for _, meta in items} == {"synthesize"}
    text = "".join(str(message.content) for message, _ in items)
    assert text == result["answer"] and "hidden" not in text


async def test_messages_of_a_subgraph_carry_its_namespace():
    class Parent(MessagesState):
        pass

    inner = build_pacore_graph(FunctionBackend(seeded), [2])
    parent = StateGraph(Parent)
    parent.add_node("reason", inner)
    parent.add_edge(START, "reason")
    graph = parent.compile()
    items = [
        item async for item in graph.astream({"messages": [HumanMessage("Q")]}, stream_mode="messages", subgraphs=True)
    ]
    assert items and all(ns and ns[0].startswith("reason:") for ns, _ in items)
    assert all(isinstance(message, AIMessageChunk) for _, (message, _meta) in items)


# -- MessagesState parents ---------------------------------------------------------------------------------------


def messages_parent(backend, checkpointer=None):
    parent = StateGraph(MessagesState)
    parent.add_node("pacore", build_pacore_graph(backend, [2]))
    parent.add_edge(START, "pacore")
    return parent.compile(checkpointer=checkpointer)


async def test_a_messages_state_parent_gets_the_answer_appended_as_an_ai_message():
    backend = FunctionBackend(seeded)
    state = await messages_parent(backend).ainvoke({"messages": [HumanMessage("What is 6*7?")]})
    human, ai = state["messages"]
    assert isinstance(human, HumanMessage) and human.content == "What is 6*7?"
    assert isinstance(ai, AIMessage) and ai.content.startswith("answer ")
    usage = ai.response_metadata["usage"]
    assert ai.usage_metadata == {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
    }
    assert [row["k"] for row in usage["rounds"]] == [2, 1]
    assert ai.response_metadata["finish_reason"] == "stop"


async def test_a_parent_streams_the_answer_once_as_a_message_or_as_its_chunks():
    graph = messages_parent(FunctionBackend(seeded))
    whole = [item async for item in graph.astream({"messages": [HumanMessage("Q")]}, stream_mode="messages")]
    # Without subgraphs: the parent node's output, the answer as one AIMessage.
    assert [(type(m), meta["langgraph_node"]) for m, meta in whole] == [(AIMessage, "pacore")]
    chunks = [
        message
        async for _, (message, _meta) in graph.astream(
            {"messages": [HumanMessage("Q")]}, stream_mode="messages", subgraphs=True
        )
    ]
    # With subgraphs: the synthesizer's chunks, and the same message is not repeated by the parent.
    assert chunks and all(isinstance(m, AIMessageChunk) for m in chunks)
    assert "".join(str(m.content) for m in chunks) == whole[0][0].content


async def test_a_problem_leaves_messages_alone_and_messages_give_the_output_key():
    graph = build_pacore_graph(FunctionBackend(seeded), [2])
    by_problem = await graph.ainvoke({"problem": "Q"})
    assert by_problem.get("messages", []) == []
    by_messages = await graph.ainvoke({"messages": [{"role": "user", "content": "Q"}]})
    assert [type(m) for m in by_messages["messages"]] == [HumanMessage, AIMessage]
    assert by_messages["messages"][-1].content == by_messages["answer"]


async def test_an_invalid_message_is_a_config_error_and_nothing_is_sent():
    backend = FunctionBackend(seeded)
    with pytest.raises(ConfigError, match="invalid chat message"):
        await build_pacore_graph(backend, [2]).ainvoke({"messages": [{"content": "no role"}]})
    assert backend.calls == []


# -- threads reused with a checkpointer ------------------------------------------------------------------------


async def _two_turns(checkpointer):
    backend = FunctionBackend(seeded)
    graph = build_pacore_graph(backend, [2], checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "chat-1"}}
    first = await graph.ainvoke({"messages": [{"role": "user", "content": "First question?"}]}, config)
    calls_before = len(backend.calls)
    second = await graph.ainvoke({"messages": [{"role": "user", "content": "And a follow-up?"}]}, config)
    fresh = await build_pacore_graph(FunctionBackend(seeded), [2]).ainvoke(
        {"messages": first["messages"] + [HumanMessage("And a follow-up?")]}
    )
    return backend, calls_before, first, second, fresh


def _check_two_turns(backend, calls_before, first, second, fresh):
    # Usage is the second run's alone: the same as a fresh run on the same conversation.
    assert counts(second["usage"]) == counts(fresh["usage"])
    assert len(second["usage"]["rounds"]) == 2
    # x of the second turn is the whole thread: first question, first answer, follow-up.
    explorer_prompt = backend.calls[calls_before].messages
    assert [(m["role"], m["content"]) for m in explorer_prompt] == [
        ("user", "First question?"),
        ("assistant", first["answer"]),
        ("user", "And a follow-up?"),
    ]
    assert [m.content for m in second["messages"]] == [
        "First question?",
        first["answer"],
        "And a follow-up?",
        second["answer"],
    ]


async def test_a_second_turn_on_an_in_memory_thread_is_a_fresh_run_of_a_multi_turn_conversation():
    _check_two_turns(*await _two_turns(InMemorySaver()))


async def test_a_second_turn_on_a_sqlite_thread_is_a_fresh_run_of_a_multi_turn_conversation(tmp_path):
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "threads.sqlite")) as saver:
        _check_two_turns(*await _two_turns(saver))


async def test_a_thread_switching_between_problem_and_messages_answers_what_each_run_gave():
    backend = FunctionBackend(seeded)
    graph = build_pacore_graph(backend, [2], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "switch"}}
    await graph.ainvoke({"problem": "The old problem"}, config)
    start = len(backend.calls)
    state = await graph.ainvoke({"messages": [{"role": "user", "content": "A chat question"}]}, config)
    assert backend.calls[start].messages == [{"role": "user", "content": "A chat question"}]
    assert [m.content for m in state["messages"]] == ["A chat question", state["answer"]]
    start = len(backend.calls)
    again = await graph.ainvoke({"problem": "Another problem"}, config)
    assert backend.calls[start].messages == [{"role": "user", "content": "Another problem"}]
    fresh = await build_pacore_graph(FunctionBackend(seeded), [2]).ainvoke({"problem": "Another problem"})
    assert counts(again["usage"]) == counts(fresh["usage"])  # this run's rounds only
    assert [m.content for m in again["messages"]] == ["A chat question", state["answer"]]  # left as they were


# -- sync invoke and stream ------------------------------------------------------------------------------------


def test_sync_invoke_and_stream_over_real_http_reuse_one_client():
    with FakeOpenAIServer(script).in_thread() as server:
        client = VLLMClient(server.base_url, max_retries=0)
        graph = build_pacore_graph(client, [2])
        try:
            first = graph.invoke({"problem": "Q"})
            second = graph.invoke({"problem": "Q"}, context={"schedule": "3"})
            chunks = list(graph.stream({"problem": "Q"}, stream_mode="messages"))
            updates = [next(iter(u)) for u in graph.stream({"problem": "Q"}, stream_mode="updates")]
        finally:
            run_sync(client.aclose())  # on the bridge's loop, where its session lives (else GC warns later)
    assert first["answer"] == second["answer"] == ANSWER
    assert [r["k"] for r in second["usage"]["rounds"]] == [3, 1]
    assert "".join(str(m.content) for m, _ in chunks) == ANSWER
    assert updates[0] == "prepare" and updates[-1] == "synthesize"


def test_sync_invoke_in_a_sync_messages_state_parent_on_a_thread():
    graph = messages_parent(FunctionBackend(seeded), checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [HumanMessage("Q")]}, config)
    state = graph.invoke({"messages": [HumanMessage("Again?")]}, config)
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage, HumanMessage, AIMessage]


def test_sync_invoke_with_a_sync_only_sqlite_checkpointer_says_to_use_the_async_one(tmp_path):
    with sqlite3.connect(tmp_path / "sync.sqlite", check_same_thread=False) as connection:
        graph = build_pacore_graph(FunctionBackend(seeded), [2], checkpointer=SqliteSaver(connection))
        with pytest.raises(NotImplementedError, match="AsyncSqliteSaver"):
            graph.invoke({"problem": "Q"}, {"configurable": {"thread_id": "t"}})


def test_sync_stream_stopped_early_cancels_the_run():
    graph = build_pacore_graph(FunctionBackend(seeded), [2])
    stream = graph.stream({"problem": "Q"}, stream_mode="updates")
    assert next(iter(next(stream))) == "prepare"
    stream.close()  # no hang, no leaked run
    assert graph.invoke({"problem": "Q"})["answer"].startswith("answer")


def test_closing_a_sync_stream_cancels_the_requests_in_flight_before_it_returns():
    began, cancelled = threading.Event(), threading.Event()

    async def slow(messages, params):
        began.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    stream = build_pacore_graph(FunctionBackend(slow), [2]).stream({"problem": "Q"}, stream_mode="updates")
    assert next(iter(next(stream))) == "prepare"
    assert began.wait(10)
    stream.close()
    assert cancelled.is_set()


def test_sync_errors_are_raised_in_the_caller():
    graph = build_pacore_graph(FunctionBackend(seeded), [2])
    with pytest.raises(ConfigError, match="the problem is empty"):
        graph.invoke({"problem": "  "})


def test_the_deep_reason_tool_works_from_sync_and_async_agents():
    backend = FunctionBackend(seeded)
    tool = make_deep_reason_tool(load_graph("pacore-low", backend))
    answer = tool.invoke({"problem": "What is 2+2?"})
    assert answer.startswith("answer ")
    assert asyncio.run(tool.ainvoke({"problem": "What is 2+2?"})).startswith("answer ")


def test_the_deep_reason_tool_runs_an_async_only_graph_from_sync_code():
    class AsyncOnly:
        async def ainvoke(self, input, config=None, **kwargs):
            await asyncio.sleep(0)
            return {"answer": f" echo {input['problem']} "}

    assert make_deep_reason_tool(AsyncOnly()).invoke({"problem": "x"}) == "echo x"


async def test_a_sync_call_from_inside_the_bridge_loop_is_refused():
    graph = build_pacore_graph(FunctionBackend(seeded), [2])

    async def nested() -> None:
        graph.invoke({"problem": "Q"})

    with pytest.raises(ConfigError, match="use ainvoke"):
        await asyncio.to_thread(run_sync, nested())


# -- JSON schemas (Python 3.11: typing_extensions.TypedDict) ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["pacore-low", "pacore-high", "self-consistency", "sequential", "pacore-code-verified"]
)
def test_input_output_and_context_json_schemas(name):
    graph = load_graph(name, FunctionBackend(seeded))
    inputs = graph.get_input_jsonschema()
    outputs = graph.get_output_jsonschema()
    context = graph.get_context_jsonschema()
    assert {"problem", "messages"} <= set(inputs["properties"])
    assert {"answer", "finish_reason", "usage", "messages"} <= set(outputs["properties"])
    assert context is not None and set(context["properties"]) == set(Overrides.model_fields)
    assert context["properties"]["temperature"]["type"] == "number"


def test_the_context_schema_names_every_override_option():
    assert set(PaCoReContext.__annotations__) == set(Overrides.model_fields)


# -- per-run settings through the runtime context --------------------------------------------------------------


async def test_one_compiled_graph_serves_many_configurations():
    backend = FunctionBackend(seeded)
    graph = build_pacore_graph(backend, [2])
    low = await run_graph(graph, {"problem": "Q"})
    wide = await run_graph(graph, {"problem": "Q"}, context={"schedule": "4,2", "temperature": 0.3, "seed": 7})
    again = await run_graph(graph, {"problem": "Q"})
    assert low.schedule == again.schedule == [2]
    assert wide.schedule == [4, 2]
    assert len(backend.calls) == 3 + (4 + 2 + 1) + 3
    assert {c.params.temperature for c in backend.calls[3:10]} == {0.3}
    assert [c.params.seed for c in backend.calls[3:7]] == [7, 8, 9, 10]


async def test_a_bad_context_value_is_the_override_paths_config_error_and_nothing_is_sent():
    backend = FunctionBackend(seeded)
    graph = build_pacore_graph(backend, [2])
    with pytest.raises(ConfigError) as expected:
        PaCoReConfig().with_overrides(top_p=0.0)
    with pytest.raises(ConfigError) as raised:
        await graph.ainvoke({"problem": "Q"}, context={"top_p": 0.0})
    assert str(raised.value) == str(expected.value)
    with pytest.raises(ConfigError, match="unknown option 'temprature'"):
        await graph.ainvoke({"problem": "Q"}, context={"temprature": 0.5})
    assert backend.calls == []


async def test_the_failure_policy_comes_from_the_context():
    def one_explorer_fails(request: FakeRequest) -> FakeReply:
        if request.body.get("seed") == 1:
            return FakeReply(fault=Fault.http_error(500))
        return script(request)

    async with FakeOpenAIServer(one_explorer_fails) as server, VLLMClient(server.base_url, max_retries=0) as client:
        graph = build_pacore_graph(client, [3], params=SamplingParams(seed=0))
        with pytest.raises(UpstreamError):
            await run_graph(graph, {"problem": "Q"})
        result = await run_graph(graph, {"problem": "Q"}, context={"min_trajectories": 2})
    assert result.answer == ANSWER
    assert result.rounds[0].failed == 1


async def test_inside_a_parent_only_the_contexts_pacore_options_are_read():
    backend = FunctionBackend(seeded)
    parent = StateGraph(MessagesState)
    parent.add_node("pacore", build_pacore_graph(backend, [2]))
    parent.add_edge(START, "pacore")
    graph = parent.compile()
    # The parent's context has keys of its own; the schedule is PaCoRe's.
    state = await graph.ainvoke({"messages": [HumanMessage("Q")]}, context={"user_id": "u1", "schedule": "3"})
    assert [row["k"] for row in state["messages"][-1].response_metadata["usage"]["rounds"]] == [3, 1]


async def test_an_overrides_object_is_a_context_too_and_other_objects_are_refused():
    backend = FunctionBackend(seeded)
    graph = build_pacore_graph(backend, [2])
    result = await run_graph(graph, {"problem": "Q"}, context=Overrides(schedule="3"))
    assert result.schedule == [3]
    with pytest.raises(ConfigError, match="give a dict of PaCoRe options"):
        await graph.ainvoke({"problem": "Q"}, context=["schedule", "3"])
