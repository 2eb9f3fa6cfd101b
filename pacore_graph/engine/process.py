"""Child process plumbing: spawn in a new process group, stop the whole group, read the log tail.

vLLM runs as a tree (API server -> EngineCore -> Worker, plus a resource tracker), all in the process
group we create with ``start_new_session=True``. Measured here: SIGKILL of the API server alone orphans
EngineCore and Worker (about 3 GB), so stopping always targets the *group*: SIGTERM, a grace period,
then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "free_port",
    "group_alive",
    "kill_group",
    "log_tail",
    "pid_alive",
    "probe_ready",
    "spawn",
    "spawn_detached",
    "terminate_group",
]

# Exec trampoline that asks the kernel to SIGTERM the child when its parent dies (PR_SET_PDEATHSIG),
# then execs the real command (the setting survives exec). This is done here rather than in a
# preexec_fn, which is unsafe when the parent has threads. SIGTERM, not SIGKILL: the API server then
# shuts its own children down. Caveat: Linux fires it when the *thread* that forked exits, so spawn
# from a long-lived thread (the event loop's or the main thread), never from a short-lived worker.
_PDEATHSIG_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"  # the parent died before prctl took effect
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


# Double-spawn for a detached server (`pacore engine up`): this short-lived middle process starts the
# server in a new session and exits, so the server is re-parented to init at once. The caller then holds
# no Popen for a process it means to leave running (no zombie, no "still running" ResourceWarning).
_DETACH_TRAMPOLINE = (
    "import subprocess, sys\n"
    "with open(sys.argv[1], 'ab') as log:\n"
    "    p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,\n"
    "                         start_new_session=True, close_fds=True)\n"
    "print(p.pid, flush=True)\n"
    "p.returncode = 0  # we leave it running on purpose; silence Popen.__del__\n"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    watch_parent: bool,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session/process group, output appended to ``log_path``.

    With ``watch_parent`` (Linux only) the child gets SIGTERM if this process dies without cleaning up.
    """
    cmd = list(argv)
    if watch_parent and sys.platform.startswith("linux"):
        cmd = [sys.executable, "-S", "-c", _PDEATHSIG_TRAMPOLINE, str(os.getpid()), *cmd]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # Own group: we can signal the whole tree, and a terminal's Ctrl-C reaches only us.
            start_new_session=True,
            close_fds=True,
        )


def spawn_detached(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> int:
    """Start ``argv`` detached from this process (new session, parent init); return its pid.

    It is the leader of its own process group, so ``pid`` is also the group id to stop it with.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-S", "-W", "ignore", "-c", _DETACH_TRAMPOLINE, str(log_path), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise OSError(f"could not start {argv[0]!r} detached: {out.stderr.strip()[-500:]}")
    return int(out.stdout.strip())


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies count as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _reap(popen: subprocess.Popen[bytes] | None, pid: int | None = None) -> None:
    # A dead but unreaped leader is a zombie that keeps the group "alive" for killpg(pgid, 0).
    if popen is not None:
        popen.poll()
    elif pid is not None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # only succeeds if it is our child; else init reaps it


def terminate_group(pgid: int, *, popen: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """Stop the whole group, blocking: SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if not kill_group(pgid, signal.SIGTERM):
        _reap(popen, pgid)
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(popen, pgid)
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    kill_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and group_alive(pgid):
        _reap(popen, pgid)
        time.sleep(0.05)
    _reap(popen, pgid)


async def aterminate_group(pgid: int, *, popen: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """Async :func:`terminate_group`. If cancelled while waiting, it SIGKILLs at once and re-raises,
    so a second Ctrl-C never leaves the engine behind."""
    if not kill_group(pgid, signal.SIGTERM):
        _reap(popen, pgid)
        return
    try:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap(popen, pgid)
            if not group_alive(pgid):
                return
            await asyncio.sleep(0.1)
    except BaseException:
        terminate_group(pgid, popen=popen, grace=0.0)
        raise
    terminate_group(pgid, popen=popen, grace=0.0)


# Loopback only: bypass any HTTP(S)_PROXY in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe_ready(base_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {base_url}/models`` answers 200 with a model list (the server is serving)."""
    try:
        with _OPENER.open(base_url.rstrip("/") + "/models", timeout=timeout) as resp:
            if resp.status != 200:
                return False
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(body, dict) and bool(body.get("data"))


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if unreadable); reads at most the last 64 KiB."""
    if path is None:
        return ""
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        text = fh.read().decode("utf-8", "replace")
        # tqdm progress bars use \r; keep only the last state of each line.
        rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
        return "\n".join(row for row in rows[-lines:])
    return ""
