"""Start a real vLLM OpenAI-compatible server as a child process and wait until it serves.

Two faces over one core:

* :class:`LocalEngine` — ``async with LocalEngine() as engine:``; the engine lives as long as the block.
* :func:`start_engine` — blocking, returns an :class:`EngineProcess` (for sync code, pytest fixtures,
  and ``pacore engine up``). Call :meth:`EngineProcess.stop` when done.

With no ``model`` the default SmolLM2-135M-Instruct is converted once (see :mod:`.model`) and served on
the CPU as float32 with an 8192-token context. With ``model="org/name"`` or a local path, that model is
passed straight to vLLM (meant for a machine where the GPU ``vllm`` package is installed), with no
CPU-specific flags; add your own with ``extra_args``/``env``.

Tool calls: ``tool_call_parser`` turns on vLLM's tool calling (``--enable-auto-tool-choice --tool-call-parser
NAME``), so requests with ``tools`` and ``tool_choice: "auto"`` are served and the model's calls come back as
``message.tool_calls``. The default model gets the ``hermes`` parser; a model you name gets none unless you give
its parser (vLLM lists them: ``hermes``, ``llama3_json``, ``mistral``, ...); ``""`` turns it off.

Stopping: the server runs in its own process group, and every exit path (normal, exception,
cancellation, Ctrl-C) SIGTERMs the group, waits up to ``stop_grace`` seconds, then SIGKILLs it. As last
resorts, an ``atexit`` hook stops engines still running when the interpreter exits, and on Linux the
server gets SIGTERM from the kernel if the process that started it dies (PR_SET_PDEATHSIG; see
:mod:`.process`), which covers a SIGKILLed parent.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pacore_graph.engine.address import EngineAddress
from pacore_graph.engine.detect import EngineEnvironment, probe_environment, require_vllm
from pacore_graph.engine.errors import EngineError
from pacore_graph.engine.model import ProgressCallback, aprepare_model
from pacore_graph.engine.paths import new_log_path
from pacore_graph.engine.process import (
    aterminate_group,
    free_port,
    log_tail,
    pid_alive,
    probe_ready,
    spawn,
    spawn_detached,
    terminate_group,
)

if TYPE_CHECKING:
    from pacore_graph.clients.vllm import VLLMClient

__all__ = [
    "DEFAULT_SERVED_NAME",
    "DEFAULT_STARTUP_TIMEOUT",
    "START_PHASE",
    "START_SECONDS",
    "EngineProcess",
    "LocalEngine",
    "start_engine",
]

#: The name the default model is served under (the ``model`` field of requests).
DEFAULT_SERVED_NAME = "smollm2"
#: The tool-call parser the default model is served with (SmolLM2 writes Hermes-style ``<tool_call>`` JSON).
DEFAULT_TOOL_CALL_PARSER = "hermes"
#: SmolLM2's native context length.
DEFAULT_MAX_MODEL_LEN = 8192
#: Seconds to wait for ``/v1/models``; start-up takes ~30-60 s here, slower on a cold disk cache.
DEFAULT_STARTUP_TIMEOUT = 300.0
#: How long a start usually takes: measured 20-64 s for SmolLM2-135M on a shared 2-core machine (README says so).
START_SECONDS = "20 s to a minute"
#: Progress text while the server starts.
START_PHASE = f"Starting the vLLM engine (start-up usually takes {START_SECONDS})"

_PORT_RETRIES = 3
_LIVE: dict[int, EngineProcess] = {}


@dataclass(frozen=True)
class EngineProcess(EngineAddress):
    """A running (or starting) vLLM server we spawned: its :class:`EngineAddress`, and how to wait for or stop it.

    ``popen`` is the :class:`subprocess.Popen` when this process is its parent (None when detached).
    """

    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def failure(self, what: str) -> EngineError:
        """An :class:`EngineError` for this engine with the log path and its last lines."""
        return EngineError(f"{what}. Log: {self.log_path}", log_path=self.log_path, log_tail=log_tail(self.log_path))

    def check(self) -> bool:
        """One readiness check: True when serving, False while starting; raises if the server exited."""
        if self.popen is not None:
            code = self.popen.poll()
            if code is not None:
                raise self.failure(f"The vLLM engine exited during start-up (exit code {code})")
        elif not pid_alive(self.pid):  # detached: not our child, so no exit code to read
            raise self.failure("The vLLM engine exited during start-up")
        return probe_ready(self.base_url)

    async def await_ready(
        self, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT, progress: ProgressCallback | None = None
    ) -> None:
        """Wait until the server serves; raise :class:`EngineError` if it dies or ``startup_timeout`` passes."""
        started = time.monotonic()
        while not await asyncio.to_thread(self.check):
            elapsed = time.monotonic() - started
            if elapsed > startup_timeout:
                raise self.failure(f"The vLLM engine was not ready after {startup_timeout:.0f} s")
            if progress is not None:
                progress(START_PHASE, elapsed)
            await asyncio.sleep(1.0)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the whole process group (SIGTERM, ``grace`` seconds, SIGKILL). Idempotent."""
        try:
            terminate_group(self.pid, popen=self.popen, grace=grace)
        finally:
            _LIVE.pop(self.pid, None)

    async def astop(self, grace: float = 10.0) -> None:
        """Async :meth:`stop`; if cancelled meanwhile it SIGKILLs at once, so nothing is left behind."""
        try:
            await aterminate_group(self.pid, popen=self.popen, grace=grace)
        finally:
            _LIVE.pop(self.pid, None)


