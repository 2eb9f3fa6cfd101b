"""Adversarial tests: the sandbox contains hostile programs, classifies how they ended, and leaves nothing behind.

Every test ends by scanning /proc for processes of the sandbox uid (nobody) and of the run's PID namespace:
none may be left. Tests never send traffic anywhere but 127.0.0.1 (pytest-socket enforces it in-process).
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pacore_graph.tools._bwrap import PROGRAM_PATH
from pacore_graph.tools.sandbox import (
    _INIT_SCRIPT,
    SandboxLimits,
    TestCase,
    normalize_output,
    run_python,
    run_tests,
    sandbox_capabilities,
)

NOBODY = 65534
CAPS = sandbox_capabilities()
needs_namespaces = pytest.mark.skipif(
    CAPS.isolation != "bwrap", reason=f"bubblewrap isolation unavailable: {CAPS.reason}"
)
FAST = SandboxLimits(wall_seconds=3, cpu_seconds=2)


def _uid_of(pid: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cgroup_of(pid: str) -> str:
    """The memory (else unified) cgroup path of a process: runs are created below the test process's own."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return ""
    paths = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}
    return paths.get("memory", paths.get("", "/"))


OWN_CGROUP = _cgroup_of("self")


def _ours(pid: str) -> bool:
    # Other sessions on a shared host may run sandboxes (as nobody) in their own cgroups at the same time.
    return OWN_CGROUP in ("", "/") or _cgroup_of(pid).startswith(OWN_CGROUP)


