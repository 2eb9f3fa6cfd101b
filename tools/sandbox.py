"""Run untrusted, model-written Python in a sandbox and report what happened as data.

:func:`run_python` runs one program; :func:`run_tests` runs it against stdin → expected-stdout cases. Both
return pydantic models; they never raise for anything the program does or any text they are given (a crash, a
timeout, a fork bomb, lone surrogates in the code is a result, not an exception).

Containment, strongest mode (``isolation="bwrap"``; needs bubblewrap and user namespaces)::

    supervisor ─ bwrap (uid nobody) ─ init (PID 1 of the run's namespaces) ─ program

* **Isolation tool.** `bubblewrap <https://github.com/containers/bubblewrap>`_ creates new user, PID, network,
  IPC, UTS, mount (and where possible cgroup) namespaces with ``--die-with-parent``, ``--new-session``,
  ``--cap-drop ALL``, ``--disable-userns``; bwrap sets ``no_new_privs`` and mounts everything ``nosuid``. As
  root the supervisor starts bwrap as uid ``nobody``, so the run is unprivileged on the host too.
* **Filesystem.** A minimal read-only root (:mod:`pacore_graph.tools._bwrap`): the interpreter, its stdlib and
  the libraries they load; no host ``/tmp``, ``/run``, ``/var``, ``/home``, ``/etc`` or project tree, so no host
  file or UNIX socket is reachable. The working directory (``/sandbox``, also ``HOME``), ``/tmp`` and
  ``/dev/shm`` are fresh tmpfs mounts of ``tmpfs_mb`` each; they vanish with the run, as do its SysV IPC objects
  (a private IPC namespace) and abstract sockets (a private network namespace).
* **Network.** A new network namespace: only a loopback that is down, so every connect fails.
* **Processes.** The init (:mod:`pacore_graph.tools._sandbox_init`) is PID 1; when it exits or is killed the
  kernel kills every process of the run, so double-forked ``setsid`` children cannot outlive it. It starts the
  program only on the supervisor's go, sent once the init runs: from then on the run dies with its supervisor.
  (A supervisor killed during bwrap's own set-up can leave bwrap's half-made child blocked for good; it runs
  nothing.)
* **Whole-run limits.** With a cgroup (v2, or v1 where that is what the host has; :mod:`._cgroup`): aggregate
  memory, process count and CPU time of everything the run starts; reaching the memory or CPU limit ends the
  whole run, not just one of its processes. Without one, ``RLIMIT_NPROC`` still bounds
  the whole run (it counts the processes of the run's own user namespace), while memory and CPU are bounded per
  process (``RLIMIT_AS``, ``RLIMIT_CPU``, which apply in every mode). Wall-clock time, output size and tmpfs size
  are always whole-run. :attr:`RunResult.limits_enforced` says which held for each run.
* **Environment.** Built from scratch (``PATH``, ``LANG``, ``HOME``, ``TMPDIR``): no inherited secrets.

Fallback (``isolation="process"``, used when bwrap or user namespaces are unavailable): the same per-process
limits and scrubbed environment in a new session and a host temporary directory, killed by process group; as root
the uid is switched to ``nobody``. There is no network or filesystem isolation (``network_isolated=False``) and a
child that calls ``setsid`` may escape the kill. Check :func:`sandbox_capabilities` before trusting a machine
with hostile code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.errors import PaCoReError

from ._bwrap import PROGRAM_PATH, WORKDIR, SandboxRoot, bwrap_argv, find_bwrap, namespace_args, root_args, sandbox_root
from ._cgroup import CgroupSupport, RunCgroup, cgroup_support

__all__ = [
    "DEFAULT_LIMITS",
    "LimitScope",
    "RunResult",
    "SandboxCapabilities",
    "SandboxLimits",
    "SandboxUnavailableError",
    "TestCase",
    "TestOutcome",
    "TestReport",
    "arun_python",
    "arun_tests",
    "default_python",
    "normalize_output",
    "run_python",
    "run_tests",
    "sandbox_capabilities",
]

Isolation = Literal["bwrap", "process"]
#: How far a limit reached: the whole run, each process separately, all processes of the shared sandbox uid on
#: the host (so concurrent runs share it), or not at all.
LimitScope = Literal["run", "process", "uid", "none"]

_INIT_SCRIPT = Path(__file__).with_name("_sandbox_init.py")
_NOBODY = 65534
_READ_CHUNK = 65536
#: How long to wait for the killed process tree to go away before reporting leftovers.
_REAP_SECONDS = 2.0
#: How often the supervisor reads the run's CPU time from its cgroup.
_CPU_POLL_SECONDS = 0.1
#: The selector's mark for the cgroup's memory-limit eventfd.
_MEMORY_EVENT = object()


class SandboxUnavailableError(PaCoReError, RuntimeError):
    """The isolation a run asked for (``isolation="bwrap"``) is not available on this machine."""


class SandboxLimits(BaseModel):
    """Resource limits of one run (see :attr:`RunResult.limits_enforced` for how far each one reached).

    ``memory_mb`` is both each process's address space (``RLIMIT_AS``, so leave room for the interpreter) and,
    with a cgroup, the whole run's memory including its tmpfs files. ``max_processes`` counts the init too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_seconds: float = Field(10.0, gt=0)
    cpu_seconds: int = Field(5, gt=0)
    memory_mb: int = Field(512, ge=64)
    max_output_bytes: int = Field(1_000_000, gt=0, description="per stream (stdout, stderr)")
    max_file_mb: int = Field(16, gt=0)
    max_processes: int = Field(32, gt=0, description="processes of the run (cgroup pids.max and RLIMIT_NPROC)")
    max_open_files: int = Field(256, gt=0)
    tmpfs_mb: int = Field(64, gt=0, description="size of each scratch tmpfs: the working directory, /tmp, /dev/shm")