def _stop_leftovers() -> None:
    # atexit: engines whose owner never reached stop() (e.g. an un-awaited task at shutdown).
    for proc in list(_LIVE.values()):
        proc.stop(grace=5.0)


atexit.register(_stop_leftovers)


@dataclass(frozen=True)
class _Plan:
    """Everything needed to spawn vLLM, computed before any process starts."""

    argv_tail: tuple[str, ...]  # after --port N
    env: dict[str, str]
    python: str
    model_path: str
    served: str
    host: str
    port: int | None


@dataclass(frozen=True)
class _Options:
    """The arguments of :func:`start_engine` and :class:`LocalEngine`, in one place (documented there)."""

    model: str | None
    served_model_name: str | None
    host: str
    port: int | None
    python: str | None
    cache_dir: Path | None
    log_path: Path | None
    max_model_len: int | None
    extra_args: tuple[str, ...]
    env: Mapping[str, str]
    startup_timeout: float
    progress: ProgressCallback | None
    watch_parent: bool
    stop_grace: float
    on_spawn: Callable[[EngineProcess], None] | None
    tool_call_parser: str | None = None


def _tool_args(parser: str | None, default_model: bool, extra_args: Sequence[str]) -> list[str]:
    """vLLM's tool-calling flags for ``parser`` (None: the default model's), unless ``extra_args`` set their own."""
    if parser is None:
        parser = DEFAULT_TOOL_CALL_PARSER if default_model else ""
    if not parser or any(arg.split("=", 1)[0] == "--tool-call-parser" for arg in extra_args):
        return []
    return ["--enable-auto-tool-choice", "--tool-call-parser", parser]


def _plan(env_info: EngineEnvironment, model_path: str, options: _Options) -> _Plan:
    default_model = options.model is None
    served = options.served_model_name or (DEFAULT_SERVED_NAME if default_model else model_path)
    child_env = dict(os.environ)
    child_env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"})
    args = ["--model", model_path, "--served-model-name", served, "--host", options.host]
    max_model_len = options.max_model_len
    if default_model:
        # Measured on a 2-core CPU box: float32 (bf16 is slow or unsupported there), eager mode (no
        # compile step at start-up) and a 1 GiB KV cache = 23,296 tokens, 2.8 full 8k sequences.
        child_env["HF_HUB_OFFLINE"] = "1"
        child_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        args += ["--dtype", "float32", "--enforce-eager"]
        # Seeded requests (`--seed`, train build's pool) crash vllm-cpu 0.32's engine when their prompt is
        # prefilled in chunks ("CPU Generator does not use offset"): schedule each prompt whole instead.
        args += ["--no-enable-chunked-prefill"]
        max_model_len = max_model_len or DEFAULT_MAX_MODEL_LEN
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    args += _tool_args(options.tool_call_parser, default_model, options.extra_args)
    args += list(options.extra_args)
    child_env.update(options.env)
    return _Plan(tuple(args), child_env, env_info.python, model_path, served, options.host, options.port)


