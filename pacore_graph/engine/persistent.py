"""A long-lived engine shared between runs: ``pacore engine up`` / ``status`` / ``down``.

``up`` starts vLLM detached (it outlives the command) and records it in ``<cache>/engine/state.json``;
``pacore run`` then reuses it through :func:`find_running_engine` instead of paying a minute of
start-up each time. A state file whose process is gone (reboot, OOM kill, kill -9) is reported as stale
and removed. A recycled pid is not mistaken for the engine: on Linux the command line must still be
our vLLM server on the recorded port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pacore_graph.engine.address import EngineAddress
from pacore_graph.engine.errors import EngineError
from pacore_graph.engine.launcher import DEFAULT_STARTUP_TIMEOUT, EngineProcess, start_engine
from pacore_graph.engine.model import ProgressCallback
from pacore_graph.engine.paths import engine_dir
from pacore_graph.engine.process import group_alive, pid_alive, probe_ready, terminate_group

if TYPE_CHECKING:
    pass

__all__ = [
    "EngineStatus",
    "RunningEngine",
    "engine_status",
    "find_running_engine",
    "start_persistent_engine",
    "state_path",
    "stop_persistent_engine",
]

_STATE_VERSION = 1


@dataclass(frozen=True)
class RunningEngine(EngineAddress):
    """A persistent engine recorded in the state file (its :class:`EngineAddress`)."""

    @property
    def uptime(self) -> float:
        """Seconds since it was started."""
        return max(0.0, time.time() - self.started_at)

    def to_json(self) -> dict[str, Any]:
        """The state-file form."""
        data = asdict(self)
        data["log_path"] = str(self.log_path)
        data["version"] = _STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunningEngine:
        """Parse the state-file form; raises KeyError/TypeError/ValueError if malformed."""
        return cls(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            model=str(data["model"]),
            model_path=str(data["model_path"]),
            log_path=Path(data["log_path"]),
            started_at=float(data["started_at"]),
        )

    @classmethod
    def from_process(cls, proc: EngineProcess) -> RunningEngine:
        """Record a spawned :class:`EngineProcess`."""
        return cls(**{f.name: getattr(proc, f.name) for f in fields(EngineAddress)})


@dataclass(frozen=True)
class EngineStatus:
    """What ``pacore engine status`` reports.

    ``state`` is one of:
        ``"running"``   serving requests;
        ``"starting"``  the process is alive but ``/v1/models`` does not answer yet;
        ``"orphaned"``  the API server died but processes of its group remain (``down`` kills them);
        ``"stale"``     the recorded process is gone; the state file was removed;
        ``"stopped"``   no engine is recorded.
    """

    state: Literal["running", "starting", "orphaned", "stale", "stopped"]
    engine: RunningEngine | None = None


def state_path(cache_dir: Path | None = None) -> Path:
    """The persistent engine's state file."""
    return engine_dir(cache_dir) / "state.json"


def _read_state(cache_dir: Path | None) -> RunningEngine | None:
    path = state_path(cache_dir)
    try:
        return RunningEngine.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: treat as stale rather than fail every command
        return None


def _write_state(engine: RunningEngine, cache_dir: Path | None) -> None:
    path = state_path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(engine.to_json(), indent=2) + "\n")
    os.replace(tmp, path)  # atomic: readers never see half a file


def _is_our_server(engine: RunningEngine) -> bool:
    """Guard against pid reuse: the pid must still be a vLLM server on the recorded port."""
    try:
        argv = Path(f"/proc/{engine.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # no procfs (not Linux): trust the pid
    except OSError:
        return True
    text = b" ".join(argv)
    return b"vllm" in text and str(engine.port).encode() in argv


def engine_status(cache_dir: Path | None = None) -> EngineStatus:
    """Inspect the recorded engine; removes a stale state file as a side effect."""
    engine = _read_state(cache_dir)
    if engine is None:
        return EngineStatus("stopped")
    if pid_alive(engine.pid) and _is_our_server(engine):
        return EngineStatus("running" if probe_ready(engine.base_url) else "starting", engine)
    if group_alive(engine.pid):
        return EngineStatus("orphaned", engine)
    state_path(cache_dir).unlink(missing_ok=True)
    return EngineStatus("stale", engine)


def find_running_engine(cache_dir: Path | None = None) -> RunningEngine | None:
    """The persistent engine if one is up and serving, else None (for ``pacore run`` to reuse)."""
    status = engine_status(cache_dir)
    return status.engine if status.state == "running" else None


@contextlib.contextmanager
def _up_lock(cache_dir: Path | None) -> Iterator[None]:
    path = engine_dir(cache_dir) / "up.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EngineError(
                "Another `pacore engine up` is starting the engine right now; wait for it, "
                "then check with `pacore engine status`."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start_persistent_engine(
    model: str | None = None,
    *,
    port: int | None = None,
    cache_dir: Path | None = None,
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    progress: ProgressCallback | None = None,
) -> tuple[RunningEngine, bool]:
    """Start the detached engine and wait until it serves; returns (engine, started_now).

    If one is already recorded and alive it is returned as is (``started_now`` False). If start-up
    fails or is interrupted, the server is stopped and no state is left behind.
    """
    with _up_lock(cache_dir):
        status = engine_status(cache_dir)
        if status.engine is not None and status.state in ("running", "starting"):
            return status.engine, False
        if status.state == "orphaned" and status.engine is not None:
            terminate_group(status.engine.pid)
            state_path(cache_dir).unlink(missing_ok=True)

        def on_spawn(proc: EngineProcess) -> None:
            # Recorded before it is ready, so `status` can report "starting" meanwhile.
            _write_state(RunningEngine.from_process(proc), cache_dir)

        try:
            proc = start_engine(
                model,
                port=port,
                cache_dir=cache_dir,
                max_model_len=max_model_len,
                extra_args=extra_args,
                startup_timeout=startup_timeout,
                progress=progress,
                watch_parent=False,  # detached: it must outlive this command
                on_spawn=on_spawn,
            )
        except BaseException:
            state_path(cache_dir).unlink(missing_ok=True)  # start_engine already stopped the server
            raise
        engine = RunningEngine.from_process(proc)
        _write_state(engine, cache_dir)
        return engine, True


def stop_persistent_engine(cache_dir: Path | None = None, grace: float = 10.0) -> EngineStatus:
    """Stop the recorded engine (its whole process group) and remove the state file.

    Returns the status it had before stopping (``"stopped"`` if there was nothing to stop).
    """
    status = engine_status(cache_dir)
    if status.engine is not None and status.state in ("running", "starting", "orphaned"):
        terminate_group(status.engine.pid, grace=grace)
        if group_alive(status.engine.pid):
            raise EngineError(f"Could not stop the engine (process group {status.engine.pid}); kill it by hand.")
        state_path(cache_dir).unlink(missing_ok=True)
    return status
