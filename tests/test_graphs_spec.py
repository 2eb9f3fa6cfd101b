"""User-written graph specs: they run with no code change, and malformed ones fail with one precise line."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pacore_graph import ConfigError
from pacore_graph.cli.main import app
from pacore_graph.graphs import GraphSpecError, dump_spec, load_spec, parse_spec_text
from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"


def script(request):
    return FakeReply(content=f"<think>scratch {request.index}</think>Conclusion {request.index}")


def pacore(*args: str) -> subprocess.CompletedProcess:
    """The installed CLI in a fresh process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
    return subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args], capture_output=True, env=env, timeout=60, text=True
    )


def write(tmp_path, text, name="my-graph.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_user_spec_with_schedule_3_2_runs_with_no_code_change(tmp_path):
    path = write(
        tmp_path,
        """\
        # Two parallel rounds, a cooler synthesis, a capped second round.
        type: pacore
        schedule: [3, 2]
        sampling: {temperature: 0.9, max_tokens: 500}
        round_sampling:
          2: {max_tokens: 300}
        synthesis_sampling: {temperature: 0.2}
        """,
    )
    with FakeOpenAIServer(script).in_thread() as server:
        # A subprocess, so nothing of the test process (imports, registries) helps the spec along.
        result = pacore("run", PROBLEM, "--graph", str(path), "--base-url", server.base_url, "--json")
        bodies = [r.body for r in server.requests]
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(bodies) == 6
    assert out["schedule"] == [3, 2]
    assert [row["k"] for row in out["rounds"]] == [3, 2, 1]
    assert out["answer"] == "Conclusion 5"
    assert [(b["temperature"], b.get("max_tokens")) for b in bodies] == [(0.9, 500)] * 3 + [(0.9, 300)] * 2 + [
        (0.2, 500)
    ]


def test_cli_flags_override_the_spec_in_every_round(tmp_path):
    path = write(tmp_path, "type: pacore\nschedule: [2]\nsynthesis_sampling: {temperature: 0.2}\n")
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(
            app,
            ["run", PROBLEM, "-g", str(path), "--base-url", server.base_url, "--temperature", "0.5", "-s", "3"],
            catch_exceptions=False,
        )
        bodies = [r.body for r in server.requests]
    assert result.exit_code == 0, result.output
    assert [b["temperature"] for b in bodies] == [0.5] * 4


def test_a_custom_template_is_used(tmp_path):
    path = write(
        tmp_path,
        """\
        type: pacore
        schedule: [2]
        prompt:
          template: |-
            Q: {{ original_prompt }}
            {% for r in ref_responses %}- {{ r }}
            {% endfor %}Answer it.
        """,
    )
    with FakeOpenAIServer(script).in_thread() as server:
        result = pacore("run", PROBLEM, "--graph", str(path), "--base-url", server.base_url, "--json")
        final = server.requests[-1].last_user_content
    assert result.returncode == 0, result.stderr
    assert final.startswith(f"Q: {PROBLEM}\n- Conclusion ")
    assert final.endswith("Answer it.")


@pytest.mark.parametrize(
    "name", ["pacore-low", "pacore-medium", "pacore-high", "self-consistency", "sequential", "pacore-no-compaction"]
)
def test_show_prints_the_resolved_spec_which_reloads_to_the_same_spec(name, tmp_path):
    result = CliRunner().invoke(app, ["graphs", "show", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["name"] == name
    assert set(data) >= {"type", "schedule", "sampling", "prompt", "compaction", "max_prompt_chars"}
    copy = write(tmp_path, result.stdout, name="copy.yaml")
    assert load_spec(copy) == load_spec(name)
    assert dump_spec(load_spec(copy)) == result.stdout


def test_show_has_layers_merged():
    spec = parse_spec_text(
        "name: x\ntype: pacore\nschedule: [2]\nsampling: {temperature: 0.7, seed: 9}\nsynthesis_sampling: {top_p: 0.5}",
        source="inline",
    )
    shown = yaml.safe_load(dump_spec(spec))
    assert shown["synthesis_sampling"]["temperature"] == 0.7
    assert shown["synthesis_sampling"]["seed"] == 9
    assert shown["synthesis_sampling"]["top_p"] == 0.5
    assert shown["schedule"] == [2]


# Each: the spec text, then fragments of the one-line error (the file name is checked for every case).
MALFORMED = {
    "unknown-key": (
        "type: pacore\nschedule: [4]\nschedul: [4]\n",
        ["schedul: unknown field; allowed: name, description, type, schedule, sampling, round_sampling"],
    ),
    "k-zero": ("type: pacore\nschedule: [4, 0]\n", ["schedule: invalid schedule [4, 0]: every K must be at least 1"]),
    "unknown-type": (
        "type: tree-of-thought\nschedule: [4]\n",
        ["type: unknown graph type 'tree-of-thought'; allowed: code-verified, pacore, self-consistency, sequential"],
    ),
    "yaml-syntax": ("type: pacore\nschedule: [4\n", [":3:1: invalid YAML: expected ',' or ']'"]),
    "wrong-type": (
        "type: pacore\nschedule: [4]\nsampling: {temperature: hot}\n",
        ["sampling.temperature: Input should be a valid number", "(got 'hot')"],
    ),
    "nested-unknown-key": (
        "type: pacore\nschedule: [4]\ncompaction: {keep: conclusion, trunc: drop}\n",
        ["compaction.trunc: unknown field; allowed: keep, truncated, order_seed"],
    ),
    "bad-choice": (
        "type: pacore\nschedule: [4]\ncompaction: {keep: partial}\n",
        ["compaction.keep: Input should be 'conclusion' or 'full' (got 'partial')"],
    ),
    "missing-type": (
        "schedule: [4]\n",
        ["type: required field is missing; one of: code-verified, pacore, self-consistency, sequential"],
    ),
    "not-a-mapping": ("- pacore\n- [4]\n", ["a graph spec must be a mapping of fields (name, type, schedule, ...)"]),
    "duplicate-key": ("type: pacore\nschedule: [4]\nschedule: [8]\n", ["duplicate key 'schedule'"]),
    "round-out-of-range": (
        "type: pacore\nschedule: [4]\nround_sampling: {2: {temperature: 0.5}}\n",
        ["round_sampling: round(s) [2] are not parallel rounds of schedule '4' (1..1)"],
    ),
    "negative-budget": (
        "type: pacore\nschedule: [4]\nmax_prompt_chars: -5\n",
        ["max_prompt_chars: Input should be greater than 0 (got -5)"],
    ),
    "template-without-references": (
        "type: pacore\nschedule: [4]\nprompt: {template: 'Solve {{ original_prompt }}'}\n",
        ["prompt.template: the template never uses ref_responses"],
    ),
    "bad-regex": (
        "type: self-consistency\nschedule: [4]\nanswer: {fallback: ['answer is (']}\n",
        ["answer.fallback: fallback pattern 'answer is (' is not a valid regular expression"],
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_specs_fail_with_one_precise_line_from_the_cli(case, tmp_path):
    text, fragments = MALFORMED[case]
    path = write(tmp_path, text, name=f"{case}.yaml")
    result = pacore("run", PROBLEM, "--graph", str(path), "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_show_reports_bad_specs_the_same_way(tmp_path):
    path = write(tmp_path, MALFORMED["k-zero"][0], name="k-zero.yaml")
    result = pacore("graphs", "show", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {path}: schedule: invalid schedule [4, 0]: every K must be at least 1, got 0; use a "
        "comma-separated list of positive integers such as '32,4', a list such as [32, 4], or a preset: "
        "'low'=[4], 'medium'=[16], 'high'=[32, 4]"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["run", PROBLEM, "--graph", "nope", "--base-url", "http://127.0.0.1:9/v1"],
            "unknown graph 'nope'; available:",
        ),
        (["run", PROBLEM, "--graph", "missing.yaml", "--base-url", "http://127.0.0.1:9/v1"], "no such graph spec file"),
        (["graphs", "show", "nope"], "or give a path to a .yaml spec"),
        (["run", PROBLEM, "--graph", "pacore-high", "--max-k", "8", "--base-url", "x"], "more than the limit of 8"),
    ],
)
def test_unknown_graphs_and_limits(args, fragment):
    result = pacore(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_empty_file_and_a_missing_file(tmp_path):
    empty = write(tmp_path, "", name="empty.yaml")
    with pytest.raises(GraphSpecError, match="got an empty file"):
        load_spec(empty)
    with pytest.raises(ConfigError, match="no such graph spec file"):
        load_spec(tmp_path / "absent.yaml")


def test_the_name_defaults_to_the_file_name(tmp_path):
    assert load_spec(write(tmp_path, "type: pacore\nschedule: 3,2\n", name="deep-think.yaml")).name == "deep-think"


def test_the_readme_spec_example_is_valid():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_spec_text(example, source="README.md")
    assert list(spec.schedule.rounds) == [3, 2]
    assert spec.to_config().params_for_round(2).max_tokens == 4096
    assert spec.to_config().final_params.temperature == 0.6


def test_the_core_imports_no_graph():
    code = "import sys, pacore_graph; print([m for m in sys.modules if m.startswith('pacore_graph.graphs')])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_graphs_exports_are_sorted_and_documented():
    import pacore_graph.graphs as graphs

    def isort_style(name):
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert graphs.__all__ == sorted(graphs.__all__, key=isort_style)
    for name in graphs.__all__:
        assert getattr(graphs, name).__doc__ or name.isupper(), name
