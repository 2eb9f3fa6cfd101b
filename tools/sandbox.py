"""Run untrusted, model-written Python in a sandbox and report what happened as data.

:func:`run_python` runs one program; :func:`run_tests` runs it against stdin → expected-stdout cases. Both
return pydantic models; they never raise for anything the program does (a crash, a timeout, a fork bomb is
a result, not an exception).

Containment, strongest mode (``isolation="namespaces"``; needs root and util-linux ``unshare``)::

    supervisor ─ unshare --net --pid --mount --fork --kill-child ─ init (root, PID 1) ─ program (uid nobody)

* **Processes.** The program runs in its own session/process group and in a new PID namespace whose init is
  :mod:`pacore_graph.tools._sandbox_init`. When init exits or is killed, the kernel kills every process in the
  namespace, so double-forked ``setsid`` children cannot outlive the run. ``RLIMIT_NPROC`` caps how many
  processes the unprivileged uid may have (it is only enforced for non-root uids, hence the uid switch).
* **Network.** A new network namespace: no interface but a loopback that is down, so every connect fails.
* **Filesystem.** A fresh working directory (``HOME`` and ``TMPDIR`` too), removed afterwards; private tmpfs
  over ``/tmp``, ``/var/tmp`` and ``/dev/shm``; ``/`` remounted read-only in the run's mount namespace.
* **Resources.** ``RLIMIT_AS``/``RLIMIT_DATA`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``;
  a wall-clock deadline; stdout and stderr are read with a cap and the run is killed when it is exceeded.
* **Environment.** Built from scratch (``PATH``, ``LANG``, ``HOME``, ``TMPDIR``): no inherited secrets.

Fallback (``isolation="process"``, used when namespaces are unavailable, e.g. not root): the same limits and
scrubbed environment in a new session, killed by process group; as root the uid is still switched. There is
no network isolation (``network_isolated=False`` in every result) and a child that calls ``setsid`` may escape
the process-group kill. Check :func:`sandbox_capabilities` before trusting a machine with hostile code.
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

__all__ = [
    "DEFAULT_LIMITS",
    "RunResult",
    "SandboxCapabilities",
    "SandboxLimits",
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

Isolation = Literal["namespaces", "process"]

_INIT_SCRIPT = Path(__file__).with_name("_sandbox_init.py")
_NOBODY = 65534
_READ_CHUNK = 65536
#: How long to wait for the killed process tree to go away before reporting leftovers.
_REAP_SECONDS = 2.0


class SandboxLimits(BaseModel):
    """Resource limits of one run. Memory is address space (``RLIMIT_AS``), so leave room for the interpreter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_seconds: float = Field(10.0, gt=0)
    cpu_seconds: int = Field(5, gt=0)
    memory_mb: int = Field(512, ge=64)
    max_output_bytes: int = Field(1_000_000, gt=0, description="per stream (stdout, stderr)")
    max_file_mb: int = Field(16, gt=0)
    max_processes: int = Field(32, gt=0, description="RLIMIT_NPROC of the sandbox uid")
    max_open_files: int = Field(256, gt=0)
    tmpfs_mb: int = Field(64, gt=0, description="size of each private scratch tmpfs")


DEFAULT_LIMITS = SandboxLimits()


class RunResult(BaseModel):
    """How one sandboxed run ended.

    ``exit_code`` is negative (``-signal``) when the program was killed by a signal, and None when the
    sandbox killed it (deadline or output cap) before it reported. ``timed_out`` covers the wall-clock and the
    CPU-time limit; ``memory_exceeded`` means the program died of the memory limit (a ``MemoryError``, an
    allocation failure, or a kill at the limit).
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
            return f"killed by signal {signal.Signals(-self.exit_code).name}"
        return f"exit code {self.exit_code}"


class SandboxCapabilities(BaseModel):
    """What containment this machine allows: the isolation mode and whether the network is cut off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolation: Isolation
    network_isolated: bool
    drops_privileges: bool
    reason: str