def sandbox_processes() -> list[int]:
    """Live (non-zombie) processes of the sandbox uid (started by this test session)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _uid_of(entry) == NOBODY and _ours(entry):
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(int(entry))
    return found


def program_processes() -> list[int]:
    """The sandboxed programs among :func:`sandbox_processes` (not bwrap, its init or a capability probe)."""
    found = []
    for pid in sandbox_processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[-2] == PROGRAM_PATH.encode():
            found.append(pid)
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    assert sandbox_processes() == [], "a process of uid nobody was running before the test"
    yield
    deadline = time.monotonic() + 2
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == [], "the sandbox left processes behind"


def test_a_plain_program_runs_with_stdin_and_exit_code():
    result = run_python("import sys\nname = input()\nprint(f'hello {name}')\nsys.exit(3)", "world\n")
    assert result.stdout == "hello world\n"
    assert result.exit_code == 3
    assert not (result.timed_out or result.memory_exceeded or result.output_truncated)
    assert result.network_isolated is (CAPS.isolation == "bwrap")
    assert result.describe() == "exit code 3"


def test_a_crash_reports_its_traceback():
    result = run_python("raise ValueError('boom')")
    assert result.exit_code == 1
    assert "ValueError: boom" in result.stderr
    assert not result.ok


@needs_namespaces
def test_fork_bomb_is_capped_and_killed():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    result = run_python(bomb, limits=SandboxLimits(wall_seconds=2, cpu_seconds=5, max_processes=32))
    assert time.monotonic() - started < 6
    assert result.timed_out
    assert result.exit_code is None  # the sandbox killed it
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


@needs_namespaces
def test_fork_bomb_cannot_exceed_the_process_limit():
    code = (
        "import os, time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    n += 1\nprint(n)\n"
    )
    result = run_python(code, limits=SandboxLimits(max_processes=16))
    assert result.exit_code == 0
    assert int(result.stdout) < 16  # the program itself counts against the limit
    # The sleeping children died with the PID namespace when the program ended.


def test_infinite_loop_hits_the_cpu_limit():
    result = run_python("while True:\n    pass\n", limits=SandboxLimits(wall_seconds=5, cpu_seconds=1))
    assert result.timed_out
    assert result.duration < 4
    assert result.describe() == "timed out"


def test_sleeping_forever_hits_the_wall_clock():
    result = run_python("import time\ntime.sleep(1000)\n", limits=SandboxLimits(wall_seconds=1, cpu_seconds=5))
    assert result.timed_out
    assert result.exit_code is None
    assert 1 <= result.duration < 4


def test_a_10_gb_allocation_is_refused():
    result = run_python("x = bytearray(10 * 1024 ** 3)\nprint('allocated')\n", limits=FAST)
    assert result.memory_exceeded
    assert not result.timed_out
    assert "allocated" not in result.stdout
    assert result.describe() == "exceeded the memory limit"


def test_growing_memory_step_by_step_is_stopped():
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))\n"
    result = run_python(code, limits=SandboxLimits(wall_seconds=5, cpu_seconds=3, memory_mb=256))
    assert result.memory_exceeded


@needs_namespaces
def test_the_network_is_unreachable_even_on_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\n"
        "except OSError as exc:\n    print('blocked', exc.errno)\n"
    )
    try:
        result = run_python(code, limits=FAST)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    finally:
        listener.close()
    assert result.stdout.startswith("blocked"), result
    assert result.network_isolated


@needs_namespaces
def test_writes_outside_the_working_directory_do_not_land(tmp_path):
    marker = f"pacore-marker-{uuid.uuid4().hex}"
    repo = Path(__file__).resolve().parent.parent
    targets = [f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", str(repo / marker), str(tmp_path / marker)]
    code = (
        "import os\n"
        f"for path in {targets!r} + [os.path.join(os.getcwd(), 'inside.txt')]:\n"
        "    try:\n        with open(path, 'w') as f:\n            f.write('x')\n        print('wrote', path)\n"
        "    except OSError as exc:\n        print('refused', path, exc.errno)\n"
    )
    try:
        result = run_python(code, limits=FAST)
        assert result.exit_code == 0, result
        assert "wrote " in result.stdout and "inside.txt" in result.stdout  # its own directory is writable
        for target in targets:
            assert not Path(target).exists(), f"{target} was written from inside the sandbox"
        assert result.filesystem_isolated is (CAPS.isolation == "bwrap")
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)


def test_the_working_directory_is_fresh_and_removed():
    first = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nopen('left.txt','w')\n")
    workdir = first.stdout.splitlines()[0]
    assert "left.txt" not in first.stdout
    assert not Path(workdir).exists()
    second = run_python("import os\nprint(os.path.exists('left.txt'))\n")
    assert second.stdout.strip() == "False"


def test_the_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("PACORE_FAKE_SECRET", "s3cr3t-token-value")
    code = (
        "import os\nprint(dict(os.environ))\n"
        "for pid in ('1', str(os.getppid())):\n"
        "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n        print('no environ of', pid, exc.errno)\n"
    )
    result = run_python(code, limits=FAST)
    assert result.exit_code == 0, result
    assert "s3cr3t-token-value" not in result.stdout + result.stderr
    assert "PACORE_FAKE_SECRET" not in result.stdout


@needs_namespaces
def test_a_background_child_does_not_outlive_the_run():
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        for fd in (0, 1, 2):\n            os.close(fd)\n        time.sleep(60)\n    os._exit(0)\n"
        "print('parent done')\n"
    )
    started = time.monotonic()
    result = run_python(code, limits=SandboxLimits(wall_seconds=5))
    assert result.stdout == "parent done\n"
    assert result.exit_code == 0
    assert time.monotonic() - started < 3
    # The autouse fixture asserts the sleeper is gone.


@needs_namespaces
def test_a_background_child_holding_stdout_does_not_stall_the_run():
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
        "print('parent done', flush=True)\n"
    )
    started = time.monotonic()
    result = run_python(code, limits=SandboxLimits(wall_seconds=5))
    assert result.stdout == "parent done\n"
    assert not result.timed_out
    assert time.monotonic() - started < 3


def test_a_gigabyte_of_output_is_capped_fast():
    code = "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)\n"
    started = time.monotonic()
    result = run_python(code, limits=SandboxLimits(wall_seconds=10, cpu_seconds=10, max_output_bytes=100_000))
    assert time.monotonic() - started < 5
    assert result.output_truncated
    assert len(result.stdout) == 100_000
    assert result.exit_code is None


def test_the_fallback_mode_still_limits_and_reports_no_network_isolation():
    result = run_python(
        "import os\nprint(sorted(os.environ))\nwhile True:\n    pass\n",
        limits=SandboxLimits(wall_seconds=5, cpu_seconds=1),
        isolation="process",
    )
    assert result.isolation == "process"
    assert result.network_isolated is False
    assert result.timed_out
    assert "HOME" in result.stdout and "PACORE" not in result.stdout


def test_fallback_mode_refuses_a_big_allocation():
    result = run_python("bytearray(10 * 1024 ** 3)", limits=FAST, isolation="process")
    assert result.memory_exceeded


def test_run_tests_reports_each_case():
    code = "a, b = map(int, input().split())\nprint(a + b if a < 10 else a - b, end='   \\n')\n"
    tests = [
        TestCase(input="1 2\n", output="3\n"),
        TestCase(input="2 2", output="4"),
        TestCase(input="10 1\n", output="11\n"),
    ]
    report = run_tests(code, tests, limits=FAST)
    assert [outcome.passed for outcome in report.outcomes] == [True, True, False]
    assert report.passed == 2 and report.total == 3 and not report.all_passed
    assert report.outcomes[2].actual == "9   \n"
    assert report.outcomes[2].error is None


def test_run_tests_explains_a_crash():
    report = run_tests("print(undefined_name)", [TestCase(input="", output="1")], limits=FAST)
    assert not report.outcomes[0].passed
    assert report.outcomes[0].error is not None and "NameError" in report.outcomes[0].error


def test_normalize_output_ignores_trailing_whitespace_only():
    assert normalize_output("1 2  \r\n3\n\n\n") == "1 2\n3"
    assert normalize_output(" 1") != normalize_output("1")


# --- bubblewrap: namespaces, the minimal root, privileges ---------------------------------------------------------

needs_cgroup = pytest.mark.skipif(
    CAPS.cgroup is None,
    reason=f"no cgroup for runs here ({CAPS.cgroup_reason or CAPS.reason}): whole-run limits on memory and CPU "
    "are per-process only and cannot be tested",
)
ALLOWED_ROOT = {"sandbox", "tmp", "dev", "proc", "usr", "etc", ".sandbox-init.py"} | {
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "libx32",
}


def _json_result(code: str, **kwargs):
    """Run a probe program that prints one JSON line, and return it decoded."""
    result = run_python(code, limits=kwargs.pop("limits", FAST), **kwargs)
    assert result.exit_code == 0, result
    return json.loads(result.stdout.strip().splitlines()[-1])


def _listen_unix(address: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    if not address.startswith("\0"):
        os.chmod(address, 0o777)  # anyone may connect, as to PostgreSQL's socket
    listener.listen()
    listener.setblocking(False)
    return listener


@pytest.fixture
def run_dir():
    """A world-searchable directory in the host's /run (where PostgreSQL and others put their sockets)."""
    path = Path("/run") / f"pacore-sandbox-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(mode=0o755)
    except OSError as exc:
        pytest.skip(f"cannot create a directory in /run to put a host socket in: {exc}")
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_namespaces
def test_a_host_unix_socket_is_unreachable(tmp_path, run_dir):
    # Filesystem sockets in the host /tmp and /run anyone may connect to (like /run/postgresql/.s.PGSQL.5432),
    # and an abstract one: a network namespace alone does not cover filesystem sockets.
    tmp_path.chmod(0o755)
    addresses = {
        "tmp": str(tmp_path / "host.sock"),
        "run": str(run_dir / "host.sock"),
        "abstract": f"\0pacore-test-{uuid.uuid4().hex}",
    }
    listeners = [_listen_unix(address) for address in addresses.values()]
    code = (
        "import json, os, socket\nout = {}\n"
        f"for name, address in {sorted(addresses.items())!r} + [('postgres', '/run/postgresql/.s.PGSQL.5432')]:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(address)\n        out[name] = 'CONNECTED'\n"
        "    except OSError as exc:\n        out[name] = exc.errno\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = _json_result(code)
        for listener in listeners:
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody knocked
    finally:
        for listener in listeners:
            listener.close()
    assert "CONNECTED" not in out.values(), out
    assert out["tmp"] == out["run"] == out["postgres"] == errno.ENOENT  # the host's /tmp and /run are not there
    assert out["abstract"] == errno.ECONNREFUSED  # abstract sockets belong to the host's network namespace


@needs_namespaces
def test_host_files_and_directories_are_not_there(tmp_path):
    secret = tmp_path / "ground-truth.jsonl"
    secret.write_text("the answer is 42\n")
    tmp_path.chmod(0o755)
    secret.chmod(0o644)
    here = Path(__file__).resolve()
    probes = [str(secret), str(here), str(here.parent.parent / "pyproject.toml"), "/etc/passwd", "/etc/hostname"]
    probes += ["/home", "/root", "/var", "/run", "/work", "/srv", "/mnt", "/opt", "/proc/1/root/etc/passwd"]
    code = (
        "import json, os\nout = {'root': sorted(os.listdir('/')), 'etc': sorted(os.listdir('/etc')),"
        " 'tmp': os.listdir('/tmp'), 'seen': []}\n"
        f"for path in {probes!r}:\n"
        "    if os.path.exists(path):\n        out['seen'].append(path)\n"
        "try:\n    import yaml\n    out['yaml'] = 'imported'\nexcept ImportError:\n    out['yaml'] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    out = _json_result(code)
    assert out["seen"] == [], out
    assert set(out["root"]) <= ALLOWED_ROOT, out["root"]
    assert out["etc"] == ["ld.so.cache"]
    assert out["tmp"] == []
    assert out["yaml"] == "missing"  # no host site-packages either


@needs_namespaces
def test_the_root_is_read_only():
    code = (
        "import json, os\nout = {}\n"
        "for path in ('/x', '/usr/x', '/etc/x', '/usr/lib/python3.11/x', '/proc/x'):\n"
        "    try:\n        open(path, 'w').close()\n        out[path] = 'WROTE'\n"
        "    except OSError as exc:\n        out[path] = exc.errno\n"
        "print(json.dumps(out))\n"
    )
    out = _json_result(code)
    assert "WROTE" not in out.values(), out


@needs_namespaces
def test_privileges_are_dropped_and_nothing_can_regain_them():
    code = (
        "import ctypes, json, os, stat\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "out = {k: status[k].strip() for k in ('NoNewPrivs', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')}\n"
        "out['uid'] = os.getuid()\n"
        "try:\n    os.setuid(0)\n    out['setuid'] = 'BECAME ROOT'\n"
        "except OSError as exc:\n    out['setuid'] = exc.errno\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out['new_userns'] = libc.unshare(0x10000000)\n"  # CLONE_NEWUSER: refused (--disable-userns)
        "out['suid_mounts'] = [l for l in open('/proc/self/mountinfo') if 'nosuid' not in l.split()[5]]\n"
        "out['setuid_files'] = []\n"
        "for top in ('/usr', '/etc', '/sandbox', '/tmp'):\n"
        "    for d, _, files in os.walk(top):\n"
        "        for f in files:\n"
        "            try:\n                m = os.lstat(os.path.join(d, f)).st_mode\n"
        "            except OSError:\n                continue\n"
        "            if m & (stat.S_ISUID | stat.S_ISGID):\n                out['setuid_files'].append(f)\n"
        "print(json.dumps(out))\n"
    )
    out = _json_result(code)
    assert out["NoNewPrivs"] == "1"
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(out[caps], 16) == 0, out
    assert out["uid"] == NOBODY
    assert out["setuid"] in (errno.EPERM, errno.EINVAL)  # uid 0 does not even exist in the namespace
    assert out["new_userns"] == -1
    assert out["suid_mounts"] == []
    assert out["setuid_files"] == []


@needs_namespaces
def test_pid_uts_and_session_are_the_runs_own():
    code = (
        "import json, os, socket\nout = {'pid': os.getpid(), 'sid': os.getsid(0), 'host': socket.gethostname(),"
        " 'ifaces': [n for _, n in socket.if_nameindex()],"
        " 'procs': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}\n"
        f"try:\n    os.kill({os.getpid()}, 0)\n    out['kill'] = 'REACHED'\n"
        "except OSError as exc:\n    out['kill'] = exc.errno\n"
        "try:\n    open('/dev/tty')\n    out['tty'] = 'OPENED'\nexcept OSError as exc:\n    out['tty'] = exc.errno\n"
        "print(json.dumps(out))\n"
    )
    out = _json_result(code)
    assert out["procs"] == [1, out["pid"]]  # the init and the program: no host process is visible
    assert out["kill"] == errno.ESRCH  # the supervisor's PID means nothing in here
    assert out["host"] == "sandbox" and out["ifaces"] == ["lo"]
    assert out["sid"] == 1  # a new session (led by the init): no controlling terminal to inject keys into
    assert out["tty"] == errno.ENXIO


@needs_namespaces
def test_the_run_dies_with_its_supervisor():
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pacore_graph.tools import SandboxLimits, run_python\n"
            "run_python('import time\\ntime.sleep(120)', limits=SandboxLimits(wall_seconds=120))",
        ],
    )
    try:
        # Wait for the program itself: the supervisor's capability probe also runs briefly as nobody.
        deadline = time.monotonic() + 60  # importing and probing can take a while on a loaded machine
        while not program_processes() and time.monotonic() < deadline and supervisor.poll() is None:
            time.sleep(0.05)
        assert program_processes(), f"the sandboxed program never started (supervisor exit: {supervisor.poll()})"
        time.sleep(0.3)
        supervisor.kill()  # SIGKILL: no cleanup code runs
        supervisor.wait()
        deadline = time.monotonic() + 3
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox_processes() == [], "the sandbox outlived its supervisor"
    finally:
        supervisor.kill()
        supervisor.wait()


def _run_init(send_go: bool, marker: Path) -> bytes:
    """Run the sandbox's init script directly with a program that creates ``marker``; return its status lines."""
    status_read, status_write = os.pipe()
    go_read, go_write = os.pipe()
    program = f"open({str(marker)!r}, 'w').close()"
    config = {
        "argv": [sys.executable, "-I", "-c", program],
        "env": {"PATH": "/usr/bin:/bin"},
        "status_fd": status_write,
        "go_fd": go_read,
        "memory_bytes": 2**30,
        "cpu_seconds": 10,
        "file_bytes": 2**20,
        "max_processes": 4096,
        "max_open_files": 256,
    }
    init = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            str(_INIT_SCRIPT),  # the file the sandbox runs as its init
            json.dumps(config),
        ],
        pass_fds=[status_write, go_read],
    )
    os.close(status_write)
    os.close(go_read)
    with os.fdopen(status_read, "rb") as status:
        assert status.readline() == b'{"ready": true}\n'  # running, and waiting for the go
        assert not marker.exists()
        if send_go:
            os.write(go_write, b"1")
        os.close(go_write)
        assert init.wait(timeout=30) == 0
        return status.read()