def _argv(plan: _Plan, port: int) -> list[str]:
    # `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: in vllm-cpu 0.32.0 the `vllm`
    # CLI crashes looking up the metadata of a distribution named "vllm".
    return [plan.python, "-m", "vllm.entrypoints.openai.api_server", *plan.argv_tail, "--port", str(port)]


def _spawn(plan: _Plan, *, log_path: Path | None, cache_dir: Path | None, watch_parent: bool) -> EngineProcess:
    port = plan.port or free_port(plan.host)
    log = log_path or new_log_path("vllm", cache_dir)
    popen: subprocess.Popen[bytes] | None = None
    if watch_parent:
        popen = spawn(_argv(plan, port), env=plan.env, log_path=log, watch_parent=True)
        pid = popen.pid
    else:
        try:
            pid = spawn_detached(_argv(plan, port), env=plan.env, log_path=log)
        except OSError as exc:
            raise EngineError(f"Could not start the vLLM engine: {exc}. Log: {log}") from exc
    proc = EngineProcess(
        pid=pid,
        host=plan.host,
        port=port,
        model=plan.served,
        model_path=plan.model_path,
        log_path=log,
        started_at=time.time(),
        popen=popen,
    )
    if watch_parent:
        _LIVE[proc.pid] = proc
    return proc


def _port_clash(plan: _Plan, proc: EngineProcess) -> bool:
    # free_port() can race with another program; only retry ports we picked ourselves.
    return plan.port is None and "Address already in use" in log_tail(proc.log_path, 200)


def start_engine(
    model: str | None = None,
    *,
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    python: str | None = None,
    cache_dir: Path | None = None,
    log_path: Path | None = None,
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    progress: ProgressCallback | None = None,
    watch_parent: bool = True,
    on_spawn: Callable[[EngineProcess], None] | None = None,
    tool_call_parser: str | None = None,
) -> EngineProcess:
    """Start vLLM and block until it serves; the caller must :meth:`~EngineProcess.stop` it.

    Runs the same launch as :class:`LocalEngine` in its own event loop, so call it where no loop is running
    (from async code, use :class:`LocalEngine`).

    Args:
        model: None for the built-in SmolLM2, else a hub name or local path passed to vLLM as is.
        served_model_name: the request ``model`` name (default ``"smollm2"``, or ``model``).
        host, port: where to listen (default: loopback, a free port).
        python: the interpreter with vllm (default ``$PACORE_ENGINE_PYTHON`` or this one).
        cache_dir: root of the model cache, logs and state (see :mod:`.paths`).
        log_path: the server log (default: a new file under ``<cache>/engine/logs``).
        max_model_len: context length (default 8192 for SmolLM2, vLLM's choice otherwise).
        extra_args, env: more vLLM flags and environment variables, appended/overriding.
        startup_timeout: seconds to wait for ``/v1/models``.
        progress: called about once a second with (phase text, elapsed seconds).
        watch_parent: tie the server's life to this process (off for a detached ``pacore engine up``).
        on_spawn: called with the process right after it is spawned, before it is ready.
        tool_call_parser: vLLM's tool-call parser (see the module docstring); None: ``hermes`` for the default
            model, none for a named one; ``""``: off.

    Raises:
        EngineNotInstalledError: vllm (or the default model's packages) is missing; the message says
            what to install.
        EngineError: the server exited or timed out; the message has the log path and last lines.
    """
    # One core for both faces: the async launch, run to completion here. Ctrl-C cancels it, and its cleanup
    # stops the server.
    options = _Options(
        model,
        served_model_name,
        host,
        port,
        python,
        cache_dir,
        log_path,
        max_model_len,
        tuple(extra_args),
        dict(env or {}),
        startup_timeout,
        progress,
        watch_parent,
        10.0,
        on_spawn,
        tool_call_parser,
    )
    return asyncio.run(_launch(options))


