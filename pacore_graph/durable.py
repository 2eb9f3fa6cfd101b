"""Durable runs: LangGraph checkpointers (SQLite by default, PostgreSQL by URL) and resuming a run by its id.

A run checkpoints under its run id (LangGraph's ``thread_id``). Graphs run with ``durability="sync"``: every
super-step's checkpoint is saved before the next step starts, and each explorer's result is saved as a
*pending write* of its task as soon as that task finishes. Resuming (invoking with ``None`` input and the same
thread id) replays those pending writes, so trajectories that completed before a crash are not requested
again; only the unfinished ones (and later rounds) run. Nothing here reimplements that: it is LangGraph's.

Events (and so ``--trace`` and the live display) come only from the nodes that run again after a resume.

One run id, one process: :func:`lock_run` (used by :func:`run_durable` and ``pacore run --run-id``) holds the
run's lock in the checkpoint store while the run goes on, and a second process asking for it gets
:class:`RunInProgressError`. The lock is released when the holder ends, however it ends: with SQLite it is an
``flock`` on a file beside the database (``runs.sqlite.locks/``), with PostgreSQL a session advisory lock.

A checkpoint store that cannot be read (a file that is not SQLite, a malformed database, a checkpoint that does not
decode) raises :class:`CorruptCheckpointError`, one line naming the file.

::

    async with open_checkpointer() as saver:            # ~/.cache/pacore-graph/runs.sqlite
        graph = load_graph("pacore-low", client, checkpointer=saver)
        output = await run_durable(graph, "What is 17 * 23?", run_id="job-1")
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability

from pacore_graph.errors import ConfigError
from pacore_graph.messages import last_user_text
from pacore_graph.run import run_graph

__all__ = [
    "DURABILITY",
    "POSTGRES_INSTALL_HINT",
    "CorruptCheckpointError",
    "RunInProgressError",
    "RunStatus",
    "check_resumable",
    "default_checkpoint_path",
    "lock_run",
    "open_checkpointer",
    "run_config",
    "run_durable",
]

#: How durable runs are executed: a step's checkpoint is saved before the next step starts; each task's
#: writes are saved as the task finishes (in every mode but "exit").
DURABILITY: Durability = "sync"

#: Shown when ``--checkpoint-url postgresql://...`` is used without the optional dependencies.
POSTGRES_INSTALL_HINT = "pip install 'pacore-graph[postgres]'"


class CorruptCheckpointError(ConfigError):
    """The checkpoint store cannot be read: not a SQLite file, a malformed database, or an undecodable checkpoint."""


class RunInProgressError(ConfigError):
    """Another process holds the run's lock: two processes must not run one run id at once."""


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
            _name_store(saver, _redact(url, url))
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
        _name_store(sqlite_saver, str(path))
        try:
            await sqlite_saver.setup()
            yield sqlite_saver
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            raise _corrupt(str(path), exc) from exc


#: The saver attribute naming its store (a file, or a URL without its password) in error messages.
_STORE_NAME = "_pacore_store_name"


def _corrupt(where: str, exc: BaseException) -> CorruptCheckpointError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return CorruptCheckpointError(
        f"{where}: the checkpoint store is corrupt or not a checkpoint database ({detail}); move the file aside "
        "(a new one is created) or pass another --checkpoint-db"
    )


def _name_store(saver: BaseCheckpointSaver[Any], where: str) -> None:
    # An attribute, not a wrapped serializer: LangGraph replaces the serializer for its msgpack allowlist, and a
    # clone (copy.copy) keeps the attribute.
    setattr(saver, _STORE_NAME, where)


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


#: Prefix of the PostgreSQL advisory lock keys (hashed with the run id), so other users of the database differ.
_PG_LOCK_PREFIX = "pacore-graph run:"


