"""`pacore run` on the real engine, as a user runs it: a subprocess, JSON out, and no vLLM left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacore_graph.engine import EngineProcess, default_model_dir

pytestmark = pytest.mark.engine

PROBLEM = "What is 2 + 3? Answer with the number."
SERVER_MARK = "vllm.entrypoints.openai.api_server"


def vllm_servers(cache_dir: str | None = None) -> set[int]:
    """Pids of vLLM API servers; with ``cache_dir``, only those started with that PACORE_CACHE_DIR.

    Matching on the environment tells our engine apart from any other one started meanwhile.
    """
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if SERVER_MARK not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    continue
                if cache_dir and f"PACORE_CACHE_DIR={cache_dir}".encode() not in (entry / "environ").read_bytes():
                    continue
            except OSError:
                continue
            pids.add(int(entry.name))
    return pids


def sigint_default() -> None:
    """Run in the child before exec: a shell's background job starts with SIGINT ignored, and Python then
    never installs its Ctrl-C handler; a user at a terminal has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_gone(pgids: set[int], timeout: float = 30.0) -> set[int]:
    """Wait for the process groups to disappear; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = set(pgids)
    while alive and time.monotonic() < deadline:
        for pgid in list(alive):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                alive.discard(pgid)
        time.sleep(0.2)
    return alive


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """No server configured, no shared engine: `pacore run` must start (and stop) its own engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
    env["PACORE_CACHE_DIR"] = str(tmp_path / "cache")  # no `pacore engine up` state here
    env["PACORE_ENGINE_MODEL_DIR"] = str(default_model_dir())  # reuse the model the session converted
    return env


def pacore(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def check_json_rounds(stdout: str, ks: list[int]) -> dict:
    out = json.loads(stdout)
    assert out["answer"].strip(), "the model produced no answer"
    assert [r["k"] for r in out["rounds"]] == [*ks, 1]
    assert [r["returned"] for r in out["rounds"]] == [*ks, 1]
    assert all(r["completion_tokens"] > 0 and r["prompt_tokens"] > 0 for r in out["rounds"])
    usage = out["usage"]
    assert usage["effective_ttc_tokens"] == sum(r["completion_tokens"] for r in out["rounds"])
    assert usage["prompt_tokens"] == sum(r["prompt_tokens"] for r in out["rounds"])
    return out


def test_pacore_2_on_the_engine_via_base_url(engine: EngineProcess) -> None:
    result = pacore(
        "run",
        PROBLEM,
        "-s",
        "2",
        "--max-tokens",
        "48",
        "--truncated",
        "keep",
        "--seed",
        "1",
        "--json",
        "--base-url",
        engine.base_url,
    )
    assert result.returncode == 0, result.stderr
    out = check_json_rounds(result.stdout, [2])
    # The synthesis prompt holds both explorer conclusions, so it is longer than an explorer's prompt.
    assert out["rounds"][1]["prompt_tokens"] > out["rounds"][0]["prompt_tokens"] / 2


def test_embedded_engine_runs_and_leaves_nothing(engine: EngineProcess, embedded_env: dict[str, str]) -> None:
    result = pacore("run", PROBLEM, "-s", "2", "--max-tokens", "32", "--truncated", "keep", "--json", env=embedded_env)
    assert result.returncode == 0, result.stderr
    check_json_rounds(result.stdout, [2])
    assert "embedded engine ready" in result.stderr
    assert vllm_servers(embedded_env["PACORE_CACHE_DIR"]) == set(), "the embedded engine outlived `pacore run`"


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pacore_graph.cli", "run", PROBLEM, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=sigint_default,
    )


def wait_for_server(cache_dir: str, timeout: float = 120.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ours = vllm_servers(cache_dir)
        if ours:
            return ours
        time.sleep(0.2)
    raise AssertionError("pacore run did not start an engine")


def test_ctrl_c_during_engine_startup(engine: EngineProcess, embedded_env: dict[str, str]) -> None:
    cli = start_cli(embedded_env, "-s", "2")
    try:
        new = wait_for_server(embedded_env["PACORE_CACHE_DIR"])
        time.sleep(2)  # well inside the ~25 s start-up
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 130, stderr
    assert "interrupted during embedded engine start-up" in stderr
    assert "Traceback" not in stderr
    assert wait_gone(new) == set(), "Ctrl-C during start-up left vLLM running"


def test_ctrl_c_during_a_round(engine: EngineProcess, embedded_env: dict[str, str]) -> None:
    cli = start_cli(embedded_env, "-s", "4", "--max-tokens", "4000")
    assert cli.stderr is not None
    try:
        new = wait_for_server(embedded_env["PACORE_CACHE_DIR"])
        deadline = time.monotonic() + 300
        while "embedded engine ready" not in cli.stderr.readline():
            assert time.monotonic() < deadline and cli.poll() is None, "the engine never became ready"
        time.sleep(2)  # the explorers are generating now
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 130, stderr
    assert "interrupted during round 1/1" in stderr  # [4]: one parallel round, then the final synthesis
    assert wait_gone(new) == set(), "Ctrl-C during a round left vLLM running"