DEFAULT_LIMITS = SandboxLimits()


class RunResult(BaseModel):
    """How one sandboxed run ended.

    ``exit_code`` is negative (``-signal``) when the program was killed by a signal, and None when the
    sandbox killed it (deadline, CPU time or memory of the run, or output cap) before it reported. ``timed_out``
    covers the wall-clock and the CPU-time limit; ``memory_exceeded`` means the program died of the memory limit (a
    ``MemoryError``, an allocation failure, or the run reaching its cgroup limit, which ends the whole run).
    ``limits_enforced`` maps each field of :class:`SandboxLimits` to how far it held in this run.
    """

    model_config = ConfigDict(extra="forbid")

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    duration: float
    cpu_seconds: float | None = None
    network_isolated: bool
    filesystem_isolated: bool = False
    isolation: Isolation
    limits_enforced: dict[str, LimitScope] = Field(default_factory=dict)
    peak_memory_mb: float | None = Field(None, description="the run's peak memory, where its cgroup reports it")
    leftover_processes: int = Field(0, description="processes found and killed after the run; should be 0")

    @property
    def ok(self) -> bool:
        """The program ran to completion with exit code 0, within every limit."""
        return self.exit_code == 0 and not (self.timed_out or self.memory_exceeded or self.output_truncated)

    def describe(self) -> str:
        """A one-line account of an abnormal end, or "exit code 0"."""
        if self.timed_out:
            return "timed out"
        if self.memory_exceeded:
            return "exceeded the memory limit"
        if self.output_truncated:
            return "printed more output than allowed"
        if self.exit_code is not None and self.exit_code < 0:
            try:
                return f"killed by signal {signal.Signals(-self.exit_code).name}"
            except ValueError:
                return f"killed by signal {-self.exit_code}"
        return f"exit code {self.exit_code}"


