"""The sandbox's init process: PID 1 of a fresh PID, network and mount namespace (run by ``unshare``).

It runs as root inside the namespaces and only uses the standard library. It:

1. reports the PID namespace's inode on the status pipe, so the supervisor can find every process of the run;
2. hides the host's scratch directories behind private tmpfs mounts (``/tmp``, ``/var/tmp``, ``/dev/shm``),
   binds the run's working directory back in, and remounts ``/`` read-only (this mount namespace only);
3. forks the user program: resource limits, no supplementary groups, an unprivileged uid/gid, then ``exec``;
4. waits for it and reports how it ended (exit code or signal, CPU seconds, peak RSS) as one JSON line.

When it exits, the kernel kills every process left in the PID namespace: a background child that escaped
with ``setsid`` cannot outlive the run. ``unshare --kill-child`` makes the kernel kill this process if
``unshare`` (its parent) dies, so a crashed supervisor also tears the namespace down.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    result = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


def _isolate_filesystem(workdir: str, tmpfs_mb: int) -> bool:
    """Private scratch dirs and a read-only root; returns True when all of it worked."""
    libc = ctypes.CDLL(None, use_errno=True)
    work_fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY)
    ok = True
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(scratch):
            try:
                _mount(libc, "tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
            except OSError:
                ok = False
    # The working directory may sit under a directory just hidden: bind it back at the same path.
    if not os.path.isdir(workdir):
        os.makedirs(workdir, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{work_fd}", workdir, None, MS_BIND, None)
    os.close(work_fd)
    try:
        _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    except OSError:
        ok = False
    return ok


def _limit(kind: int, value: int) -> None:
    resource.setrlimit(kind, (value, value))


def main() -> None:
    config = json.loads(sys.argv[1])
    status = os.fdopen(config["status_fd"], "w", buffering=1)
    os.set_inheritable(status.fileno(), False)
    status.write(json.dumps({"ns": os.readlink("/proc/self/ns/pid")}) + "\n")
    try:
        fs_ok = _isolate_filesystem(config["workdir"], config["tmpfs_mb"])
    except OSError:
        fs_ok = False
    status.write(json.dumps({"filesystem_isolated": fs_ok}) + "\n")

    child = os.fork()
    if child == 0:
        try:
            memory = config["memory_bytes"]
            _limit(resource.RLIMIT_AS, memory)
            _limit(resource.RLIMIT_DATA, memory)
            resource.setrlimit(resource.RLIMIT_CPU, (config["cpu_seconds"], config["cpu_seconds"] + 1))
            _limit(resource.RLIMIT_FSIZE, config["file_bytes"])
            _limit(resource.RLIMIT_NPROC, config["max_processes"])
            _limit(resource.RLIMIT_NOFILE, config["max_open_files"])
            _limit(resource.RLIMIT_CORE, 0)
            os.setgroups([])
            os.setgid(config["gid"])
            os.setuid(config["uid"])
            os.chdir(config["workdir"])
            os.umask(0o077)
            os.execve(config["argv"][0], config["argv"], config["env"])
        except BaseException as exc:
            os.write(2, f"sandbox: could not start the program: {exc!r}\n".encode())
        os._exit(126)

    # As PID 1 this process inherits every orphan: reap them until the program itself ends.
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            wait_status = 0
            break
        if pid == child:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "exit_code": os.waitstatus_to_exitcode(wait_status),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_kb": usage.ru_maxrss,
    }
    status.write(json.dumps(report) + "\n")
    status.close()


if __name__ == "__main__":
    main()
