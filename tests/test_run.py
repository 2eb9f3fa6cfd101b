"""One way to run a graph: `run_graph` and `stream_run` give every graph type's typed result."""

import json
from typing import TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typer.testing import CliRunner

from pacore_graph import (
    Completion,
    EmptyRoundError,
    GraphOutputError,
    PaCoReError,
    PaCoReResult,
    RoundCompacted,
    RoundStarted,
    RunFinished,
    SamplingParams,
    TrajectoryFinished,
    VLLMClient,
    build_pacore_graph,
    run_graph,
    stream_run,
)
from pacore_graph.cli.main import app
from pacore_graph.graphs import load_graph
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
CODE_PROBLEM = (
    "Read two integers a and b and print a + b.\n\nSample Input 1\n```\n1 2\n```\nSample Output 1\n```\n3\n```\n"
)


def numbered(messages, params):
    """A boxed answer that depends on the seed, after a thought."""
    return Completion(content=f"<think>thought {params.seed}</think>So it is \\boxed{{{params.seed % 2}}}.")


def timeless(result: PaCoReResult) -> dict:
    """The result without the rounds' wall-clock seconds, which differ between two runs."""
    return result.model_dump(exclude={"rounds": {"__all__": {"seconds"}}})


async def items_of(graph, inputs, **kwargs):
    return [item async for item in stream_run(graph, inputs, **kwargs)]


async def test_pacore_graph_gives_the_typed_result_of_its_output():
    graph = build_pacore_graph(FunctionBackend(numbered), "3,2", params=SamplingParams(seed=10))
    result = await run_graph(graph, {"problem": "Q"})
    state = await graph.ainvoke({"problem": "Q"})

    assert isinstance(result, PaCoReResult)
    assert timeless(result) == timeless(PaCoReResult.from_output(state))
    assert result.answer == state["answer"] == "So it is \\boxed{1}."  # seed 15, the synthesis
    assert result.finish_reason == "stop"
    assert result.schedule == [3, 2]
    assert [row.k for row in result.rounds] == [3, 2, 1]
    assert result.usage.effective_ttc_tokens == state["usage"]["effective_ttc_tokens"]
    assert result.votes is None
    assert result.extra == {}


async def test_self_consistency_carries_the_votes_and_its_one_round():
    answers = iter([0, 1, 0, 1, 0])
    backend = FunctionBackend(lambda messages, params: f"<think>t</think>\\boxed{{{next(answers)}}}")
    graph = load_graph("self-consistency", backend, schedule=5)
    result = await run_graph(graph, {"problem": "Q"})

    assert len(backend.calls) == 5  # no synthesis call
    assert result.votes == {"0": 3, "1": 2}
    assert result.answer == "0"
    assert result.schedule == [5]
    assert [row.k for row in result.rounds] == [5]
    assert result.extra == {}


async def test_sequential_schedule_is_read_from_the_rows():
    backend = FunctionBackend(lambda messages, params: "<think>t</think>a conclusion")
    result = await run_graph(load_graph("sequential", backend, schedule=[1, 1, 1]), {"problem": "Q"})
    assert len(backend.calls) == 4
    assert result.schedule == [1, 1, 1]
    assert [row.k for row in result.rounds] == [1, 1, 1, 1]


async def test_code_verified_puts_program_and_verification_in_extra_over_real_http():
    def script(request):
        return FakeReply(content=f"<think>write it</think>Here it is.\n\n```python\n{PROGRAM}```\n")

    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url) as client:
        graph = load_graph("pacore-code-verified", client, schedule=[2])
        result = await run_graph(graph, {"problem": CODE_PROBLEM})
        streamed = await items_of(graph, {"problem": CODE_PROBLEM})
    assert result.schedule == [2]
    assert result.extra["program"] == PROGRAM
    verification = result.extra["verification"]
    assert (verification["program_found"], verification["passed"], verification["total"]) == (True, 1, 1)
    assert verification["evidence"] == "passed 1/1 sample tests"
    assert streamed[-1].extra["verification"]["evidence"] == "passed 1/1 sample tests"
    assert sum("passed 1/1 sample tests" in m for e in streamed if isinstance(e, RoundCompacted) for m in e.messages)


def test_cli_json_shows_the_code_verified_extra_output():
    def script(request):
        return FakeReply(content=f"<think>write it</think>Here it is.\n\n```python\n{PROGRAM}```\n")

    with FakeOpenAIServer(script).in_thread() as server:
        args = ["run", CODE_PROBLEM, "-g", "pacore-code-verified", "-s", "1", "--base-url", server.base_url, "--json"]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["schedule"] == [1]
    assert out["votes"] is None
    assert out["extra"]["program"] == PROGRAM
    assert out["extra"]["verification"]["evidence"] == "passed 1/1 sample tests"


