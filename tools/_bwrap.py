"""The bubblewrap command line of one sandboxed run: namespaces, a minimal read-only root, sized scratch tmpfs.

The root holds only what the interpreter needs, bound read-only: the interpreter binary, its standard library
(without ``site-packages``), the shared libraries it and the stdlib's extension modules load (found once with
``ldd``), the symlinks leading to them, and the top-level merged-``/usr`` symlinks (``/lib`` → ``usr/lib``).
Nothing of the host's data is there: no host ``/tmp``, ``/run``, ``/var``, ``/home``, ``/etc`` (but
``ld.so.cache``), no project tree. ``/tmp``, ``/dev/shm`` and the working directory are fresh size-limited
tmpfs mounts that vanish with the run's mount namespace.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = [
    "PROGRAM_PATH",
    "WORKDIR",
    "SandboxRoot",
    "bwrap_argv",
    "find_bwrap",
    "namespace_args",
    "root_args",
    "sandbox_root",
]

#: The program's working directory (and ``HOME``) inside the sandbox; a path that does not exist on the host.
WORKDIR = "/sandbox"
#: Where the user program is bound inside the sandbox (the init runs it as ``python … PROGRAM_PATH``).
PROGRAM_PATH = f"{WORKDIR}/main.py"
#: Where the init script is bound inside the sandbox.
INIT_PATH = "/.sandbox-init.py"
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")
_PROBE = (
    "import json, sys, sysconfig\n"
    "paths = sysconfig.get_paths()\n"
    "print(json.dumps({'stdlib': paths['stdlib'], 'platstdlib': paths['platstdlib'], 'path': sys.path[1:]}))\n"
)


def find_bwrap() -> str | None:
    """The ``bwrap`` binary: ``$PACORE_BWRAP`` if set, else the first on a system ``PATH``."""
    configured = os.environ.get("PACORE_BWRAP")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("bwrap", path="/usr/local/bin:/usr/bin:/bin")


@dataclass(frozen=True)
class SandboxRoot:
    """What the sandbox's root filesystem is made of (host paths, each bound read-only at the same path)."""

    interpreter: str
    directories: tuple[str, ...]
    files: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]  # (target, link path)
    masked: tuple[str, ...]  # directories inside a bound one, hidden behind an empty tmpfs


def _canonical_parent(path: str) -> str:
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _link_chain(path: str, links: dict[str, str], files: set[str]) -> None:
    """Record every symlink on the way from ``path`` to the file it names, and that file."""
    current = _canonical_parent(path)
    for _ in range(40):  # the kernel's own symlink-depth bound
        if not os.path.islink(current):
            break
        target = os.readlink(current)
        links[current] = target
        current = _canonical_parent(os.path.join(os.path.dirname(current), target))
    if os.path.isfile(current):
        files.add(current)


def _shared_libraries(binaries: list[str]) -> list[str]:
    """Every shared library (and the loader) that ``binaries`` load, as ``ldd`` resolves them on this host."""
    ldd = shutil.which("ldd", path="/usr/bin:/bin")
    if ldd is None or not binaries:
        return []
    found = []
    for start in range(0, len(binaries), 64):  # keep the command line short
        out = subprocess.run(
            [ldd, *binaries[start : start + 64]], capture_output=True, text=True, timeout=60, env={"LC_ALL": "C"}
        ).stdout
        found += [match.group(1) for match in _LDD_LINE.finditer(out)]
    return sorted(set(found))


