"""`pacore eval` on reasoning-gym with the real engine: graded by the task's verifier, with synthesis diagnostics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.engine import EngineProcess

pytestmark = pytest.mark.engine


def test_eval_reasoning_gym_on_the_engine(engine: EngineProcess, tmp_path) -> None:
    out = tmp_path / "rg"
    args = [
        "eval", "--dataset", "reasoning-gym:basic_arithmetic?size=3&seed=3", "--graph", "pacore-low:2",
        "--graph", "self-consistency:2", "--runs", "1", "--max-tokens", "64", "--truncated", "keep",
        "--out", str(out), "--base-url", engine.base_url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = {m["graph"]: m for m in json.loads((out / "metrics.json").read_text())}
    assert metrics["pacore-low:2"]["problems"] == 3
    synthesis = metrics["pacore-low:2"]["synthesis"]
    assert synthesis is not None and 1 <= synthesis["syntheses"] <= 3 and synthesis["references"] <= 6
    assert metrics["self-consistency:2"]["synthesis"] is None
    assert "Synthesis diagnostics" in (out / "report.md").read_text()
    assert json.loads((out / "sc_curve.json").read_text())[0]["k"] == 1
