import operator
import re
from typing import Annotated, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.graph import END, START, StateGraph

from pacore_graph import (
    Completion,
    EmptyRoundError,
    LangChainBackend,
    PaCoReResult,
    SamplingParams,
    Schedule,
    build_pacore_graph,
)
from pacore_graph.testing import FunctionBackend


def numbered(messages, params):
    """Each call answers with its own seed, so conclusions can be traced through the rounds."""
    return f"<think>secret thoughts {params.seed}</think>answer {params.seed}"


async def test_schedule_3_2_makes_3_then_2_then_1_calls():
    backend = FunctionBackend(numbered)
    graph = build_pacore_graph(backend, "3,2", params=SamplingParams(seed=100))
    state = await graph.ainvoke({"problem": "What is 2+2?"})

    assert len(backend.calls) == 6
    assert [c.messages for c in backend.calls[:3]] == [[{"role": "user", "content": "What is 2+2?"}]] * 3
    round2 = [c.last_user_content for c in backend.calls[3:5]]
    for prompt in round2:
        assert len(re.findall(r"^Reference \d+:$", prompt, re.M)) == 3
        assert all(f"answer {seed}" in prompt for seed in (100, 101, 102))
        assert "secret thoughts" not in prompt
    final = backend.calls[5].last_user_content
    assert len(re.findall(r"^Reference \d+:$", final, re.M)) == 2
    assert "answer 103" in final and "answer 104" in final
    assert state["answer"] == "answer 105"
    assert sorted(c.params.seed for c in backend.calls) == list(range(100, 106))


async def test_usage_per_round_and_effective_ttc():
    graph = build_pacore_graph(FunctionBackend(numbered), "3,2")
    state = await graph.ainvoke({"problem": "Q"})
    usage = state["usage"]
    assert [r["k"] for r in usage["rounds"]] == [3, 2, 1]
    assert [r["returned"] for r in usage["rounds"]] == [3, 2, 1]
    assert [r["messages"] for r in usage["rounds"]] == [3, 2, 1]
    # FunctionBackend counts words: "<think>secret thoughts None</think>answer None" is 4 words.
    assert [r["completion_tokens"] for r in usage["rounds"]] == [12, 8, 4]
    assert usage["effective_ttc_tokens"] == usage["completion_tokens"] == 24
    assert usage["prompt_tokens"] == sum(r["prompt_tokens"] for r in usage["rounds"])
    result = PaCoReResult.from_output(state, Schedule.parse("3,2"))
    assert result.schedule == [3, 2]
    assert result.usage.effective_ttc_tokens == 24


async def test_system_message_and_earlier_turns_survive_every_round():
    backend = FunctionBackend(numbered)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 6*7?"},
    ]
    await build_pacore_graph(backend, "2,2").ainvoke({"messages": messages})
    assert len(backend.calls) == 5
    for call in backend.calls:
        assert call.messages[:3] == messages[:3]
        assert "What is 6*7?" in call.messages[3]["content"]


async def test_astream_yields_node_updates():
    graph = build_pacore_graph(FunctionBackend(numbered), [2])
    nodes = [node async for update in graph.astream({"problem": "Q"}, stream_mode="updates") for node in update]
    assert nodes.count("explore") == 2
    assert nodes[0] == "prepare" and nodes[-1] == "synthesize"


async def test_a_round_with_no_conclusion_fails_loudly():
    backend = FunctionBackend(lambda m, p: Completion(content="<think>never finishes", finish_reason="length"))
    with pytest.raises(EmptyRoundError, match="round 1 left no usable conclusion: K=2, 2 returned, 0 empty, 2 cut"):
        await build_pacore_graph(backend, [2]).ainvoke({"problem": "Q"})


async def test_keep_policy_forwards_truncated_trajectories():
    from pacore_graph import CompactionPolicy

    backend = FunctionBackend(lambda m, p: Completion(content="partial answer", finish_reason="length"))
    state = await build_pacore_graph(backend, [2], compaction=CompactionPolicy(truncated="keep")).ainvoke(
        {"problem": "Q"}
    )
    assert "partial answer" in backend.calls[-1].last_user_content
    assert state["finish_reason"] == "length"


async def test_synthesis_params_apply_to_the_final_round_only():
    backend = FunctionBackend(numbered)
    graph = build_pacore_graph(
        backend, [2], params=SamplingParams(temperature=1.0), synthesis_params=SamplingParams(temperature=0.0)
    )
    await graph.ainvoke({"problem": "Q"})
    assert [c.params.temperature for c in backend.calls] == [1.0, 1.0, 0.0]


class Parent(TypedDict, total=False):
    problem: str
    answer: str
    log: Annotated[list[str], operator.add]


async def test_works_as_a_node_inside_a_parent_graph():
    backend = FunctionBackend(numbered)
    pacore = build_pacore_graph(backend, [2])

    def ask(state: Parent) -> dict:
        return {"problem": "What is 2+2?", "log": ["asked"]}

    def report(state: Parent) -> dict:
        return {"log": [f"got {state['answer']}"]}

    parent = StateGraph(Parent)
    parent.add_node("ask", ask)
    parent.add_node("pacore", pacore)
    parent.add_node("report", report)
    parent.add_edge(START, "ask")
    parent.add_edge("ask", "pacore")
    parent.add_edge("pacore", "report")
    parent.add_edge("report", END)
    state = await parent.compile().ainvoke({})
    assert state["log"] == ["asked", "got answer None"]
    assert len(backend.calls) == 3
    subgraph_updates = [ns async for ns, _ in parent.compile().astream({}, stream_mode="updates", subgraphs=True) if ns]
    assert subgraph_updates, "the PaCoRe nodes stream as a subgraph"


async def test_langchain_chat_models_are_backends():
    model = FakeListChatModel(responses=["<think>a</think>one", "<think>b</think>two", "final"])
    state = await build_pacore_graph(LangChainBackend(model), [2]).ainvoke({"problem": "Q"})
    assert state["answer"] == "final"
    assert state["usage"]["rounds"][0]["messages"] == 2
