"""The sandbox's init process: PID 1 inside bubblewrap's namespaces (``bwrap --as-pid-1``).

It runs as the unprivileged sandbox uid, with no capabilities and ``no_new_privs`` (bwrap saw to that), and only
uses the standard library. It:

1. makes itself non-dumpable, so the program (same uid) can neither ptrace it nor open its ``/proc/1/fd``
   (the status pipe): the report cannot be forged;
2. says it is running (a ``{"ready": true}`` line on the status pipe) and waits for the supervisor's go on its
   own pipe; at end of file (the supervisor is gone) it exits and the program never starts;
3. forks the user program: per-process resource limits (``RLIMIT_NPROC`` counts the processes of the run's own
   user namespace, so it bounds the whole run), every inherited descriptor but stdio closed, then ``exec``;
4. as PID 1, reaps every orphan until the program itself ends, then reports how it ended (exit code or signal,
   CPU seconds, peak RSS of the biggest process) as one JSON line.

When it exits, the kernel kills every process left in the PID namespace: a background child that escaped with
``setsid`` cannot outlive the run. ``bwrap --die-with-parent`` kills this process if bwrap dies, and bwrap if
the supervisor dies, but bwrap arms each of those parent-death signals during its set-up, after the process
already exists: a supervisor killed in that window would leave a run nobody supervises. The go closes it: it is
sent only once this process is running, so both signals were armed while both parents were alive.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any


def _limit(kind: int, value: int) -> None:
    resource.setrlimit(kind, (value, value))


def _start_program(config: dict[str, Any], status_fd: int) -> None:
    """In the forked child: limits, a clean descriptor table, then the program. Never returns."""
    try:
        memory = int(config["memory_bytes"])
        cpu = int(config["cpu_seconds"])
        _limit(resource.RLIMIT_AS, memory)
        _limit(resource.RLIMIT_DATA, memory)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _limit(resource.RLIMIT_FSIZE, int(config["file_bytes"]))
        _limit(resource.RLIMIT_NPROC, int(config["max_processes"]))
        _limit(resource.RLIMIT_NOFILE, int(config["max_open_files"]))
        _limit(resource.RLIMIT_CORE, 0)
        os.close(status_fd)
        os.closerange(3, 65536)  # nothing but stdio reaches the program
        os.umask(0o077)
        argv = [str(arg) for arg in config["argv"]]
        env = {str(k): str(v) for k, v in config["env"].items()}
        os.execve(argv[0], argv, env)
    except BaseException as exc:
        os.write(2, f"sandbox: could not start the program: {exc!r}\n".encode())
    os._exit(126)


def _not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: reset by ``execve`` for the program, kept by this process."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def main() -> None:
    """Start the program, reap the namespace, report; see the module docstring."""
    _not_dumpable()
    config = json.loads(sys.argv[1])
    status_fd, go_fd = int(config["status_fd"]), int(config["go_fd"])
    os.set_inheritable(status_fd, False)
    os.set_inheritable(go_fd, False)
    os.write(status_fd, b'{"ready": true}\n')
    if not os.read(go_fd, 1):
        return  # the supervisor died before the go: run nothing
    os.close(go_fd)

    child = os.fork()
    if child == 0:
        _start_program(config, status_fd)

    # As PID 1 this process inherits every orphan: reap them until the program itself ends.
    wait_status = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            wait_status = status
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "exit_code": os.waitstatus_to_exitcode(wait_status),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_kb": usage.ru_maxrss,
    }
    os.write(status_fd, (json.dumps(report) + "\n").encode())
    os.close(status_fd)


if __name__ == "__main__":
    main()