@functools.cache
def sandbox_root(interpreter: str) -> SandboxRoot:
    """Work out (once per interpreter) which host paths the sandbox needs to run ``interpreter``."""
    interpreter = os.path.realpath(interpreter)
    probe = subprocess.run(
        [interpreter, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60, env={"LC_ALL": "C"}
    )
    info = json.loads(probe.stdout)
    stdlib_dirs = sorted({os.path.realpath(info["stdlib"]), os.path.realpath(info["platstdlib"])})
    # sys.path entries outside the stdlib (e.g. lib-dynload elsewhere), but never a site or dist directory.
    for entry in info["path"]:
        real = os.path.realpath(entry)
        inside = any(real == d or real.startswith(d + "/") for d in stdlib_dirs)
        if os.path.isdir(real) and "-packages" not in real and not inside:
            stdlib_dirs.append(real)
    masked = tuple(
        path
        for directory in stdlib_dirs
        for path in (os.path.join(directory, "site-packages"), os.path.join(directory, "dist-packages"))
        if os.path.isdir(path)
    )
    binaries = [interpreter]
    for directory in stdlib_dirs:
        binaries += glob.glob(os.path.join(directory, "**", "*.so"), recursive=True)
    binaries = [path for path in binaries if not any(path.startswith(m + "/") for m in masked)]
    links: dict[str, str] = {}
    files: set[str] = set()
    for library in _shared_libraries(binaries):
        _link_chain(library, links, files)
    if os.path.isfile("/etc/ld.so.cache"):
        files.add("/etc/ld.so.cache")  # the loader's index of library paths, not data
    # Merged-/usr systems reach libraries through top-level symlinks (/lib -> usr/lib): recreate those.
    for entry in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = f"/{entry}"
        if os.path.islink(top):
            links[top] = os.readlink(top)
    files.discard(interpreter)
    in_dirs = [path for path in files if any(path.startswith(d + "/") for d in stdlib_dirs)]
    return SandboxRoot(
        interpreter=interpreter,
        directories=tuple(stdlib_dirs),
        files=tuple(sorted(set(files) - set(in_dirs))),
        symlinks=tuple(sorted((target, link) for link, target in links.items())),
        masked=masked,
    )


def namespace_args(bwrap: str, uid: int = 65534) -> list[str]:
    """``bwrap`` and its isolation options: every namespace, no capabilities, tied to its parent's life."""
    return [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",  # no nested user namespaces: less kernel surface
        "--uid",
        str(uid),
        "--gid",
        str(uid),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]


def root_args(root: SandboxRoot) -> list[str]:
    """The read-only binds of the minimal root (the directories first, the masks over them next)."""
    argv = []
    for directory in root.directories:
        argv += ["--ro-bind", directory, directory]
    for masked in root.masked:
        argv += ["--tmpfs", masked, "--remount-ro", masked]
    argv += ["--ro-bind", root.interpreter, root.interpreter]
    for file in root.files:
        argv += ["--ro-bind", file, file]
    for target, link in root.symlinks:
        argv += ["--symlink", target, link]
    return argv


def bwrap_argv(
    bwrap: str,
    root: SandboxRoot,
    *,
    init_fd: int,
    tmpfs_bytes: int,
    program_fd: int,
    info_fd: int,
    block_fd: int,
    uid: int,
    init_config: str,
) -> list[str]:
    """The full ``bwrap`` command: namespaces, the root, scratch mounts, the program file, then the init.

    The init (:mod:`pacore_graph.tools._sandbox_init`, read from ``init_fd``) runs as PID 1 (``--as-pid-1``) with
    ``init_config``; the program is copied from ``program_fd`` into the working directory. bwrap reports its
    child's PID and namespaces on ``info_fd`` and then waits on ``block_fd``, namespaces made but nothing of the
    run started, until the supervisor has moved the child into the run's cgroup.
    """
    argv = [*namespace_args(bwrap, uid), "--as-pid-1", "--info-fd", str(info_fd), "--block-fd", str(block_fd)]
    argv += root_args(root)
    argv += ["--ro-bind-data", str(init_fd), INIT_PATH, "--proc", "/proc", "--dev", "/dev"]
    size = str(tmpfs_bytes)
    for scratch, mode in (("/tmp", "1777"), ("/dev/shm", "1777"), (WORKDIR, "0700")):
        argv += ["--perms", mode, "--size", size, "--tmpfs", scratch]
    argv += ["--perms", "0600", "--file", str(program_fd), PROGRAM_PATH]
    argv += ["--chdir", WORKDIR, "--remount-ro", "/"]
    argv += [root.interpreter, "-I", "-S", INIT_PATH, init_config]
    return argv
