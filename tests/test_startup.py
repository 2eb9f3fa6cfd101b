"""Start-up: the CLI's help and a bare ``import pacore_graph`` load none of the graph machinery.

These check behaviour (which modules a fresh interpreter has loaded), not timings; scripts/startup_time.py
measures the time.
"""

import json
import subprocess
import sys

import pytest

import pacore_graph

#: Packages whose import dominated start-up before the package and the CLI loaded them lazily.
HEAVY = ("langchain_core", "langgraph", "aiohttp", "mcp", "uvicorn")

# Runs the real entry point with the given argv, then reports every loaded module on the last line.
_WRAPPER = """
import json, sys
sys.argv = ["pacore", *json.loads(sys.argv[1])]
from pacore_graph.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run_and_list_modules(code: str, *args: str) -> tuple[str, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    output, _, last = done.stdout.rstrip("\n").rpartition("\n")
    return output, json.loads(last)


def _heavy(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [name for name in modules if name.split(".")[0] in HEAVY]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["eval", "--help"],
        ["serve", "--help"],
        ["mcp", "--help"],
        ["graphs", "--help"],
        ["engine", "--help"],
        ["trace", "--help"],
    ],
    ids=" ".join,
)
def test_cli_help_does_not_import_the_graph_machinery(args):
    output, report = _run_and_list_modules(_WRAPPER, *args)
    assert report["code"] == 0
    assert "Usage" in output
    assert _heavy(report["modules"]) == []


def test_import_pacore_graph_is_lazy_and_names_still_resolve():
    code = """
import json, sys
import pacore_graph
before = sorted(sys.modules)
graph_builder = pacore_graph.build_pacore_graph
from pacore_graph import VLLMClient
print(json.dumps({"before": before, "after": sorted(sys.modules), "builder": graph_builder.__module__}))
"""
    _, report = _run_and_list_modules(code)
    assert _heavy(report["before"]) == []
    assert "langgraph" in report["after"]
    assert report["builder"] == "pacore_graph.graph"


def test_lazy_package_lists_and_rejects_names():
    assert set(pacore_graph.__all__) <= set(dir(pacore_graph))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = pacore_graph.NoSuchName  # type: ignore[attr-defined]
    namespace: dict[str, object] = {}
    exec("from pacore_graph import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(pacore_graph.__all__)
