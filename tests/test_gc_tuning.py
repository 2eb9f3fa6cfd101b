"""The collector's tuning: the ``pacore`` process's commands tune it; a Typer app called in-process does not.

Real CLI, real HTTP (a fake OpenAI server); the process test reads the collector's settings from inside a real
``pacore`` process, at its exit, through a ``sitecustomize`` on its path.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.cli.process import OWN_PROCESS
from pacore_graph.gc_tuning import YOUNG_THRESHOLD
from pacore_graph.testing import FakeOpenAIServer, FakeReply

RUN = ["run", "What is 17 * 23?", "-s", "2", "--json"]


def reply(request) -> FakeReply:
    return FakeReply(content="<think>17 * 23</think>391")


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the test process's collector back as it was, whatever the test did to it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_cli_runner_leaves_the_collector_as_it_is(collector):
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    with FakeOpenAIServer(reply).in_thread() as server:
        result = CliRunner().invoke(app, [*RUN, "--base-url", server.base_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "391"
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)


def test_a_command_of_the_pacore_process_freezes_the_imports_and_raises_the_young_threshold(collector):
    assert gc.get_threshold()[0] < YOUNG_THRESHOLD  # CPython's default, 700
    with FakeOpenAIServer(reply).in_thread() as server:
        result = CliRunner().invoke(app, [*RUN, "--base-url", server.base_url], obj=OWN_PROCESS, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 10_000  # the libraries' objects, LangGraph's and aiohttp's among them


def test_the_pacore_script_runs_its_commands_with_the_tuned_collector(tmp_path: Path):
    probe = tmp_path / "probe"
    probe.mkdir()
    report = tmp_path / "gc.json"
    (probe / "sitecustomize.py").write_text(
        "import atexit, gc, json, os\n"
        "atexit.register(lambda: open(os.environ['GC_REPORT'], 'w').write(json.dumps(\n"
        "    {'threshold': gc.get_threshold()[0], 'frozen': gc.get_freeze_count()})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(probe), "GC_REPORT": str(report)}
    with FakeOpenAIServer(reply).in_thread() as server:
        done = subprocess.run(
            [sys.executable, "-m", "pacore_graph.cli", *RUN, "--base-url", server.base_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    seen = json.loads(report.read_text())
    assert seen["threshold"] == YOUNG_THRESHOLD
    assert seen["frozen"] > 10_000