def test_the_init_starts_the_program_only_on_the_supervisors_go(tmp_path):
    report = json.loads(_run_init(send_go=True, marker=tmp_path / "ran"))
    assert report["exit_code"] == 0 and (tmp_path / "ran").exists()
    # The supervisor gone before the go (its end of the pipe closed): the program never runs, nothing is reported.
    assert _run_init(send_go=False, marker=tmp_path / "never") == b""
    assert not (tmp_path / "never").exists()


# --- whole-run limits -----------------------------------------------------------------------------------------------


def test_the_result_says_which_limits_held():
    result = run_python("print(1)", limits=FAST)
    assert result.limits_enforced == CAPS.limits_enforced
    assert set(result.limits_enforced) == set(SandboxLimits.model_fields)
    assert result.limits_enforced["wall_seconds"] == "run"
    fallback = run_python("print(1)", limits=FAST, isolation="process")
    assert fallback.limits_enforced["memory_mb"] == "process", fallback
    assert fallback.limits_enforced["tmpfs_mb"] == "none"
    if CAPS.isolation == "bwrap":
        assert result.limits_enforced["max_processes"] == "run"
        assert result.limits_enforced["tmpfs_mb"] == "run"
        assert result.limits_enforced["memory_mb"] == ("run" if CAPS.cgroup else "process")


