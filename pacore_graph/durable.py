"""Durable runs: LangGraph checkpointers (SQLite by default, PostgreSQL by URL) and resuming a run by its id.

A run checkpoints under its run id (LangGraph's ``thread_id``). Graphs run with ``durability="sync"``: every
super-step's checkpoint is saved before the next step starts, and each explorer's result is saved as a
*pending write* of its task as soon as that task finishes. Resuming (invoking with ``None`` input and the same
thread id) replays those pending writes, so trajectories that completed before a crash are not requested
again; only the unfinished ones (and later rounds) run. Nothing here reimplements that: it is LangGraph's.

Events (and so ``--trace`` and the live display) come only from the nodes that run again after a resume.

::

    async with open_checkpointer() as saver:            # ~/.cache/pacore-graph/runs.sqlite
        graph = load_graph("pacore-low", client, checkpointer=saver)
        output = await run_durable(graph, "What is 17 * 23?", run_id="job-1")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability

from pacore_graph.errors import ConfigError
from pacore_graph.run import run_graph

__all__ = [
    "DURABILITY",
    "POSTGRES_INSTALL_HINT",
    "RunStatus",
    "check_resumable",
    "default_checkpoint_path",
    "open_checkpointer",
    "run_config",
    "run_durable",
]

#: How durable runs are executed: a step's checkpoint is saved before the next step starts; each task's
#: writes are saved as the task finishes (in every mode but "exit").
DURABILITY: Durability = "sync"

#: Shown when ``--checkpoint-url postgresql://...`` is used without the optional dependencies.
POSTGRES_INSTALL_HINT = "pip install 'pacore-graph[postgres]'"


def default_checkpoint_path() -> Path:
    """The default SQLite checkpoint file: ``runs.sqlite`` in the cache root (``$PACORE_CACHE_DIR`` respected)."""
    from pacore_graph.engine.paths import cache_root

    return cache_root() / "runs.sqlite"


@asynccontextmanager
async def open_checkpointer(
    db_path: str | Path | None = None, *, url: str | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """An async LangGraph checkpointer, set up and closed with the block.

    ``url`` (``postgresql://...``) selects PostgreSQL (``langgraph-checkpoint-postgres``, the ``postgres``
    extra); otherwise SQLite at ``db_path`` (default :func:`default_checkpoint_path`), created if missing.
    """
    if url is not None:
        if not url.startswith(("postgresql://", "postgres://")):
            scheme = url.split(":", 1)[0]  # not the whole URL: it may hold a password
            raise ConfigError(f"invalid checkpoint URL scheme {scheme!r}: use postgresql://USER:PASSWORD@HOST:PORT/DB")
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError as exc:
            raise ConfigError(f"PostgreSQL checkpoints need extra packages: {POSTGRES_INSTALL_HINT}") from exc
        try:
            manager = AsyncPostgresSaver.from_conn_string(url)
            saver = await manager.__aenter__()
        except Exception as exc:  # psycopg's OperationalError and friends: say where and what next
            detail = _redact(" ".join(str(exc).split()), url)  # one line, without the password
            raise ConfigError(
                f"cannot open the PostgreSQL checkpoint store ({type(exc).__name__}: {detail}); "
                "check --checkpoint-url and that the server is running"
            ) from exc
        try:
            await saver.setup()
            yield saver
        finally:
            await manager.__aexit__(None, None, None)
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # deferred: only durable runs need it

    path = Path(db_path) if db_path is not None else default_checkpoint_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path.parent} for the checkpoint database: {exc.strerror or exc}") from exc
    async with AsyncSqliteSaver.from_conn_string(str(path)) as sqlite_saver:
        await sqlite_saver.setup()
        yield sqlite_saver


def _redact(text: str, url: str) -> str:
    """Drop the password of ``url`` from an error message."""
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def run_config(run_id: str) -> RunnableConfig:
    """The LangGraph config of run ``run_id`` (its ``thread_id``)."""
    if not run_id.strip():
        raise ConfigError("the run id is empty; pass --run-id NAME")
    return {"configurable": {"thread_id": run_id}}


@dataclass(frozen=True)
class RunStatus:
    """Where a run id stands: ``new`` (no checkpoint), ``interrupted`` (resumable) or ``finished``."""

    state: Literal["new", "interrupted", "finished"]
    values: dict[str, Any]


async def check_resumable(
    graph: CompiledStateGraph[Any, Any, Any, Any], run_id: str, problem: str | list[dict[str, Any]]
) -> RunStatus:
    """Look the run up; raise ``ConfigError`` if it exists but was started with another problem."""
    snapshot = await graph.aget_state(run_config(run_id))
    if not snapshot.values and not snapshot.next:
        return RunStatus("new", {})
    stored = snapshot.values.get("problem")
    if stored is not None and stored != problem:
        raise ConfigError(
            f"run {run_id!r} was started with a different problem ({_preview(stored)}); give the same problem "
            "to resume it, or pick a new --run-id"
        )
    return RunStatus("interrupted" if snapshot.next else "finished", dict(snapshot.values))


def _preview(text: Any, limit: int = 60) -> str:
    if not isinstance(text, str):
        return f"{len(text)} chat message(s)" if isinstance(text, list) else type(text).__name__
    return repr(text if len(text) <= limit else text[:limit] + "…")


async def run_durable(graph: CompiledStateGraph[Any, Any, Any, Any], problem: str, *, run_id: str) -> dict[str, Any]:
    """Run ``graph`` (compiled with a checkpointer) on ``problem`` as run ``run_id``, resuming it if interrupted.

    The graph itself (spec, schedule, sampling) is not checked: resume with the same one. A finished run
    returns its stored output without calling the model. Returns the final state values (the whole state,
    ``problem`` included); for the typed result, run the graph with :func:`~pacore_graph.run.run_graph`
    (``inputs=None`` resumes) under :func:`run_config`'s config and ``durability=DURABILITY``.
    """
    status = await check_resumable(graph, run_id, problem)
    if status.state == "finished":
        return status.values
    config = run_config(run_id)
    inputs = None if status.state == "interrupted" else {"problem": problem}
    await run_graph(graph, inputs, config=config, durability=DURABILITY)
    return dict((await graph.aget_state(config)).values)
