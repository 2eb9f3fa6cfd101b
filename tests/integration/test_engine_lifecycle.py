"""The engine never outlives its owner: Ctrl-C during start-up, a killed parent, `pacore engine down`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.engine import engine_app
from pacore_graph.engine import EngineProcess, default_model_dir, find_running_engine, stop_persistent_engine

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]

# Starts the engine the way a user would and prints the server's pid as soon as it is spawned.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pacore_graph.engine import LocalEngine, start_engine

    def on_spawn(proc):
        print(f"PID {proc.pid}", flush=True)

    if sys.argv[1] == "async":
        async def main():
            async with LocalEngine(on_spawn=on_spawn):
                print("READY", flush=True)
                await asyncio.sleep(3600)
        asyncio.run(main())
    else:
        proc = start_engine(on_spawn=on_spawn)
        print("READY", flush=True)
        time.sleep(3600)
    """
)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group_gone(pgid):
            return True
        time.sleep(0.2)
    return group_gone(pgid)


def start_script(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "start_engine.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # A shell's background job starts with SIGINT ignored; reset it so Ctrl-C behaves as at a terminal.
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the model is already converted (engine fixture), so this is quick
    assert line.startswith("PID "), f"script said {line!r}"
    return proc, int(line.split()[1])


def read_until_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"


def cleanup(proc: subprocess.Popen[str], pgid: int) -> None:
    # Safety net so a failing test does not leave 4 GB of vLLM behind for the rest of the session.
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    if not group_gone(pgid):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_ctrl_c_during_startup_leaves_no_process(engine: EngineProcess, tmp_path: Path, mode: str) -> None:
    proc, pgid = start_script(tmp_path, mode)
    try:
        time.sleep(4)  # vLLM is importing torch / loading the model now
        assert not group_gone(pgid), "the engine should still be starting"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode != 0
        assert group_gone(pgid), "vLLM processes survived Ctrl-C"
    finally:
        cleanup(proc, pgid)


def test_killed_parent_takes_the_engine_down(engine: EngineProcess, tmp_path: Path) -> None:
    # SIGKILL gives the parent no chance to clean up: PR_SET_PDEATHSIG must do it.
    proc, pgid = start_script(tmp_path, "async")
    try:
        read_until_ready(proc)
        proc.kill()
        proc.wait(timeout=10)
        assert wait_group_gone(pgid, 30), "vLLM processes survived their parent's SIGKILL"
    finally:
        cleanup(proc, pgid)


def test_persistent_engine_up_status_down(
    engine: EngineProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = default_model_dir()  # reuse the converted model; keep state and logs in tmp
    monkeypatch.setenv("PACORE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PACORE_ENGINE_MODEL_DIR", str(model_dir))
    runner = CliRunner()
    try:
        result = runner.invoke(engine_app, ["status"])
        assert result.exit_code == 1 and "not running" in result.output

        result = runner.invoke(engine_app, ["up"])
        assert result.exit_code == 0, result.output
        assert "engine up" in result.output

        running = find_running_engine()
        assert running is not None and running.model == "smollm2"
        with urllib.request.urlopen(f"{running.base_url}/models", timeout=10) as resp:
            assert resp.status == 200

        result = runner.invoke(engine_app, ["status"])
        assert result.exit_code == 0 and "running" in result.output and running.base_url in result.output

        result = runner.invoke(engine_app, ["up"])
        assert result.exit_code == 0 and "already up" in result.output

        result = runner.invoke(engine_app, ["down"])
        assert result.exit_code == 0 and "engine stopped" in result.output
        assert wait_group_gone(running.pid, 5)
        assert find_running_engine() is None

        result = runner.invoke(engine_app, ["status"])
        assert result.exit_code == 1
    finally:
        stop_persistent_engine()