@needs_namespaces
def test_without_a_cgroup_the_result_says_memory_and_cpu_are_per_process():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json\nfrom pacore_graph.tools import run_python, sandbox_capabilities\n"
            "result = run_python('print(1)')\n"
            "print(json.dumps([sandbox_capabilities().cgroup, result.stdout, result.limits_enforced]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PACORE_SANDBOX_NO_CGROUP": "1"},
    )
    assert probe.returncode == 0, probe.stderr
    cgroup, stdout, scopes = json.loads(probe.stdout)
    assert cgroup is None
    assert stdout == "1\n"
    assert scopes["memory_mb"] == "process" and scopes["cpu_seconds"] == "process"
    assert scopes["max_processes"] == "run" and scopes["tmpfs_mb"] == "run"


CHILDREN_HOLD_MEMORY = """
import os, select, time
n, each = 4, 100 * 1024 * 1024
read, write = os.pipe()
for _ in range(n):
    if os.fork() == 0:
        os.close(read)
        block = bytearray(b'\\x01') * each  # touched: resident, not just reserved
        os.write(write, b'+')
        time.sleep(30)
        os._exit(0)
os.close(write)
got = 0
while got < n and select.select([read], [], [], 4)[0]:  # a killed child never reports
    chunk = os.read(read, 16)
    if not chunk:
        break
    got += len(chunk)
print(f'{got} of {n} children hold their memory', flush=True)
"""


