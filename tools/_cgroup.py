"""A cgroup per sandboxed run: aggregate memory, process count and CPU time of everything the run starts.

cgroup v2 is used when the unified hierarchy has the ``memory`` and ``pids`` controllers and this process may
create a child of its root (as root on most hosts); else cgroup v1 when its ``memory``, ``pids`` and ``cpuacct``
hierarchies are writable (the run's cgroups are created below this process's own cgroup there); else none, and
:func:`cgroup_support` says why. Each run gets ``<base>/run-N``: ``memory.max`` (v2) or
``memory.limit_in_bytes`` (v1, plus ``memsw`` when swap is accounted), ``pids.max``; CPU time is read from
``cpu.stat`` / ``cpuacct.usage`` and enforced by the supervisor. Every process of the run is killed through the
cgroup and the directory is removed afterwards.

Reaching the memory limit ends the whole run, not one process of it. The kernel's default is to OOM-kill a single
process (the biggest, often one that already did its work) and let the others go on past the limit's purpose: a
program whose four children each fill 100 MB under a 256 MB limit could still see all four finish. v2 sets
``memory.oom.group`` (the kernel kills the whole cgroup); v1 has no such switch, so it disables the run's OOM
killer (``memory.oom_control``): a process that faults at the limit is paused there, an eventfd registered on
``memory.oom_control`` wakes the supervisor, and the supervisor kills the run (:meth:`RunCgroup.memory_limit_reached`).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import itertools
import os
import signal
import time
from pathlib import Path
from typing import Literal

__all__ = ["CgroupSupport", "RunCgroup", "cgroup_support"]

CgroupVersion = Literal["v1", "v2"]
_V1_CONTROLLERS = ("memory", "pids", "cpuacct")
_counter = itertools.count()


@dataclasses.dataclass(frozen=True)
class CgroupSupport:
    """Which cgroup version this process can create run cgroups with, their parent directories, and why."""

    version: CgroupVersion | None
    bases: dict[str, Path]  # controller (or "unified") → the directory the runs' cgroups are created in
    reason: str


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and ``""`` for the unified hierarchy."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _remove_stale(parent: Path) -> None:
    """rmdir the (empty) run directories a killed earlier process left behind."""
    for stale in parent.glob("pacore-sandbox-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            for child in stale.glob("run-*"):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                stale.rmdir()


def _make_base(parent: Path) -> Path:
    _remove_stale(parent)
    base = parent / f"pacore-sandbox-{os.getpid()}"
    base.mkdir(exist_ok=True)
    atexit.register(_rmdir_quietly, base)
    return base


def _rmdir_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _try_v2(mounts: list[tuple[str, str, set[str]]]) -> CgroupSupport | str:
    unified = next((Path(point) for point, fstype, _ in mounts if fstype == "cgroup2"), None)
    if unified is None:
        return "no cgroup v2 mount"
    available = set((unified / "cgroup.controllers").read_text().split())
    if not {"memory", "pids"} <= available:
        return f"cgroup v2 at {unified} lacks the memory/pids controllers (has: {' '.join(sorted(available)) or '-'})"
    try:
        # The root is exempt from the no-internal-processes rule, so its children can enable controllers.
        enabled = set((unified / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:
            (unified / "cgroup.subtree_control").write_text("+memory +pids")
        base = _make_base(unified)
        (base / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as exc:
        return f"cannot create a cgroup v2 child with memory and pids: {exc}"
    return CgroupSupport(version="v2", bases={"unified": base}, reason=f"cgroup v2 under {base}")


def _try_v1(mounts: list[tuple[str, str, set[str]]]) -> CgroupSupport | str:
    own = _own_paths()
    bases = {}
    for controller in _V1_CONTROLLERS:
        point = next((Path(p) for p, fstype, opts in mounts if fstype == "cgroup" and controller in opts), None)
        if point is None or controller not in own:
            return f"no cgroup v1 {controller} hierarchy"
        try:
            bases[controller] = _make_base(point / own[controller].lstrip("/"))
        except OSError as exc:
            return f"cannot create a cgroup v1 {controller} child: {exc}"
    return CgroupSupport(version="v1", bases=bases, reason=f"cgroup v1 under {bases['memory']}")


@functools.cache
def cgroup_support() -> CgroupSupport:
    """Probe once which cgroup version works here (see the module docstring)."""
    if os.environ.get("PACORE_SANDBOX_NO_CGROUP"):
        return CgroupSupport(version=None, bases={}, reason="disabled by PACORE_SANDBOX_NO_CGROUP")
    try:
        mounts = _mounts()
    except (OSError, IndexError) as exc:
        return CgroupSupport(version=None, bases={}, reason=f"cannot read mounts: {exc}")
    reasons: list[str] = []
    for attempt in (_try_v2, _try_v1):
        try:
            found = attempt(mounts)
        except (OSError, ValueError, IndexError) as exc:  # an odd /proc or cgroupfs: no cgroup, and why
            found = f"{attempt.__name__}: {exc!r}"
        if isinstance(found, CgroupSupport):
            return dataclasses.replace(found, reason=f"{found.reason} (not v2: {reasons[0]})") if reasons else found
        reasons.append(found)
    return CgroupSupport(version=None, bases={}, reason="; ".join(reasons))


def _oom_eventfd(memory_dir: Path) -> int | None:
    """A non-blocking eventfd the kernel signals when the v1 memory cgroup ``memory_dir`` hits its limit, or None
    if the kernel refuses the registration (the supervisor then polls ``under_oom``)."""
    event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    control = os.open(memory_dir / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The registration keeps its own reference to the control file: the descriptor can be closed right away.
        (memory_dir / "cgroup.event_control").write_text(f"{event} {control}")
    except OSError:
        os.close(event)
        return None
    finally:
        os.close(control)
    return event


class RunCgroup:
    """The cgroup(s) of one run; create with :meth:`create`, then :meth:`add`, read, :meth:`close`."""

    def __init__(self, version: CgroupVersion, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        #: Readable once the run has hit its memory limit (v1: an eventfd on ``memory.oom_control``), else None.
        self.memory_event_fd: int | None = None
        self._limit_reached = False

    @classmethod
    def create(cls, support: CgroupSupport, *, memory_bytes: int, max_processes: int) -> RunCgroup:
        """A fresh cgroup with the run's memory and process limits (swap counted as memory where it can be)."""
        assert support.version is not None
        name = f"run-{next(_counter)}"
        dirs = {controller: base / name for controller, base in support.bases.items()}
        group = cls(support.version, {})
        for controller, path in dirs.items():
            path.mkdir()
            group.dirs[controller] = path
        try:
            if support.version == "v2":
                unified = dirs["unified"]
                (unified / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (unified / "memory.swap.max").write_text("0")
                (unified / "pids.max").write_text(str(max_processes))
                # The limit kills the whole run, not one process (a kernel before 4.19 lacks the file; the limit
                # still holds, and memory_limit_reached still sees its kills).
                with contextlib.suppress(OSError):
                    (unified / "memory.oom.group").write_text("1")
            else:
                memory = dirs["memory"]
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                (dirs["pids"] / "pids.max").write_text(str(max_processes))
                # No OOM killer: a process at the limit waits there until the supervisor ends the whole run. Should
                # the kernel refuse, the limit still holds and memory_limit_reached still sees the kernel's kills.
                with contextlib.suppress(OSError):
                    (memory / "memory.oom_control").write_text("1")
                    group.memory_event_fd = _oom_eventfd(memory)
        except OSError:
            group.close()
            raise
        return group

    def add(self, pid: int) -> None:
        """Move process ``pid`` into the run's cgroup (its later children are born there)."""
        for path in self.dirs.values():
            (path / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the run."""
        if self.version == "v2":
            for line in (self.dirs["unified"] / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return 0.0
        return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9

    def memory_limit_reached(self) -> bool:
        """The run hit its memory limit with nothing left to reclaim (once seen, it stays True).

        v1: the OOM eventfd fired or ``under_oom`` is set (a process is paused at the limit), or a kernel that
        ignored ``oom_kill_disable`` killed a process for it; v2: the kernel OOM-killed the run (``oom_kill``).
        """
        if not self._limit_reached:
            self._limit_reached = self._oom_event_fired() or any(
                self._oom_counters().get(key, 0) > 0 for key in ("under_oom", "oom_kill")
            )
        return self._limit_reached

    def _oom_event_fired(self) -> bool:
        if self.memory_event_fd is None:
            return False
        try:
            return os.eventfd_read(self.memory_event_fd) > 0
        except OSError:  # EAGAIN: not fired (the eventfd is non-blocking)
            return False

    def _oom_counters(self) -> dict[str, int]:
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        directory = self.dirs.get("unified" if self.version == "v2" else "memory")
        counters = {}
        if directory is not None:
            with contextlib.suppress(OSError, ValueError):
                for line in (directory / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    counters[key] = int(value)
        return counters

    def peak_memory_bytes(self) -> int | None:
        """The run's peak memory use, where the kernel reports it."""
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        directory = self.dirs["unified" if self.version == "v2" else "memory"]
        try:
            return int((directory / name).read_text())
        except (OSError, ValueError):
            return None

    def _pids(self) -> list[int]:
        path = self.dirs["unified" if self.version == "v2" else "pids"]
        try:
            return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process of the run (``cgroup.kill`` where the kernel has it)."""
        if self.version == "v2" and (self.dirs["unified"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs["unified"] / "cgroup.kill").write_text("1")
        for pid in self._pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def close(self, timeout: float = 2.0) -> None:
        """Kill what is left and remove the cgroup directories (retrying while the dying processes exit)."""
        if self.memory_event_fd is not None:
            os.close(self.memory_event_fd)
            self.memory_event_fd = None
        deadline = time.monotonic() + timeout
        while self.dirs:
            self.kill()
            for controller, path in list(self.dirs.items()):
                try:
                    path.rmdir()
                except FileNotFoundError:
                    del self.dirs[controller]
                except OSError:
                    continue
                else:
                    del self.dirs[controller]
            if self.dirs and time.monotonic() < deadline:
                time.sleep(0.01)
            elif self.dirs:
                break
