"""Typed progress events, streamed by the graph's nodes through LangGraph's ``custom`` stream mode.

The nodes call ``langgraph.config.get_stream_writer()`` and write one of these pydantic models; nothing of it
enters the graph state, so checkpoints stay small while a consumer (the CLI's live display, a
:class:`~pacore_graph.trace.TraceRecorder`) still sees every trajectory in full. In the order of a run:

=====================  =================================================================================
``RoundStarted``       a round is dispatched: its number, K, and the size of its prompt (the final
                       synthesis is a round with ``final=True`` and ``k=1``)
``TrajectoryFinished`` one trajectory came back: tokens, ``finish_reason``, the extracted answer (if any),
                       seconds, and for traces its request (messages, params), content and reasoning
``RoundCompacted``     a parallel round was compacted: messages kept and dropped, the references handed on
                       and the size of the next prompt
``SynthesisDelta``     a piece of the final synthesis as it is generated (a backend that cannot stream
                       gives one delta with the whole text)
``RunFinished``        the answer, its ``finish_reason``, the usage (and the tally for voting graphs)
=====================  =================================================================================

Consume them with :func:`pacore_graph.run.stream_run` (the events, then the typed result) or
:func:`stream_events` (the events only), or from your own ``astream`` call::

    async for namespace, mode, chunk in graph.astream(inputs, stream_mode=["custom", "updates"], subgraphs=True):
        if mode == "custom" and (event := parse_event(chunk)) is not None:
            print(event.type, event)

As a subgraph, stream the parent with ``subgraphs=True``: LangGraph forwards a subgraph's custom events only
then. Events read from a remote stream (JSON dicts) are parsed back into models by :func:`parse_event`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Literal

from langgraph.config import get_stream_writer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pacore_graph.result import PaCoReResult

__all__ = [
    "EventWriter",
    "PaCoReEvent",
    "RoundCompacted",
    "RoundStarted",
    "RunFinished",
    "SynthesisDelta",
    "TrajectoryFinished",
    "event_writer",
    "parse_event",
    "stream_events",
]


class _Event(BaseModel):
    # Not frozen on purpose: stream_events fills in the namespace, and copying 64 events per round to do it
    # would be waste.
    model_config = ConfigDict(extra="forbid")

    namespace: tuple[str, ...] = Field(
        (), description="where the PaCoRe graph runs inside a parent graph; () at the top level"
    )


class RoundStarted(_Event):
    """A round was dispatched: ``k`` trajectories on one prompt of ``prompt_chars`` characters."""

    type: Literal["round_started"] = "round_started"
    round: int
    k: int
    final: bool = Field(False, description="True for the final synthesis round (k = 1)")
    prompt_chars: int
    trimmed: int = Field(0, description="references dropped to fit the context (max_model_len); see budget.py")
    prompt_tokens: int | None = Field(
        None, description="the prompt's token count, when fitted to the context (max_model_len); see budget.py"
    )
    tokens_counted: Literal["tokenizer", "estimate"] | None = Field(
        None, description="how prompt_tokens was had: the server's tokenizer, or an estimate (see budget.py)"
    )
    request_bytes: int | None = Field(None, description="the JSON size of one request's messages (images included)")
    max_tokens: int | None = Field(
        None, description="the round's max_tokens: what fits the context, or as sampled (see budget.py); None: no cap"
    )


class TrajectoryFinished(_Event):
    """One trajectory came back (or failed, with ``error`` set, and the failure policy let the round go on).

    The request, content and reasoning are there for traces; they are not state.
    """

    type: Literal["trajectory_finished"] = "trajectory_finished"
    round: int
    index: int
    final: bool = False
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    answer: str | None = Field(None, description="the answer extracted from the conclusion, if any")
    started_at: float = Field(description="wall-clock start (Unix seconds)")
    seconds: float
    content: str
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="the tool calls it proposed (OpenAI form), never executed"
    )
    messages: list[dict[str, Any]] = Field(description="the request's chat messages")
    params: dict[str, Any] = Field(description="the request's sampling params")
    error: str | None = Field(
        None, description="why the request failed (after retries), when the failure policy let the round go on"
    )


class RoundCompacted(_Event):
    """A parallel round was compacted into the references (``messages``) the next round is shown."""

    type: Literal["round_compacted"] = "round_compacted"
    round: int
    k: int
    returned: int
    kept: int
    dropped_empty: int
    dropped_truncated: int
    failed: int = 0
    messages: list[str]
    next_prompt_chars: int


class SynthesisDelta(_Event):
    """A piece of the final synthesis, as it is generated."""

    type: Literal["synthesis_delta"] = "synthesis_delta"
    round: int
    content: str = ""
    reasoning: str = ""


class RunFinished(_Event):
    """The run's result: the answer, how the final trajectory ended, and the usage (with one row per round)."""

    type: Literal["run_finished"] = "run_finished"
    answer: str
    finish_reason: str
    usage: dict[str, Any]
    votes: dict[str, int] | None = None
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="the tool calls the synthesis made (OpenAI form), with tools"
    )


#: Any of the events, discriminated by ``type``.
PaCoReEvent = Annotated[
    RoundStarted | TrajectoryFinished | RoundCompacted | SynthesisDelta | RunFinished,
    Field(discriminator="type"),
]

_EVENT_TYPES = frozenset({"round_started", "trajectory_finished", "round_compacted", "synthesis_delta", "run_finished"})
_ADAPTER: TypeAdapter[PaCoReEvent] = TypeAdapter(PaCoReEvent)

#: What the nodes write events with.
EventWriter = Callable[[_Event], None]


def event_writer() -> EventWriter:
    """The stream writer of the running node (a no-op outside a ``custom``-mode stream)."""
    writer: EventWriter = get_stream_writer()
    return writer


def parse_event(payload: Any) -> PaCoReEvent | None:
    """The PaCoRe event in a ``custom`` stream chunk, or ``None`` if the chunk is something else.

    Accepts the models themselves (an in-process stream) and their JSON dicts (a remote stream).
    """
    if isinstance(payload, RoundStarted | TrajectoryFinished | RoundCompacted | SynthesisDelta | RunFinished):
        return payload
    if isinstance(payload, Mapping) and payload.get("type") in _EVENT_TYPES:
        try:
            return _ADAPTER.validate_python(dict(payload))
        except ValidationError:
            return None
    return None


async def stream_events(graph: Any, inputs: Any, config: Any = None) -> AsyncIterator[PaCoReEvent]:
    """Run ``graph`` on ``inputs`` and yield its PaCoRe events, from subgraphs too (with their namespace).

    ``graph`` is a compiled LangGraph graph (the PaCoRe graph, or a parent that contains it). This is
    :func:`pacore_graph.run.stream_run` without its final result; use that to get the result as well.
    """
    from pacore_graph.run import stream_run  # deferred: run.py imports this module

    async for item in stream_run(graph, inputs, config=config):
        if not isinstance(item, PaCoReResult):
            yield item