@needs_cgroup
def test_memory_is_limited_for_the_whole_run():
    # Each child stays under the per-process limit (256 MB of address space); together they need 400 MB.
    result = run_python(CHILDREN_HOLD_MEMORY, limits=SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=256))
    assert result.memory_exceeded, result
    assert result.describe() == "exceeded the memory limit"
    assert "4 of 4" not in result.stdout
    assert result.limits_enforced["memory_mb"] == "run"
    assert result.peak_memory_mb is not None and result.peak_memory_mb <= 256 + 1


FILL_PAST_THE_LIMIT = """
import os, time
read, write = os.pipe()
if os.fork() == 0:
    block = bytearray(b'\\x01') * (150 * 1024 * 1024)
    os.write(write, b'+')
    time.sleep(30)
    os._exit(0)
os.read(read, 1)  # the first child holds 150 MB
filler = os.fork()
if filler == 0:
    block = bytearray(b'\\x01') * (150 * 1024 * 1024)  # another 150 MB: past the run's 256 MB
    os._exit(0)
os.waitpid(filler, 0)
print('the run went on', flush=True)
"""


@needs_cgroup
def test_reaching_the_memory_limit_ends_the_whole_run():
    # The kernel alone would kill one child (either) and let the parent go on: the limit ends all of the run.
    result = run_python(FILL_PAST_THE_LIMIT, limits=SandboxLimits(wall_seconds=20, cpu_seconds=10, memory_mb=256))
    assert result.memory_exceeded, result
    assert "the run went on" not in result.stdout, result
    assert result.exit_code is None
    assert result.peak_memory_mb is not None and result.peak_memory_mb <= 256 + 1


