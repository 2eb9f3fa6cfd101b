"""Adversarial tests: the sandbox contains hostile programs, classifies how they ended, and leaves nothing behind.

Every test ends by scanning /proc for processes of the sandbox uid (nobody) and of the run's PID namespace:
none may be left. Tests never send traffic anywhere but 127.0.0.1 (pytest-socket enforces it in-process).
"""

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pacore_graph.tools.sandbox import (
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


def sandbox_processes() -> list[int]:
    """Live (non-zombie) processes of the sandbox uid."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _uid_of(entry) == NOBODY:
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(int(entry))
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
