"""``run_graph`` and ``stream_run``: the one way to run a built graph and get its typed result.

Every face runs graphs through these two: ``pacore run`` (its live display and ``--trace`` read the events),
the proxy (plain and streaming), ``pacore eval`` and durable runs (:func:`pacore_graph.durable.run_durable`).
They take any compiled graph: PaCoRe, self-consistency, sequential, code-verified, or a parent graph that runs
one of them as a subgraph::

    result = await run_graph(graph, {"problem": "What is 17 * 23?"})
    print(result.answer, result.usage.effective_ttc_tokens)

    async for item in stream_run(graph, {"problem": "What is 17 * 23?"}):
        if isinstance(item, PaCoReResult):
            print(item.answer)           # always the last item
        else:
            print(item.type)             # a PaCoReEvent, as it happens

The result is read from LangGraph's top-level ``values`` stream, whose last chunk is the graph's final state
(what ``ainvoke`` returns), restricted to the graph's output keys. A parent graph whose own state lacks
``finish_reason`` or ``usage`` gets them from the last PaCoRe output a subgraph streamed; the parent's keys win
where both have one, and its other output keys go to :attr:`PaCoReResult.extra`. A graph that ends without
that output raises :class:`~pacore_graph.errors.GraphOutputError`.

``inputs=None`` with a checkpointer and a ``thread_id`` in ``config`` resumes the thread from its last
checkpoint (LangGraph's convention); on a finished thread it returns the stored result without running a node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Durability, StreamMode
from pydantic import ValidationError

from pacore_graph.errors import GraphOutputError
from pacore_graph.events import PaCoReEvent, parse_event
from pacore_graph.overrides import Overrides
from pacore_graph.result import PaCoReResult

__all__ = ["OUTPUT_KEYS", "run_graph", "stream_run"]

#: The keys every graph's output must have for a result to be read from it.
OUTPUT_KEYS = ("answer", "finish_reason", "usage")

#: The key LangGraph streams an ``interrupt()`` under (its own constant is private since LangGraph 1.0).
_INTERRUPT = "__interrupt__"


async def run_graph(
    graph: Pregel[Any, Any, Any, Any],
    inputs: Any,
    *,
    config: RunnableConfig | None = None,
    durability: Durability | None = None,
    context: Mapping[str, Any] | Overrides | None = None,
    progress: Callable[[PaCoReEvent], None] | None = None,
) -> PaCoReResult:
    """Run ``graph`` on ``inputs`` to the end and return its typed result.

    ``progress`` is called with each PaCoRe event as it happens, e.g. :class:`~pacore_graph.progress.RunProgress`
    (plain progress lines on standard error); without it no event is made.

    ``config`` is LangGraph's (a ``thread_id`` for a checkpointed graph); ``durability`` is LangGraph's
    (``"sync"`` for durable runs, see :mod:`pacore_graph.durable`); ``context`` is the run's settings
    (LangGraph's runtime context, :class:`~pacore_graph.state.PaCoReContext`, e.g. ``{"schedule": "8"}``).
    Raises what the graph raises (a :class:`~pacore_graph.errors.RoundError`, a
    :class:`~pacore_graph.errors.BackendError`, ...) and :class:`~pacore_graph.errors.GraphOutputError`
    when it ends without an answer.
    """
    final: PaCoReResult | None = None
    async for item in _run(graph, inputs, config, durability, context, events=progress is not None):
        if isinstance(item, PaCoReResult):
            final = item
        elif progress is not None:
            progress(item)
    assert final is not None  # _run ends with the result or raises
    return final


async def stream_run(
    graph: Pregel[Any, Any, Any, Any],
    inputs: Any,
    *,
    config: RunnableConfig | None = None,
    durability: Durability | None = None,
    context: Mapping[str, Any] | Overrides | None = None,
) -> AsyncIterator[PaCoReEvent | PaCoReResult]:
    """Run ``graph`` like :func:`run_graph`, yielding its PaCoRe events as they happen and then the result.

    Events from subgraphs come too, with :attr:`namespace` set to where they ran (``()`` at the top level).
    The :class:`~pacore_graph.result.PaCoReResult` is the last item; a failed run raises instead.
    """
    async for item in _run(graph, inputs, config, durability, context, events=True):
        yield item


async def _run(
    graph: Pregel[Any, Any, Any, Any],
    inputs: Any,
    config: RunnableConfig | None,
    durability: Durability | None,
    context: Mapping[str, Any] | Overrides | None,
    *,
    events: bool,
) -> AsyncIterator[PaCoReEvent | PaCoReResult]:
    # Without the "custom" mode the nodes' stream writers are no-ops: run_graph pays nothing for events.
    modes: list[StreamMode] = ["custom", "values"] if events else ["values"]
    top: Mapping[str, Any] | None = None
    nested: Mapping[str, Any] | None = None  # the last PaCoRe output a subgraph streamed
    interrupted = False
    async for namespace, mode, chunk in graph.astream(
        inputs, config, stream_mode=modes, subgraphs=True, durability=durability, context=context
    ):
        if mode == "custom":
            event = parse_event(chunk)
            if event is not None:
                if namespace:
                    event.namespace = tuple(namespace)
                yield event
        elif not isinstance(chunk, Mapping):
            continue
        elif _INTERRUPT in chunk:
            interrupted = interrupted or not namespace
        elif not namespace:
            top = chunk
        elif all(key in chunk for key in OUTPUT_KEYS):
            nested = chunk
    yield _result(top, nested, _output_keys(graph), interrupted=interrupted)


def _output_keys(graph: Pregel[Any, Any, Any, Any]) -> Sequence[str]:
    channels = graph.output_channels
    return [channels] if isinstance(channels, str) else list(channels)


def _result(
    top: Mapping[str, Any] | None,
    nested: Mapping[str, Any] | None,
    output_keys: Sequence[str],
    *,
    interrupted: bool,
) -> PaCoReResult:
    """The result from the final top-level values (only the output keys), completed by a subgraph's output."""
    output = dict(nested or {})
    output.update({key: value for key, value in (top or {}).items() if key in output_keys})
    missing = [key for key in OUTPUT_KEYS if output.get(key) is None]
    if missing:
        if interrupted:
            raise GraphOutputError(
                "the graph stopped at an interrupt() before it had an answer; resume it with "
                "Command(resume=...) and the same thread_id"
            )
        raise GraphOutputError(
            f"the graph finished without {', '.join(missing)} in its output: a graph's output schema must "
            "carry answer, finish_reason and usage (PaCoReOutput), or the graph must run a PaCoRe graph as a "
            "subgraph"
        )
    try:
        return PaCoReResult.from_output(output)
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise GraphOutputError(
            f"the graph's output is not in PaCoRe's form ({type(exc).__name__}: {exc}); its usage must be a "
            "UsageSummary (token totals and one row per round)"
        ) from exc