@asynccontextmanager
async def lock_run(saver: BaseCheckpointSaver[Any], run_id: str) -> AsyncIterator[None]:
    """Hold run ``run_id``'s lock in ``saver``'s store for the block; :class:`RunInProgressError` if it is taken.

    SQLite (:func:`open_checkpointer`'s ``AsyncSqliteSaver``): an exclusive ``flock`` on a file in
    ``<database>.locks/``, holding the owner's pid and host for the message. PostgreSQL (``AsyncPostgresSaver``):
    ``pg_try_advisory_lock`` on the saver's connection. Both are released by the kernel or the server when the
    holder dies. Other savers (e.g. in-memory) are not shared between processes and are not locked.
    """
    run_config(run_id)  # an empty id is refused first
    module = type(saver).__module__
    if module.startswith("langgraph.checkpoint.sqlite"):
        path = await _sqlite_file(saver)
        if path is not None:
            with _file_lock(path, run_id):
                yield
            return
    elif module.startswith("langgraph.checkpoint.postgres"):
        async with _advisory_lock(saver, run_id):
            yield
        return
    yield


async def _sqlite_file(saver: Any) -> str | None:
    """The database file of an async SQLite saver (None in memory)."""
    async with saver.conn.execute("PRAGMA database_list") as cursor:
        for _, name, file in await cursor.fetchall():
            if name == "main":
                return str(file) or None
    return None


@contextlib.contextmanager
def _file_lock(database: str, run_id: str) -> Iterator[None]:
    folder = Path(database + ".locks")
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create the lock of run {run_id!r} in {folder}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunInProgressError(
                f"run {run_id!r} is already running ({owner}); wait for it to finish, or pick another --run-id"
            ) from None
        since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock


@asynccontextmanager
async def _advisory_lock(saver: Any, run_id: str) -> AsyncIterator[None]:
    from psycopg_pool import AsyncConnectionPool

    key = _PG_LOCK_PREFIX + run_id
    if isinstance(saver.conn, AsyncConnectionPool):  # a session lock needs one connection for the whole run
        async with saver.conn.connection() as conn, _advisory_lock_on(conn, None, key, run_id):
            yield
        return
    async with _advisory_lock_on(saver.conn, saver.lock, key, run_id):
        yield


@asynccontextmanager
async def _advisory_lock_on(conn: Any, lock: Any, key: str, run_id: str) -> AsyncIterator[None]:
    async def scalar(sql: str) -> Any:
        async with lock if lock is not None else contextlib.nullcontext(), conn.cursor() as cursor:
            await cursor.execute(sql, (key,))
            row = await cursor.fetchone()
        return next(iter(row.values())) if isinstance(row, dict) else row[0]

    if not await scalar("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"):
        raise RunInProgressError(
            f"run {run_id!r} is already running in another process (it holds the run's lock in the PostgreSQL "
            "store); wait for it to finish, or pick another --run-id"
        )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost connection has released the lock already
            await scalar("SELECT pg_advisory_unlock(hashtextextended(%s, 0))")


@dataclass(frozen=True)
class RunStatus:
    """Where a run id stands: ``new`` (no checkpoint), ``interrupted`` (resumable) or ``finished``."""

    state: Literal["new", "interrupted", "finished"]
    values: dict[str, Any]


async def check_resumable(
    graph: CompiledStateGraph[Any, Any, Any, Any], run_id: str, problem: str | list[dict[str, Any]]
) -> RunStatus:
    """Look the run up; raise ``ConfigError`` if it exists but was started with another problem."""
    # The latest checkpoint and its pending writes are decoded here first: what fails to decode (msgpack errors are
    # ValueErrors) or is not a checkpoint is a corrupt store.
    try:
        snapshot = await graph.aget_state(run_config(run_id))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise _corrupt(getattr(graph.checkpointer, _STORE_NAME, "the checkpoint store"), exc) from exc
    if not snapshot.values and not snapshot.next:
        return RunStatus("new", {})
    stored = snapshot.values.get("problem")
    if stored is None:  # prepare consumed it into x, the conversation: its user turn is the problem
        stored = last_user_text(snapshot.values.get("conversation") or [])
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
    (``inputs=None`` resumes) under :func:`run_config`'s config and ``durability=DURABILITY``. The run's lock is
    held throughout (:func:`lock_run`): another process on the same id gets :class:`RunInProgressError`.
    """
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(graph.checkpointer, BaseCheckpointSaver):
            await stack.enter_async_context(lock_run(graph.checkpointer, run_id))
        status = await check_resumable(graph, run_id, problem)
        if status.state == "finished":
            return status.values
        config = run_config(run_id)
        inputs = None if status.state == "interrupted" else {"problem": problem}
        await run_graph(graph, inputs, config=config, durability=DURABILITY)
        return dict((await graph.aget_state(config)).values)