class SandboxCapabilities(BaseModel):
    """What containment this machine allows: the isolation mode, the cgroup, and how far each limit reaches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolation: Isolation
    network_isolated: bool
    drops_privileges: bool
    reason: str
    cgroup: Literal["v1", "v2"] | None = None
    cgroup_reason: str = ""
    limits_enforced: dict[str, LimitScope] = Field(default_factory=dict)


def _limit_scopes(isolation: Isolation, cgroup: CgroupSupport | None) -> dict[str, LimitScope]:
    """How far each limit reaches in a mode (see :data:`LimitScope`)."""
    whole_run: LimitScope = "run" if cgroup is not None and cgroup.version else "process"
    if isolation == "bwrap":
        return {
            "wall_seconds": "run",
            "cpu_seconds": whole_run,
            "memory_mb": whole_run,
            "max_output_bytes": "run",
            "max_file_mb": "process",
            "max_processes": "run",  # pids.max, or RLIMIT_NPROC in the run's own user namespace
            "max_open_files": "process",
            "tmpfs_mb": "run",
        }
    return {
        "wall_seconds": "run",
        "cpu_seconds": "process",
        "memory_mb": "process",
        "max_output_bytes": "run",
        "max_file_mb": "process",
        "max_processes": "uid" if os.geteuid() == 0 else "none",
        "max_open_files": "process",
        "tmpfs_mb": "none",  # the working directory is on the host's disk
    }


def _fallback(reason: str) -> SandboxCapabilities:
    return SandboxCapabilities(
        isolation="process",
        network_isolated=False,
        drops_privileges=os.geteuid() == 0,
        reason=f"fallback: {reason}",
        limits_enforced=_limit_scopes("process", None),
    )


@functools.cache
def sandbox_capabilities() -> SandboxCapabilities:
    """Probe once whether bubblewrap works here (installed, user namespaces allowed) and which cgroup is usable."""
    bwrap = find_bwrap()
    if bwrap is None:
        return _fallback("bubblewrap (`bwrap`) is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    try:
        root = sandbox_root(default_python())
        command = [*namespace_args(bwrap), *root_args(root), root.interpreter, "-I", "-S", "-c", "pass"]
        user = _switch_to(_NOBODY)
        probe = subprocess.run(
            command,
            capture_output=True,
            timeout=30,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return _fallback(f"bwrap probe failed: {exc!r}")
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip()
        return _fallback(f"bwrap cannot create the namespaces here: {detail}")
    cgroup = cgroup_support() if os.geteuid() == 0 else None
    return SandboxCapabilities(
        isolation="bwrap",
        network_isolated=True,
        drops_privileges=True,
        reason="bubblewrap: user, PID, network, IPC, UTS and mount namespaces",
        cgroup=cgroup.version if cgroup else None,
        cgroup_reason=cgroup.reason if cgroup else "not root: no cgroup to create runs in",
        limits_enforced=_limit_scopes("bwrap", cgroup),
    )


def _switch_to(uid: int) -> int | None:
    """The uid (and gid) to start bwrap as: ``uid`` when this process is root, else None (stay as is)."""
    return uid if os.geteuid() == 0 else None


def _world_executable(path: str) -> bool:
    """True when an unprivileged user can run ``path`` (every directory on the way searchable)."""
    real = Path(os.path.realpath(path))
    try:
        if real.stat().st_mode & 0o005 != 0o005:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


@functools.cache
def default_python() -> str:
    """The interpreter for sandboxed programs: this one if an unprivileged uid may run it, else the system's."""
    for candidate in (sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"):
        if candidate and _world_executable(candidate):
            return os.path.realpath(candidate)
    return sys.executable


def _clean_env(home: str, tmp: str) -> dict[str, str]:
    # Built from scratch: nothing of the parent's environment (API keys, tokens) reaches the program.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": tmp,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _encode(text: str | bytes) -> bytes:
    """Text as bytes, whatever it holds: escaped undecodable bytes round-trip, lone surrogates are kept."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _set_limits(limits: SandboxLimits, drop_to: int | None) -> Callable[[], None]:
    """The fallback mode's ``preexec_fn``: limits, then (as root) the unprivileged uid."""

    def apply() -> None:
        memory = limits.memory_mb * 1024 * 1024
        for kind, value in (
            (resource.RLIMIT_AS, memory),
            (resource.RLIMIT_DATA, memory),
            (resource.RLIMIT_FSIZE, limits.max_file_mb * 1024 * 1024),
            (resource.RLIMIT_NOFILE, limits.max_open_files),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(kind, (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        if drop_to is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
            os.setgroups([])
            os.setgid(drop_to)
            os.setuid(drop_to)

    return apply


def _pids_in_namespace(ns: str) -> list[int]:
    """Every process (seen from here) whose PID namespace is ``ns`` (e.g. ``pid:[4026532]``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    found.append(int(entry))
    return found


def _kill_namespace(ns: str | None) -> int:
    """SIGKILL whatever is left in the run's PID namespace; returns how many were found."""
    if ns is None:
        return 0
    # Processes the kernel is still tearing down after the init died are not leftovers: give them a moment.
    grace = time.monotonic() + 0.5
    while (first := _pids_in_namespace(ns)) and time.monotonic() < grace:
        time.sleep(0.02)
    deadline = time.monotonic() + _REAP_SECONDS
    pids = first
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        pids = _pids_in_namespace(ns)
    return len(first)


class _Capture:
    """One output stream, read up to a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _memory_failure(stderr: str, exit_code: int | None) -> bool:
    tail = stderr[-2000:]
    markers = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
    return exit_code not in (0, None) and any(marker in tail for marker in markers)


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start (nothing touches the disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_only(fd: int, *, close_original: bool = False) -> int:
    """A read-only descriptor of the same file, at offset 0 (the program cannot write its stdin)."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if close_original:
            os.close(fd)


def run_python(
    code: str,
    stdin: str = "",
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
    uid: int = _NOBODY,
    isolation: Isolation | None = None,
) -> RunResult:
    """Run ``code`` as a Python program in the sandbox, feeding it ``stdin``; see the module docstring.

    Blocking; use :func:`arun_python` from async code. ``isolation`` forces a mode (``"process"`` to test
    the fallback); by default the strongest the machine allows is used. ``uid`` is the unprivileged user the
    sandbox runs as on the host when this process is root (and the program's uid inside the sandbox).
    """
    capabilities = sandbox_capabilities()
    mode = isolation or capabilities.isolation
    if mode == "bwrap" and capabilities.isolation != "bwrap":
        raise SandboxUnavailableError(
            f"bubblewrap isolation is not available here ({capabilities.reason}); install bubblewrap "
            "(Debian: apt-get install bubblewrap), or run without isolation='bwrap'"
        )
    interpreter = python or default_python()
    code_bytes, stdin_bytes = _encode(code), _encode(stdin)
    if mode == "bwrap":
        return _run_in_bwrap(interpreter, code_bytes, stdin_bytes, limits, uid, capabilities)
    return _run_plain(interpreter, code_bytes, stdin_bytes, limits, uid if os.geteuid() == 0 else None)


async def arun_python(
    code: str,
    stdin: str = "",
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
    uid: int = _NOBODY,
    isolation: Isolation | None = None,
) -> RunResult:
    """:func:`run_python` in a worker thread, so the event loop keeps running."""
    import asyncio

    return await asyncio.to_thread(run_python, code, stdin, limits=limits, python=python, uid=uid, isolation=isolation)


@functools.cache
def _init_source() -> bytes:
    return _INIT_SCRIPT.read_bytes()


def _not_started(isolation: Isolation, why: str, scopes: dict[str, LimitScope]) -> RunResult:
    """The result of a run whose sandbox could not be set up (the host is out of processes, say)."""
    return RunResult(
        stdout="",
        stderr=f"sandbox: could not start the run: {why}\n",
        exit_code=None,
        duration=0.0,
        network_isolated=isolation == "bwrap",
        filesystem_isolated=isolation == "bwrap",
        isolation=isolation,
        limits_enforced=scopes,
    )


def _run_in_bwrap(
    interpreter: str, code: bytes, stdin: bytes, limits: SandboxLimits, uid: int, capabilities: SandboxCapabilities
) -> RunResult:
    support = cgroup_support() if capabilities.cgroup else None
    try:
        root: SandboxRoot = sandbox_root(interpreter)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return _not_started(
            "bwrap", f"cannot work out the root for {interpreter}: {exc!r}", _limit_scopes("bwrap", None)
        )
    memory = limits.memory_mb * 1024 * 1024
    try:
        cgroup = RunCgroup.create(support, memory_bytes=memory, max_processes=limits.max_processes) if support else None
    except OSError:  # e.g. the cgroup hierarchy went away: run without it, and say so in limits_enforced
        cgroup, support = None, None
    scopes = _limit_scopes("bwrap", support)
    fds = _Descriptors()
    process: subprocess.Popen[bytes] | None = None
    try:
        status_read, status_write = fds.pipe()
        # bwrap reports its child's PID and namespaces (info pipe), then waits (block pipe) until released.
        info_read, info_write = fds.pipe()
        block_read, block_write = fds.pipe()
        go_read, go_write = fds.pipe()  # the init starts the program only on the go (see _supervise)
        program_fd = fds.add(_memfd("pacore-program", code))
        init_fd = fds.add(_memfd("pacore-init", _init_source()))
        stdin_fd = fds.add(_read_only(_memfd("pacore-stdin", stdin), close_original=True))
        config = {
            "argv": [root.interpreter, "-I", "-X", "utf8", "-u", PROGRAM_PATH],
            "env": _clean_env(WORKDIR, "/tmp"),
            "status_fd": status_write,
            "go_fd": go_read,
            "memory_bytes": memory,
            "cpu_seconds": limits.cpu_seconds,
            "file_bytes": limits.max_file_mb * 1024 * 1024,
            "max_processes": limits.max_processes,
            "max_open_files": limits.max_open_files,
        }
        argv = bwrap_argv(
            str(find_bwrap()),
            root,
            init_fd=init_fd,
            tmpfs_bytes=limits.tmpfs_mb * 1024 * 1024,
            program_fd=program_fd,
            info_fd=info_write,
            block_fd=block_read,
            uid=uid,
            init_config=json.dumps(config),
        )
        child_side = [status_write, info_write, block_read, go_read, program_fd, init_fd]
        user = _switch_to(uid)
        process = subprocess.Popen(
            argv,
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            pass_fds=child_side,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
        fds.close(*child_side, stdin_fd)
        ns = _hold_and_release(process, cgroup, info_read, limits.wall_seconds)
        fds.close(info_read, block_write)  # releases bwrap
        # The go: the init is running, so it may start the program (never sent, the init exits when fds close).
        result = _supervise(
            process,
            fds.release(status_read),
            limits,
            isolation="bwrap",
            cgroup=cgroup,
            ns=ns,
            on_ready=lambda: _send_go(fds, go_write),
        )
        return result.model_copy(update={"limits_enforced": scopes})
    except OSError as exc:  # the host is out of descriptors or processes, say: a result, not an exception
        if process is not None:
            _kill_group(process)
            process.kill()
            process.wait()
        return _not_started("bwrap", repr(exc), scopes)
    finally:
        fds.close_all()
        if cgroup is not None:
            cgroup.close()


class _Descriptors:
    """The file descriptors a run opens, so every one is closed whatever happens."""

    def __init__(self) -> None:
        self.open: list[int] = []

    def add(self, fd: int) -> int:
        self.open.append(fd)
        return fd

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.open += [read, write]
        return read, write

    def release(self, fd: int) -> int:
        """Hand ``fd`` over to a caller who closes it."""
        self.open.remove(fd)
        return fd

    def close(self, *fds: int) -> None:
        for fd in fds:
            self.release(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in self.open:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open.clear()


def _hold_and_release(
    process: subprocess.Popen[bytes], cgroup: RunCgroup | None, info_fd: int, timeout: float
) -> str | None:
    """While bwrap holds its sandboxed child (namespaces made, nothing of the run started), learn its PID
    namespace and move it into the run's cgroup, so every later process of the run is born inside.

    The namespace comes from bwrap (``--info-fd``), outside the sandbox, never from the sandbox itself: it is
    what the supervisor later sweeps for leftovers. Returns it as ``pid:[inode]``, or None if bwrap failed
    before reporting (its stderr says why).
    """
    data = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(info_fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                break
            chunk = os.read(info_fd, _READ_CHUNK)
            if not chunk:
                break
            data += chunk
    try:
        info = json.loads(data.decode(errors="replace"))
        child, ns = int(info["child-pid"]), f"pid:[{int(info['pid-namespace'])}]"
    except (ValueError, KeyError, TypeError):
        return None
    if ns == os.readlink("/proc/self/ns/pid"):
        _kill_group(process)  # not a new PID namespace: never run (or later sweep) here
        return None
    if cgroup is not None:
        try:
            cgroup.add(child)
        except OSError:
            # Never run unconfined by accident: without its cgroup the run does not start.
            _kill_group(process)
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
    return ns


def _run_plain(interpreter: str, code: bytes, stdin: bytes, limits: SandboxLimits, drop_to: int | None) -> RunResult:
    scopes = _limit_scopes("process", None)
    workdir = None
    try:
        workdir = tempfile.mkdtemp(prefix="pacore-sandbox-")
        program = Path(workdir, "main.py")
        program.write_bytes(code)
        stdin_file = Path(workdir, ".stdin")
        stdin_file.write_bytes(stdin)
        if drop_to is not None:
            for path in (workdir, program, stdin_file):
                os.chown(path, drop_to, drop_to)
        argv = [interpreter, "-I", "-u", str(program)]  # -I ignores PYTHONUNBUFFERED, so -u
        with stdin_file.open("rb") as stdin_handle:
            process = subprocess.Popen(
                argv,
                stdin=stdin_handle.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_clean_env(workdir, workdir),
                cwd=workdir,
                start_new_session=True,
                preexec_fn=_set_limits(limits, drop_to),  # limits must be set between fork and exec
            )
            result = _supervise(process, None, limits, isolation="process", cgroup=None)
        return result.model_copy(update={"limits_enforced": scopes})
    except (OSError, subprocess.SubprocessError) as exc:  # no disk, descriptors or processes left on the host
        return _not_started("process", repr(exc), scopes)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _send_go(fds: _Descriptors, go_fd: int) -> None:
    """Let the init start the program, and close the pipe."""
    with contextlib.suppress(OSError):  # the init is already gone: its end says so when the run is read
        os.write(go_fd, b"1")
    fds.close(go_fd)


def _supervise(
    process: subprocess.Popen[bytes],
    status_fd: int | None,
    limits: SandboxLimits,
    *,
    isolation: Isolation,
    cgroup: RunCgroup | None,
    ns: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RunResult:
    """Read output under the caps until the run ends or a deadline passes; kill and reap everything.

    ``on_ready`` (bwrap) is called when the init's first status line says it is running: only then does it get
    the go to start the program, so a supervisor that dies before that moment takes the whole run with it (see
    :mod:`._sandbox_init`).
    """
    started = time.monotonic()
    deadline = started + limits.wall_seconds
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = _Capture(limits.max_output_bytes), _Capture(limits.max_output_bytes)
    status_lines = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, stdout)
    selector.register(process.stderr, selectors.EVENT_READ, stderr)
    if status_fd is not None:
        selector.register(status_fd, selectors.EVENT_READ, None)
    streams = len(selector.get_map())
    if cgroup is not None and cgroup.memory_event_fd is not None:
        # Wakes the loop the moment the run hits its memory limit (read by cgroup.memory_limit_reached).
        selector.register(cgroup.memory_event_fd, selectors.EVENT_READ, _MEMORY_EVENT)
    poll = _CPU_POLL_SECONDS if cgroup is not None else 0.5
    timed_out = cpu_exceeded = memory_reached = killed = False
    try:
        while streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(remaining, poll)):
                if key.data is _MEMORY_EVENT:
                    continue
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    streams -= 1
                elif key.data is None:
                    status_lines += chunk
                    if on_ready is not None and b"\n" in status_lines:
                        on_ready()
                        on_ready = None
                else:
                    key.data.feed(chunk)
            if stdout.truncated or stderr.truncated:
                break
            if cgroup is not None and cgroup.memory_limit_reached():
                memory_reached = True  # the whole run's memory: it ends all of the run, not one process
                break
            if cgroup is not None and cgroup.cpu_seconds() > limits.cpu_seconds:
                cpu_exceeded = True  # the whole run's CPU time, all processes together
                break
        if timed_out or cpu_exceeded or memory_reached or stdout.truncated or stderr.truncated:
            killed = True
            _kill_group(process)
            if cgroup is not None:
                cgroup.kill()
            # The init dies with bwrap (--die-with-parent), and takes the whole PID namespace with it.
    finally:
        selector.close()
        if killed:
            _kill_group(process)
        try:
            process.wait(timeout=_REAP_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.kill()
            process.wait()
        # Drain what is left of the status pipe (the final report may arrive after the output streams close).
        if status_fd is not None:
            status_lines += _drain(status_fd)
            os.close(status_fd)
        process.stdout.close()
        process.stderr.close()
    duration = time.monotonic() - started

    report: dict[str, object] = {}
    for line in status_lines.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            report.update(json.loads(line))
    leftovers = _kill_namespace(ns) if isolation == "bwrap" else 0
    if isolation == "process" and not killed:
        _kill_group(process)  # background children still in the group

    if isolation == "bwrap":
        raw_code = report.get("exit_code")
        if killed:
            exit_code = None
        elif isinstance(raw_code, int):
            exit_code = raw_code
        else:  # init never reported: bwrap itself failed, and says why on stderr
            exit_code = process.returncode
    else:
        exit_code = None if killed else process.returncode
    raw_cpu = report.get("cpu_seconds")
    cpu = float(raw_cpu) if isinstance(raw_cpu, int | float) else None
    oom = peak = None
    if cgroup is not None:
        with contextlib.suppress(OSError, ValueError):
            cpu = round(cgroup.cpu_seconds(), 3)
        oom = cgroup.memory_limit_reached()
        peak_bytes = cgroup.peak_memory_bytes()
        peak = round(peak_bytes / 2**20, 1) if peak_bytes is not None else None
    # SIGXCPU comes only from RLIMIT_CPU's soft limit; a SIGKILL near the limit is its hard limit.
    cpu_killed = exit_code == -signal.SIGXCPU or (
        exit_code == -signal.SIGKILL and cpu is not None and cpu >= limits.cpu_seconds - 0.5
    )
    err_text = stderr.text()
    timed_out = timed_out or cpu_exceeded or cpu_killed
    return RunResult(
        stdout=stdout.text(),
        stderr=err_text,
        exit_code=exit_code,
        timed_out=timed_out,
        memory_exceeded=bool(oom) or (not timed_out and _memory_failure(err_text, exit_code)),
        output_truncated=stdout.truncated or stderr.truncated,
        duration=round(duration, 3),
        cpu_seconds=cpu,
        network_isolated=isolation == "bwrap",
        filesystem_isolated=isolation == "bwrap" and ns is not None,
        isolation=isolation,
        peak_memory_mb=peak,
        leftover_processes=leftovers,
    )


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, _READ_CHUNK):
            data += chunk
    return bytes(data)


class TestCase(BaseModel):
    """One sample test: the program's stdin and the stdout it should print."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest test class

    input: str = ""
    output: str


class TestOutcome(BaseModel):
    """How the program did on one test."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False

    input: str
    expected: str
    actual: str
    passed: bool
    error: str | None = Field(None, description="why the run itself failed (timeout, crash, ...), if it did")


class TestReport(BaseModel):
    """Per-test results of one program."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False

    outcomes: list[TestOutcome]

    @property
    def passed(self) -> int:
        """How many tests passed."""
        return sum(outcome.passed for outcome in self.outcomes)

    @property
    def total(self) -> int:
        """How many tests were run."""
        return len(self.outcomes)

    @property
    def all_passed(self) -> bool:
        """Every test passed (and there was at least one)."""
        return bool(self.outcomes) and self.passed == self.total


def normalize_output(text: str) -> str:
    """Output as compared: trailing whitespace of each line and trailing blank lines removed."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").splitlines()).rstrip("\n")


def run_tests(
    code: str,
    tests: Sequence[TestCase],
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
    isolation: Isolation | None = None,
) -> TestReport:
    """Run ``code`` once per test with the test's stdin; a test passes when the normalized stdout matches."""
    outcomes = []
    for test in tests:
        result = run_python(code, test.input, limits=limits, python=python, isolation=isolation)
        error = None
        if not result.ok:
            last = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
            error = result.describe() + (f": {last[0]}" if last else "")
        passed = result.ok and normalize_output(result.stdout) == normalize_output(test.output)
        outcomes.append(
            TestOutcome(input=test.input, expected=test.output, actual=result.stdout, passed=passed, error=error)
        )
    return TestReport(outcomes=outcomes)


async def arun_tests(
    code: str,
    tests: Sequence[TestCase],
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
    isolation: Isolation | None = None,
) -> TestReport:
    """:func:`run_tests` in a worker thread."""
    import asyncio

    return await asyncio.to_thread(run_tests, code, tests, limits=limits, python=python, isolation=isolation)
