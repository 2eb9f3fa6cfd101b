"""Progress events: what the nodes stream through LangGraph's custom mode, standalone and as a subgraph."""

from typing import TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from pacore_graph import (
    Completion,
    RoundCompacted,
    RoundStarted,
    RunFinished,
    SamplingParams,
    SynthesisDelta,
    TrajectoryFinished,
    build_pacore_graph,
    parse_event,
    stream_events,
)
from pacore_graph.graphs import load_graph
from pacore_graph.testing import FunctionBackend


def numbered(messages, params):
    """Reasoning in a separate field, a thought, and a boxed answer that depends on the seed."""
    return Completion(
        content=f"<think>private thought {params.seed}</think>So it is \\boxed{{{params.seed % 2}}}.",
        reasoning=f"hidden reasoning {params.seed}",
    )


async def events_of(graph, inputs, config=None):
    return [event async for event in stream_events(graph, inputs, config)]


async def test_a_3_2_run_streams_rounds_trajectories_compaction_deltas_and_the_end_in_order():
    backend = FunctionBackend(numbered)
    graph = build_pacore_graph(backend, "3,2", params=SamplingParams(seed=10))
    events = await events_of(graph, {"problem": "Q?"})

    kinds = [e.type for e in events if not isinstance(e, SynthesisDelta)]
    assert kinds == [
        "round_started", *["trajectory_finished"] * 3, "round_compacted",
        "round_started", *["trajectory_finished"] * 2, "round_compacted",
        "round_started", "trajectory_finished", "run_finished",
    ]  # fmt: skip
    starts = [e for e in events if isinstance(e, RoundStarted)]
    assert [(s.round, s.k, s.final) for s in starts] == [(1, 3, False), (2, 2, False), (3, 1, True)]
    assert starts[0].prompt_chars == len("Q?")

    finished = [e for e in events if isinstance(e, TrajectoryFinished)]
    assert sorted((t.round, t.index) for t in finished) == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)]
    for event, call in zip(finished, backend.calls, strict=True):  # one event per request, in request order
        assert event.messages == call.messages
        assert event.params == call.params.model_dump(mode="json")
        assert event.reasoning == f"hidden reasoning {call.params.seed}"
        assert event.answer == str(call.params.seed % 2)
        assert event.completion_tokens > 0 and event.seconds >= 0 and event.finish_reason == "stop"
    assert finished[-1].final

    compacted = [e for e in events if isinstance(e, RoundCompacted)]
    assert [(c.round, c.k, c.returned, c.kept) for c in compacted] == [(1, 3, 3, 3), (2, 2, 2, 2)]
    # What round 2 was shown is what compaction said it would show.
    for message in compacted[0].messages:
        assert message in backend.calls[3].last_user_content
    assert compacted[0].next_prompt_chars == len(backend.calls[3].last_user_content)

    deltas = [e for e in events if isinstance(e, SynthesisDelta)]
    assert len(deltas) > 1  # FunctionBackend streams word by word
    assert "".join(d.content for d in deltas) == finished[-1].content
    assert "".join(d.reasoning for d in deltas) == finished[-1].reasoning

    end = events[-1]
    assert isinstance(end, RunFinished)
    assert end.answer == "So it is \\boxed{1}." and end.finish_reason == "stop"
    assert end.usage["effective_ttc_tokens"] == sum(t.completion_tokens for t in finished)


async def test_a_backend_without_streaming_gives_one_delta_with_the_whole_synthesis():
    class ChatOnly:
        async def chat(self, messages, params, *, n=1):
            return await FunctionBackend(lambda m, p: "<think>x</think>final words").chat(messages, params, n=n)

    events = await events_of(build_pacore_graph(ChatOnly(), "2"), {"problem": "Q"})
    deltas = [e for e in events if isinstance(e, SynthesisDelta)]
    assert [d.content for d in deltas] == ["<think>x</think>final words"]


class Parent(TypedDict, total=False):
    problem: str
    answer: str
    note: str


async def test_events_come_through_a_parent_graph_with_the_subgraphs_namespace():
    inner = build_pacore_graph(FunctionBackend(numbered), "2", params=SamplingParams(seed=1))
    parent = StateGraph(Parent)
    parent.add_node("solve", inner)
    parent.add_node("after", lambda state: {"note": "done"})
    parent.add_edge(START, "solve")
    parent.add_edge("solve", "after")
    parent.add_edge("after", END)
    events = await events_of(parent.compile(), {"problem": "Q"})

    assert [e.type for e in events if not isinstance(e, SynthesisDelta)][-1] == "run_finished"
    assert len([e for e in events if isinstance(e, TrajectoryFinished)]) == 3
    assert all(e.namespace and e.namespace[0].startswith("solve:") for e in events)


async def test_self_consistency_ends_with_the_tally():
    def unseeded(messages, params):
        return f"<think>t</think>\\boxed{{{len(backend.calls) % 2}}}"

    backend = FunctionBackend(unseeded)
    graph = load_graph("self-consistency", backend, schedule=5)
    events = await events_of(graph, {"problem": "Q"})
    end = events[-1]
    assert isinstance(end, RunFinished)
    assert sum(end.votes.values()) == 5
    assert not any(isinstance(e, SynthesisDelta) for e in events)


async def test_transcripts_stay_out_of_the_checkpointed_state():
    graph = build_pacore_graph(
        FunctionBackend(numbered), "3,2", params=SamplingParams(seed=0), checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "t"}}
    events = await events_of(graph, {"problem": "Q"}, config)
    assert any("hidden reasoning" in (e.reasoning or "") for e in events if isinstance(e, TrajectoryFinished))
    history = [repr(snapshot.values) async for snapshot in graph.aget_state_history(config)]
    assert history and not any("hidden reasoning" in h or "private thought" in h for h in history)


def test_parse_event_reads_models_and_their_json_and_ignores_other_payloads():
    event = RoundStarted(round=1, k=4, prompt_chars=10)
    assert parse_event(event) is event
    assert parse_event(event.model_dump(mode="json")) == event
    assert parse_event({"type": "something_else"}) is None
    assert parse_event({"type": "round_started", "round": "x"}) is None
    assert parse_event("text") is None
