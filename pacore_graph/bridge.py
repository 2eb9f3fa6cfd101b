"""Sync ``invoke``/``stream`` for the async graphs: the async run, driven on one background event loop.

The nodes are async (every backend is), and LangGraph's sync ``invoke``/``stream`` refuse async nodes. Giving
each node a sync twin would start an event loop per node and break pooled clients (an aiohttp session belongs to
the loop that opened it). Instead a :class:`SyncBridgedGraph` runs ``astream`` on one event loop in a daemon
thread, shared by every sync call in the process, and hands the chunks to the calling thread; ``invoke`` and
``batch`` go through ``stream``, so they work too, and so does a sync parent graph that runs it as a subgraph.

A pooled client lives on the loop of its first call: use a backend either from sync code or from one event loop.
A sync call from inside the bridge's own loop (an async node calling ``graph.invoke``) would deadlock, so it is
refused with a :class:`~pacore_graph.errors.ConfigError`: use ``ainvoke`` there.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from langgraph.graph.state import CompiledStateGraph

from pacore_graph.errors import ConfigError

__all__ = ["SyncBridgedGraph", "bridge_sync", "iterate_sync", "run_sync"]

T = TypeVar("T")
Graph = TypeVar("Graph", bound=CompiledStateGraph[Any, Any, Any, Any])

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """The process's bridge loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="pacore-sync-bridge", daemon=True)
            _thread.start()
        return _loop


def _check_not_on_bridge() -> asyncio.AbstractEventLoop:
    loop = _background_loop()
    if threading.current_thread() is _thread:
        raise ConfigError(
            "a sync invoke/stream was called from async code running on the sync bridge's loop, which would "
            "deadlock; use ainvoke/astream there"
        )
    return loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the bridge loop and return its result (its exception, if it raises)."""
    try:
        loop = _check_not_on_bridge()
    except ConfigError:
        coroutine.close()
        raise
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


_DONE = object()


def iterate_sync(start: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Iterate the async iterator ``start()`` makes on the bridge loop, yielding its items in this thread.

    Stopping early (closing the generator) cancels the async iteration and waits until it has unwound.
    """
    loop = _check_not_on_bridge()
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    started, finished = threading.Event(), threading.Event()

    async def pump() -> None:
        started.set()  # no await before the try: once started, the finally runs
        try:
            async for item in start():
                items.put((True, item))
        except BaseException as exc:  # handed to the caller, which re-raises it
            items.put((False, exc))
        else:
            items.put((False, _DONE))
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        while True:
            ok, value = items.get()
            if ok:
                yield value
            elif value is _DONE:
                return
            else:
                raise value
    finally:
        if not future.done():
            future.cancel()
        if started.is_set():
            finished.wait()  # the run's cancellation has unwound: no request outlives the call


class SyncBridgedGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled graph whose sync ``stream`` (hence ``invoke`` and ``batch``) runs its async ``astream``."""

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Like LangGraph's ``stream``, with the same arguments: the run is the async one (see the module)."""
        return iterate_sync(lambda: self.astream(*args, **kwargs))


def bridge_sync(graph: Graph) -> Graph:
    """Give a graph ``StateGraph.compile`` made a working sync ``invoke``/``stream`` (in place; returns it)."""
    if type(graph) is CompiledStateGraph:
        graph.__class__ = SyncBridgedGraph  # type: ignore[assignment]  # compile fixes the class; the subclass only adds the sync path
    return graph