@functools.cache
def sandbox_capabilities() -> SandboxCapabilities:
    """Probe once whether namespaces work here (root, ``unshare`` present, the kernel allows it)."""
    is_root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    if not is_root or unshare is None:
        why = "not running as root" if not is_root else "util-linux `unshare` is not installed"
        return SandboxCapabilities(
            isolation="process", network_isolated=False, drops_privileges=is_root, reason=f"fallback: {why}"
        )
    try:
        probe = subprocess.run(
            [unshare, "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc", "true"],
            capture_output=True,
            timeout=10,
            env={"PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxCapabilities(
            isolation="process", network_isolated=False, drops_privileges=True, reason=f"fallback: {exc!r}"
        )
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip()
        return SandboxCapabilities(
            isolation="process",
            network_isolated=False,
            drops_privileges=True,
            reason=f"fallback: unshare failed: {detail}",
        )
    return SandboxCapabilities(
        isolation="namespaces", network_isolated=True, drops_privileges=True, reason="PID, network, mount namespaces"
    )


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


def _clean_env(workdir: str) -> dict[str, str]:
    # Built from scratch: nothing of the parent's environment (API keys, tokens) reaches the program.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
    }


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
    deadline = time.monotonic() + _REAP_SECONDS
    first = _pids_in_namespace(ns)
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
    program runs as when this process is root.
    """
    capabilities = sandbox_capabilities()
    mode = isolation or capabilities.isolation
    if mode == "namespaces" and capabilities.isolation != "namespaces":
        raise RuntimeError(f"namespace isolation is not available here ({capabilities.reason})")
    drop_to = uid if os.geteuid() == 0 else None
    interpreter = python or default_python()

    workdir = tempfile.mkdtemp(prefix="pacore-sandbox-")
    try:
        program = Path(workdir, "main.py")
        program.write_text(code, encoding="utf-8")
        stdin_file = Path(workdir, ".stdin")
        stdin_file.write_text(stdin, encoding="utf-8")
        if drop_to is not None:
            for path in (workdir, program, stdin_file):
                os.chown(path, drop_to, drop_to)
        env = _clean_env(workdir)
        argv = [interpreter, "-I", "-u", str(program)]  # -I ignores PYTHONUNBUFFERED, so -u
        with stdin_file.open("rb") as stdin_handle:
            if mode == "namespaces":
                return _run_in_namespaces(argv, env, workdir, stdin_handle.fileno(), limits, uid)
            return _run_plain(argv, env, workdir, stdin_handle.fileno(), limits, drop_to)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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


def _run_in_namespaces(
    argv: list[str], env: dict[str, str], workdir: str, stdin_fd: int, limits: SandboxLimits, uid: int
) -> RunResult:
    status_read, status_write = os.pipe()
    config = {
        "argv": argv,
        "env": env,
        "workdir": workdir,
        "uid": uid,
        "gid": uid,
        "status_fd": status_write,
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "cpu_seconds": limits.cpu_seconds,
        "file_bytes": limits.max_file_mb * 1024 * 1024,
        "max_processes": limits.max_processes,
        "max_open_files": limits.max_open_files,
        "tmpfs_mb": limits.tmpfs_mb,
    }
    unshare = shutil.which("unshare") or "unshare"
    command = [
        unshare,
        "--net",
        "--pid",
        "--mount",
        "--fork",
        "--kill-child",
        "--mount-proc",
        sys.executable,
        "-I",
        str(_INIT_SCRIPT),
        json.dumps(config),
    ]
    try:
        process = subprocess.Popen(
            command,
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            cwd=workdir,
            pass_fds=(status_write,),
            start_new_session=True,
        )
    finally:
        os.close(status_write)
    return _supervise(process, status_read, limits, isolation="namespaces")


def _run_plain(
    argv: list[str], env: dict[str, str], workdir: str, stdin_fd: int, limits: SandboxLimits, drop_to: int | None
) -> RunResult:
    process = subprocess.Popen(
        argv,
        stdin=stdin_fd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=workdir,
        start_new_session=True,
        preexec_fn=_set_limits(limits, drop_to),  # limits must be set between fork and exec
    )
    return _supervise(process, None, limits, isolation="process")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _supervise(
    process: subprocess.Popen[bytes], status_fd: int | None, limits: SandboxLimits, *, isolation: Isolation
) -> RunResult:
    """Read output under the caps until the run ends or the deadline passes; kill and reap everything."""
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
    timed_out = killed = False
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(remaining, 0.5)):
                fd = key.fd
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                if key.data is None:
                    status_lines += chunk
                else:
                    key.data.feed(chunk)
            if stdout.truncated or stderr.truncated:
                break
        if timed_out or stdout.truncated or stderr.truncated:
            killed = True
            _kill_group(process)
            # The init process is in the group too; its death takes the whole PID namespace with it.
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
        with contextlib.suppress(ValueError):
            report.update(json.loads(line))
    ns = report.get("ns")
    leftovers = _kill_namespace(ns if isinstance(ns, str) else None) if isolation == "namespaces" else 0
    if isolation == "process" and not killed:
        _kill_group(process)  # background children still in the group

    if isolation == "namespaces":
        raw_code = report.get("exit_code")
        if killed:
            exit_code = None
        elif isinstance(raw_code, int):
            exit_code = raw_code
        else:  # init never reported: unshare itself failed, and says why on stderr
            exit_code = process.returncode
    else:
        exit_code = None if killed else process.returncode
    raw_cpu = report.get("cpu_seconds")
    cpu = float(raw_cpu) if isinstance(raw_cpu, int | float) else None
    # SIGXCPU comes only from RLIMIT_CPU's soft limit; a SIGKILL near the limit is its hard limit.
    cpu_killed = exit_code == -signal.SIGXCPU or (
        exit_code == -signal.SIGKILL and cpu is not None and cpu >= limits.cpu_seconds - 0.5
    )
    err_text = stderr.text()
    return RunResult(
        stdout=stdout.text(),
        stderr=err_text,
        exit_code=exit_code,
        timed_out=timed_out or cpu_killed,
        memory_exceeded=not timed_out and _memory_failure(err_text, exit_code),
        output_truncated=stdout.truncated or stderr.truncated,
        duration=round(duration, 3),
        cpu_seconds=cpu,
        network_isolated=isolation == "namespaces",
        filesystem_isolated=bool(report.get("filesystem_isolated", False)),
        isolation=isolation,
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