async def _launch(options: _Options) -> EngineProcess:
    """Prepare the model if needed, start the server and wait until it serves; stop it on any failure."""
    env_info = await asyncio.to_thread(probe_environment, options.python)
    require_vllm(env_info)
    if options.model is None:
        model_path = str(await aprepare_model(options.cache_dir, options.progress, python=env_info.python))
    else:
        model_path = str(options.model)
    plan = _plan(env_info, model_path, options)
    for attempt in range(_PORT_RETRIES):
        # Spawned on the loop's thread: PR_SET_PDEATHSIG is tied to the thread that forks.
        proc = _spawn(plan, log_path=options.log_path, cache_dir=options.cache_dir, watch_parent=options.watch_parent)
        try:
            if options.on_spawn is not None:
                options.on_spawn(proc)
            await proc.await_ready(options.startup_timeout, options.progress)
        except EngineError:
            await proc.astop(options.stop_grace)
            if attempt + 1 < _PORT_RETRIES and _port_clash(plan, proc):
                continue
            raise
        except BaseException:  # cancellation / Ctrl-C during start-up: never leave the server behind
            await proc.astop(options.stop_grace)
            raise
        return proc
    raise AssertionError("unreachable")  # pragma: no cover


class LocalEngine:
    """``async with LocalEngine() as engine:`` — a vLLM server for the duration of the block.

    Takes the same arguments as :func:`start_engine` (except ``watch_parent``: always on), plus
    ``stop_grace``, the seconds between SIGTERM and SIGKILL when stopping. Inside the block, ``engine.base_url``,
    ``engine.model``, ``engine.pid`` and ``engine.log_path`` describe the server, and
    ``engine.client()`` builds a :class:`~pacore_graph.clients.vllm.VLLMClient` for it. Leaving the
    block, by any path including cancellation, stops the whole process tree.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        served_model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        python: str | None = None,
        cache_dir: Path | None = None,
        log_path: Path | None = None,
        max_model_len: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        progress: ProgressCallback | None = None,
        stop_grace: float = 10.0,
        on_spawn: Callable[[EngineProcess], None] | None = None,
        tool_call_parser: str | None = None,
    ) -> None:
        self._options = _Options(
            model,
            served_model_name,
            host,
            port,
            python,
            cache_dir,
            log_path,
            max_model_len,
            tuple(extra_args),
            dict(env or {}),
            startup_timeout,
            progress,
            True,
            stop_grace,
            on_spawn,
            tool_call_parser,
        )
        self._proc: EngineProcess | None = None

    @property
    def process(self) -> EngineProcess:
        """The running server; raises :class:`EngineError` outside the ``async with`` block."""
        if self._proc is None:
            raise EngineError("The engine is not running: use it inside `async with LocalEngine() as engine:`.")
        return self._proc

    @property
    def base_url(self) -> str:
        """The OpenAI API root, e.g. ``http://127.0.0.1:8000/v1``."""
        return self.process.base_url

    @property
    def model(self) -> str:
        """The served model name to put in requests."""
        return self.process.model

    @property
    def pid(self) -> int:
        """The API server's pid (also its process group id)."""
        return self.process.pid

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 (or the chosen host)."""
        return self.process.port

    @property
    def log_path(self) -> Path:
        """The server log file."""
        return self.process.log_path

    def client(self, **kwargs: Any) -> VLLMClient:
        """A :class:`~pacore_graph.clients.vllm.VLLMClient` for this engine (kwargs pass through)."""
        return self.process.client(**kwargs)

    async def start(self) -> None:
        """Prepare the model if needed, start the server and wait until it serves."""
        if self._proc is not None:
            return
        self._proc = await _launch(self._options)

    async def stop(self) -> None:
        """Stop the server and its whole process group (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.astop(self._options.stop_grace)

    async def __aenter__(self) -> LocalEngine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