def test_children_under_the_limit_together_are_fine():
    result = run_python(CHILDREN_HOLD_MEMORY.replace("120 * 1024", "20 * 1024"), limits=SandboxLimits(wall_seconds=20))
    assert "4 of 4 children hold their memory" in result.stdout, result
    assert not result.memory_exceeded


SPREAD_CPU = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        while time.process_time() < 0.9:  # each stays well under the per-process CPU limit
            pass
        os._exit(0)
for _ in range(3):
    os.wait()
print('done')
"""


@needs_cgroup
def test_cpu_time_is_limited_for_the_whole_run():
    result = run_python(SPREAD_CPU, limits=SandboxLimits(wall_seconds=20, cpu_seconds=2))
    assert result.timed_out, result
    assert result.exit_code is None
    assert "done" not in result.stdout
    assert result.cpu_seconds is not None and result.cpu_seconds >= 2
    assert result.limits_enforced["cpu_seconds"] == "run"


@needs_namespaces
def test_processes_are_counted_across_the_whole_tree():
    # Every child forks grandchildren: the run's total, not any one parent's, is capped. Each new process
    # reports itself on a pipe; the init and the program count too.
    code = (
        "import os, time\nread, write = os.pipe()\n"
        "def spawn(then):\n    try:\n        pid = os.fork()\n    except OSError:\n        return False\n"
        "    if pid == 0:\n        os.write(write, b'+')\n        then()\n        time.sleep(30)\n        os._exit(0)\n"
        "    return True\n"
        "def grandchildren():\n    for _ in range(10):\n        if not spawn(lambda: None):\n            break\n"
        "for _ in range(6):\n    spawn(grandchildren)\n"
        "time.sleep(2)\nos.set_blocking(read, False)\nprint(len(os.read(read, 1000)))\n"
    )
    result = run_python(code, limits=SandboxLimits(wall_seconds=10, max_processes=20))
    assert result.exit_code == 0, result
    assert 6 <= int(result.stdout) <= 20 - 2, result  # at most 20 with the init and the program
    assert result.limits_enforced["max_processes"] == "run"


@needs_namespaces
def test_scratch_space_is_size_limited():
    code = (
        "import json, os\nout = {}\nchunk = b'x' * (1024 * 1024)\n"
        "for d in ('/tmp', '/dev/shm', '/sandbox'):\n    written = 0\n"
        "    try:\n        with open(os.path.join(d, 'fill'), 'wb') as f:\n"
        "            for _ in range(64):\n                f.write(chunk)\n                f.flush()\n"
        "                written += len(chunk)\n        out[d] = ['no limit', written]\n"
        "    except OSError as exc:\n        out[d] = [exc.errno, written]\n"
        "    os.remove(os.path.join(d, 'fill'))\n"
        "print(json.dumps(out))\n"
    )
    out = _json_result(code, limits=SandboxLimits(wall_seconds=10, tmpfs_mb=8, max_file_mb=128, memory_mb=512))
    for directory, (error, written) in out.items():
        assert error == errno.ENOSPC, (directory, out)
        assert written <= 8 * 1024 * 1024


@needs_namespaces
def test_concurrent_runs_are_isolated_from_a_fork_bomb_and_a_memory_hog():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    hog = CHILDREN_HOLD_MEMORY.replace("n, each = 4,", "n, each = 30,")
    honest = (
        "import os\nblock = bytearray(b'1') * (40 * 1024 * 1024)\npids = []\n"
        "for _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    pids.append(pid)\n"
        "for pid in pids:\n    os.waitpid(pid, 0)\nprint('fine')\n"
    )
    hostile = SandboxLimits(wall_seconds=6, cpu_seconds=5, memory_mb=256, max_processes=32)
    with ThreadPoolExecutor(max_workers=5) as pool:
        attacks = [pool.submit(run_python, bomb, limits=hostile), pool.submit(run_python, hog, limits=hostile)]
        time.sleep(0.5)  # the attacks are under way
        honest_runs = [pool.submit(run_python, honest, limits=SandboxLimits(wall_seconds=20)) for _ in range(3)]
        results = [future.result() for future in honest_runs]
        attack_results = [future.result() for future in attacks]
    for result in results:
        assert result.ok and result.stdout == "fine\n", result
    assert attack_results[0].timed_out
    if CAPS.cgroup:  # without a cgroup each hog child stays under its own limit and the hog itself "succeeds"
        assert attack_results[1].memory_exceeded, attack_results[1]


# --- nothing stays behind -------------------------------------------------------------------------------------------


@needs_namespaces
def test_sysv_ipc_and_files_created_inside_are_gone_after_the_run():
    key = 0x5AC0000 + os.getpid() % 0xFFFF
    create = (
        "import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"out = {{'shm': libc.shmget({key}, 4096, 0o1600), 'msg': libc.msgget({key}, 0o1600),"
        f" 'sem': libc.semget({key}, 1, 0o1600)}}\n"
        "for path in ('/tmp/left', '/dev/shm/left', '/sandbox/left'):\n    open(path, 'w').write('x')\n"
        "print(json.dumps(out))\n"
    )
    look = (
        "import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"out = {{'shm': libc.shmget({key}, 0, 0), 'msg': libc.msgget({key}, 0), 'sem': libc.semget({key}, 0, 0),"
        " 'files': [p for p in ('/tmp/left', '/dev/shm/left', '/sandbox/left') if os.path.exists(p)]}\n"
        "print(json.dumps(out))\n"
    )
    created = _json_result(create)
    assert all(ident >= 0 for ident in created.values()), created  # creating them worked
    later = _json_result(look)
    assert (later["shm"], later["msg"], later["sem"]) == (-1, -1, -1)
    assert later["files"] == []
    host_ipc = "".join(Path(f"/proc/sysvipc/{kind}").read_text() for kind in ("shm", "msg", "sem"))
    assert f" {key} " not in host_ipc  # never in the host's IPC namespace either
    assert not Path("/tmp/left").exists() and not Path("/dev/shm/left").exists()


# --- any input is a result ------------------------------------------------------------------------------------------

GARBAGE = [
    "\ud800",  # a lone high surrogate
    "print('\udcff')",  # a lone low surrogate (an escaped undecodable byte)
    "print(1)\x00print(2)",  # a NUL byte
    bytes(range(256)).decode("utf-8", errors="surrogateescape"),  # binary garbage
    "\ufeff\u2028print(3)\u0085",
    "",
]


@pytest.mark.parametrize("text", GARBAGE)
@pytest.mark.parametrize("isolation", ["default", "process"])
def test_any_code_or_stdin_gives_a_result(text, isolation):
    mode = None if isolation == "default" else "process"
    as_code = run_python(text, limits=FAST, isolation=mode)
    assert as_code.exit_code is not None and not as_code.timed_out
    echo = "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n"
    as_stdin = run_python(echo, text, limits=FAST, isolation=mode)
    assert as_stdin.exit_code == 0, as_stdin
    expected = text.encode("utf-8", "surrogateescape" if "\ud800" not in text else "surrogatepass")
    assert as_stdin.stdout == expected.decode("utf-8", errors="replace")
    report = run_tests(echo, [TestCase(input=text, output=text)], limits=FAST, isolation=mode)
    assert report.total == 1


def test_an_interpreter_that_does_not_exist_is_a_result():
    result = run_python("print(1)", limits=FAST, python="/nonexistent/python3")
    assert result.exit_code != 0 and not result.ok
    assert result.stderr


@needs_namespaces
def test_the_program_cannot_forge_the_sandbox_report():
    # The init shares the program's uid; were it dumpable, the program could write to its status pipe through
    # /proc/1/fd and claim another exit code, or point the supervisor's sweep at the host's PID namespace.
    host_ns = os.readlink("/proc/self/ns/pid")
    code = (
        "import json, os, sys\nforged = json.dumps({'exit_code': 0, 'ns': HOST_NS}) + '\\n'\nout = []\n"
        "try:\n    fds = os.listdir('/proc/1/fd')\nexcept OSError as exc:\n    fds = []\n    out.append(exc.errno)\n"
        "for fd in fds:\n    try:\n        with open(f'/proc/1/fd/{fd}', 'w') as f:\n            f.write(forged)\n"
        "        out.append('FORGED')\n    except OSError as exc:\n        out.append(exc.errno)\n"
        "print(json.dumps(out))\nsys.exit(7)\n"
    ).replace("HOST_NS", repr(host_ns))
    result = run_python(code, limits=FAST)
    assert result.exit_code == 7, result
    assert "FORGED" not in result.stdout
    assert json.loads(result.stdout) == [errno.EACCES]
    assert sandbox_processes() == []
    assert subprocess.run(["true"]).returncode == 0  # nothing on the host was swept


def test_a_host_out_of_descriptors_is_a_result(monkeypatch):
    # Fault injection: the supervisor cannot create the run's in-memory files or pipes.
    def exhausted(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", exhausted)
    monkeypatch.setattr(tempfile, "mkdtemp", exhausted)
    for isolation in {CAPS.isolation, "process"}:
        result = run_python("print(1)", limits=FAST, isolation=isolation)
        assert result.exit_code is None and not result.ok, result
        assert "could not start" in result.stderr and "Too many open files" in result.stderr
        assert result.limits_enforced  # still says what would have held