async def test_stream_run_yields_the_events_in_order_then_the_result():
    graph = build_pacore_graph(FunctionBackend(numbered), "2", params=SamplingParams(seed=1))
    items = await items_of(graph, {"problem": "Q"})

    *events, result = items
    assert isinstance(result, PaCoReResult)
    assert not any(isinstance(event, PaCoReResult) for event in events)
    assert isinstance(events[0], RoundStarted) and events[0].round == 1
    assert len([e for e in events if isinstance(e, TrajectoryFinished)]) == 3
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 1 and finished[0].answer == result.answer
    assert all(event.namespace == () for event in events)
    assert timeless(result) == timeless(await run_graph(graph, {"problem": "Q"}))


class Parent(TypedDict, total=False):
    problem: str
    answer: str
    note: str


def parent_of(inner):
    parent = StateGraph(Parent)
    parent.add_node("solve", inner)
    parent.add_node("after", lambda state: {"note": f"done: {state['answer']}"})
    parent.add_edge(START, "solve")
    parent.add_edge("solve", "after")
    parent.add_edge("after", END)
    return parent.compile()


async def test_a_parent_graph_gets_the_subgraphs_output_and_keeps_its_own_keys():
    backend = FunctionBackend(numbered)
    inner = build_pacore_graph(backend, "2", params=SamplingParams(seed=1))
    result = await run_graph(parent_of(inner), {"problem": "Q"})

    alone = await run_graph(inner, {"problem": "Q"})
    assert result.answer == alone.answer == "So it is \\boxed{1}."  # seed 3, the synthesis
    assert (result.finish_reason, result.schedule, result.usage) == (alone.finish_reason, [2], alone.usage)
    assert result.extra == {"problem": "Q", "note": f"done: {alone.answer}"}

    *events, streamed = await items_of(parent_of(inner), {"problem": "Q"})
    assert timeless(streamed) == timeless(result)
    assert events and all(event.namespace and event.namespace[0].startswith("solve:") for event in events)


async def test_a_graph_that_ends_without_an_answer_raises_a_pacore_error():
    class Plain(TypedDict, total=False):
        problem: str
        answer: str

    graph = StateGraph(Plain)
    graph.add_node("guess", lambda state: {"answer": "42"})
    graph.add_edge(START, "guess")
    graph.add_edge("guess", END)
    compiled = graph.compile()

    with pytest.raises(GraphOutputError, match="without finish_reason, usage") as caught:
        await run_graph(compiled, {"problem": "Q"})
    assert isinstance(caught.value, PaCoReError)
    with pytest.raises(GraphOutputError):
        await items_of(compiled, {"problem": "Q"})


async def test_an_interrupted_graph_says_how_to_resume():
    def ask(state):
        return {"answer": interrupt("which one?")}

    graph = StateGraph(dict)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    compiled = graph.compile(checkpointer=InMemorySaver())
    with pytest.raises(GraphOutputError, match="interrupt"):
        await run_graph(compiled, {"problem": "Q"}, config={"configurable": {"thread_id": "i"}})


async def test_round_failures_are_raised_as_themselves():
    graph = build_pacore_graph(FunctionBackend(lambda messages, params: "<think>t</think>"), "2")
    with pytest.raises(EmptyRoundError):
        await run_graph(graph, {"problem": "Q"})


async def test_a_checkpointed_thread_resumes_and_a_finished_one_is_read_back_without_calls():
    backend = FunctionBackend(numbered)
    graph = build_pacore_graph(backend, "2", params=SamplingParams(seed=1), checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    result = await run_graph(graph, {"problem": "Q"}, config=config, durability="sync")
    assert len(backend.calls) == 3

    assert await run_graph(graph, None, config=config) == result
    assert [item async for item in stream_run(graph, None, config=config)] == [result]
    assert len(backend.calls) == 3


def test_from_output_still_takes_a_schedule_and_reads_it_otherwise():
    row = {
        "round": 1,
        "k": 4,
        "returned": 4,
        "messages": 4,
        "dropped_empty": 0,
        "dropped_truncated": 0,
        "failed": 0,
        "prompt_tokens": 4,
        "completion_tokens": 8,
        "seconds": 0.1,
    }
    synthesis = row | {"round": 2, "k": 1, "returned": 1, "messages": 1}
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "effective_ttc_tokens": 9, "rounds": [row, synthesis]}
    output = {"answer": "a", "finish_reason": "stop", "usage": usage}
    assert PaCoReResult.from_output(output).schedule == [4]
    voted = {**output, "usage": usage | {"rounds": [row]}, "votes": {"a": 4}}
    assert PaCoReResult.from_output(voted).schedule == [4]
    assert PaCoReResult.from_output(voted).votes == {"a": 4}
