"""`pacore eval` on the real engine: the built-in dataset, two graphs, the table, the plot and the pool."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.engine import EngineProcess

pytestmark = pytest.mark.engine


def test_eval_builtin_arith_on_the_engine(engine: EngineProcess, tmp_path) -> None:
    out = tmp_path / "eval"
    args = [
        "eval", "--dataset", "builtin:arith?n=4", "--graph", "pacore-low:2", "--graph", "self-consistency:3",
        "--runs", "2", "--max-tokens", "32", "--truncated", "keep", "--out", str(out),
        "--base-url", engine.base_url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| pacore-low:2 | [2] | 4 × 2 |" in result.stdout
    assert "| self-consistency:3 | [3] | 4 × 2 |" in result.stdout
    metrics = {m["graph"]: m for m in json.loads((out / "metrics.json").read_text())}
    for m in metrics.values():
        assert 0.0 <= m["mean_accuracy"] <= 1.0
        assert m["mean_ttc_tokens"] > 0
    # Round 1 draws 2 + 3 per run from a 6-slot pool per problem, so at least some were reused.
    assert sum(m["pool_served"] for m in metrics.values()) == 4 * 2 * (2 + 3)
    assert sum(m["pool_generated"] for m in metrics.values()) <= 4 * 6
    assert (out / "accuracy_vs_ttc.png").read_bytes().startswith(b"\x89PNG")
    assert len((out / "results.jsonl").read_text().splitlines()) == 4 * 2 * 2
