"""Graphs from other installed packages, found through the `pacore_graph.graphs` entry point group.

The fixture package tests/fixtures/pacore-demo-graphs is "installed" by putting its folder on the path: beside
the package sits the dist-info folder `pip install` would write, so importlib.metadata discovers its entry
points through the real mechanism, in a fresh process.
"""

import configparser
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend

FIXTURE = Path(__file__).parent / "fixtures" / "pacore-demo-graphs"
PRESETS = [
    "pacore-low",
    "pacore-medium",
    "pacore-high",
    "self-consistency",
    "sequential",
    "pacore-no-compaction",
    "pacore-code-verified",
]


def pacore(*args: str, with_plugin: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_") and k != "PYTHONPATH"}
    if with_plugin:
        env["PYTHONPATH"] = str(FIXTURE)
    env["COLUMNS"] = "200"  # keep table rows on one line
    return subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args], capture_output=True, env=env, timeout=60, text=True
    )


def test_the_fixture_dist_info_matches_its_pyproject():
    declared = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]["entry-points"]
    installed = configparser.ConfigParser(delimiters=("=",))
    installed.optionxform = str  # entry point names are case-sensitive
    installed.read(FIXTURE / "pacore_demo_graphs-0.1.0.dist-info" / "entry_points.txt")
    assert {group: dict(installed[group]) for group in installed.sections()} == declared


def rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.strip() and not line.lstrip().startswith("─")}


def test_graphs_list_shows_presets_and_registered_specs():
    result = pacore("graphs", "list")
    assert result.returncode == 0, result.stderr
    listed = rows(result.stdout)
    schedules = {"pacore-low": "[4]", "pacore-medium": "[16]", "pacore-high": "[32, 4]", "self-consistency": "[16]"}
    for name in PRESETS:
        assert "(from " not in listed[name], "built-in specs name no package"
        assert schedules.get(name, "[") in listed[name]
    assert "first-of-k" in listed["demo-first"] and "[3]" in listed["demo-first"]
    assert "pacore" in listed["demo-wide"] and "[6]" in listed["demo-wide"]
    assert "(from pacore-demo-graphs 0.1.0)" in listed["demo-wide"]
    # A broken plugin is reported on its own row; the other graphs still list.
    assert "error:" in listed["demo-broken"] and "NOT_DEFINED" in listed["demo-broken"]


def test_without_the_package_its_graphs_are_not_listed():
    result = pacore("graphs", "list", with_plugin=False)
    assert result.returncode == 0, result.stderr
    listed = rows(result.stdout)
    assert set(PRESETS) <= set(listed)
    assert not {"demo-wide", "demo-first", "demo-broken"} & set(listed)


def test_a_registered_spec_runs_and_shows():
    with FakeOpenAIServer(lambda r: FakeReply(content=f"idea {r.index}")).in_thread() as server:
        result = pacore("run", "Q?", "--graph", "demo-wide", "--base-url", server.base_url, "--json")
        bodies = [r.body for r in server.requests]
    assert result.returncode == 0, result.stderr
    assert len(bodies) == 7
    assert [b["temperature"] for b in bodies] == [1.0] * 6 + [0.3]
    assert json.loads(result.stdout)["answer"] == "idea 6"

    shown = pacore("graphs", "show", "demo-wide")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("name: demo-wide\n")


def test_a_registered_graph_type_builds_from_core_parts():
    def by_seed(request):
        return FakeReply(content=f"<think>t</think>sample with seed {request.body['seed']}")

    with FakeOpenAIServer(by_seed).in_thread() as server:
        result = pacore("run", "Q?", "--graph", "demo-first", "--seed", "10", "--base-url", server.base_url, "--json")
        seeds = sorted(r.body["seed"] for r in server.requests)
    assert result.returncode == 0, result.stderr
    assert seeds == [10, 11, 12], "three samples and nothing else"
    assert json.loads(result.stdout)["answer"] == "sample with seed 10", "the first trajectory (index 0) wins"


def test_a_broken_registered_spec_fails_in_one_line():
    result = pacore("run", "Q?", "--graph", "demo-broken", "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: graph 'demo-broken' cannot be loaded: entry point 'demo-broken'")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def demo_installed(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURE))
    yield
    for name in [m for m in sys.modules if m.startswith("pacore_demo_graphs")]:
        del sys.modules[name]


async def test_load_graph_finds_registered_graphs_in_process(demo_installed):
    from pacore_graph.graphs import discover_graphs, graph_types, load_graph

    assert "first-of-k" in graph_types()
    names = [entry.name for entry in discover_graphs()]
    assert names[: len(PRESETS)] == sorted(PRESETS), "built-in specs come first"
    assert names[len(PRESETS) :] == ["demo-broken", "demo-first", "demo-wide"]

    backend = FunctionBackend(lambda messages, params: "<think>x</think>fine")
    state = await load_graph("demo-wide", backend, schedule="2").ainvoke({"problem": "Q?"})
    assert state["answer"] == "fine"
    assert [c.params.temperature for c in backend.calls] == [1.0, 1.0, 0.3]


def test_a_misspelt_graph_name_gets_a_did_you_mean():
    from pacore_graph.graphs import GraphSpecError
    from pacore_graph.graphs.registry import resolve_spec

    with pytest.raises(GraphSpecError, match=r"available: .*; did you mean pacore-high\?$"):
        resolve_spec("pacore-hihg")
    with pytest.raises(GraphSpecError) as caught:
        resolve_spec("nope")
    assert "did you mean" not in str(caught.value)


def test_the_cli_suggests_the_graph_name_too():
    from typer.testing import CliRunner

    from pacore_graph.cli.main import app

    result = CliRunner().invoke(app, ["graphs", "show", "self-consistensy"])
    assert result.exit_code == 2
    assert "did you mean self-consistency?" in result.output
