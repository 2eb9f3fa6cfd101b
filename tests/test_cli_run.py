"""`pacore run` end to end: the real CLI, real HTTP, and the fake OpenAI server."""

import json
import os
import random
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pacore_graph import render_references
from pacore_graph.cli.main import app
from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"
SYSTEM = {"role": "system", "content": "Answer with a number."}


def script(request):
    """Every reply thinks, then concludes; its reasoning also comes in a separate field that must not leak."""
    i = request.index
    return FakeReply(
        content=f"<think>scratch work {i}</think>Conclusion {i}: {'x' * (i % 3)}391",
        reasoning=f"hidden reasoning {i}",
        prompt_tokens=10 + i,
        completion_tokens=20 + i,
    )


def reference_order(conclusions_with_contents):
    """The spec's order: sort by content length (stable), shuffle with Random(42)."""
    ordered = sorted(conclusions_with_contents, key=lambda pair: len(pair[1]))
    random.Random(42).shuffle(ordered)
    return [conclusion for conclusion, _ in ordered]


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args], catch_exceptions=False)


def test_schedule_3_2_request_pattern_answer_and_usage():
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(PROBLEM, "--schedule", "3,2", "--base-url", server.base_url, "--json")
        requests = list(server.requests)
        total = server.total_usage
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)

    assert len(requests) == 6
    for request in requests[:3]:
        assert request.messages == [{"role": "user", "content": PROBLEM}]

    def replies(indices):
        return [(f"Conclusion {i}: {'x' * (i % 3)}391", script(type("R", (), {"index": i})).content) for i in indices]

    round1 = [r for r in requests[:3]]
    expected_round2 = render_references(PROBLEM, reference_order(replies([r.index for r in round1])))
    for request in requests[3:5]:
        assert request.messages == [{"role": "user", "content": expected_round2}]
        assert "<think>" not in request.last_user_content and "scratch work" not in request.last_user_content
        assert "hidden reasoning" not in json.dumps(request.body)
        assert len(re.findall(r"^Reference \d+:$", request.last_user_content, re.M)) == 3
    expected_final = render_references(PROBLEM, reference_order(replies([r.index for r in requests[3:5]])))
    assert requests[5].messages == [{"role": "user", "content": expected_final}]

    assert out["answer"] == "Conclusion 5: xx391"
    assert out["schedule"] == [3, 2]
    assert [(r["k"], r["returned"], r["messages"]) for r in out["rounds"]] == [(3, 3, 3), (2, 2, 2), (1, 1, 1)]
    assert [r["completion_tokens"] for r in out["rounds"]] == [20 + 21 + 22, 23 + 24, 25]
    assert out["usage"]["prompt_tokens"] == total.prompt_tokens == sum(10 + i for i in range(6))
    assert out["usage"]["completion_tokens"] == total.completion_tokens
    assert out["usage"]["effective_ttc_tokens"] == total.completion_tokens == sum(20 + i for i in range(6))


def test_table_output_shows_answer_and_rounds():
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(PROBLEM, "-s", "2", "--base-url", server.base_url)
    assert result.exit_code == 0, result.output
    assert "Conclusion 2: xx391" in result.stdout
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.count("│") > 2]
    assert rows == ["1", "final", "total"]
    assert "effective TTC: 63 completion tokens" in result.stdout


def test_environment_variables_configure_the_server():
    with FakeOpenAIServer(script, model="served").in_thread() as server:
        result = CliRunner().invoke(
            app,
            ["run", PROBLEM, "-s", "1", "--json"],
            env={"PACORE_BASE_URL": server.base_url, "PACORE_MODEL": "chosen-model"},
        )
        models = {r.body["model"] for r in server.requests}
    assert result.exit_code == 0, result.output
    assert models == {"chosen-model"}


def test_problem_from_stdin_and_sampling_flags():
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(
            app,
            [
                "run",
                "-",
                "-s",
                "1",
                "--base-url",
                server.base_url,
                "--max-tokens",
                "99",
                "--temperature",
                "0.3",
                "--seed",
                "5",
            ],
            input=PROBLEM,
        )
        bodies = [r.body for r in server.requests]
    assert result.exit_code == 0, result.output
    assert bodies[0]["messages"][-1]["content"] == PROBLEM
    assert {b["max_tokens"] for b in bodies} == {99}
    assert {b["temperature"] for b in bodies} == {0.3}
    assert [b["seed"] for b in bodies] == [5, 6]


def pacore(*args: str, env: dict | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args],
        capture_output=True,
        env=full_env,
        input=stdin,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", ""], "the problem is empty"),
        (["run", "Q", "--schedule", "0", "--base-url", "http://127.0.0.1:9/v1"], "every K must be at least 1"),
        (["run", "Q", "--schedule", "abc", "--base-url", "http://127.0.0.1:9/v1"], "'abc' is not an integer"),
        (["run", "Q", "--truncated", "maybe", "--base-url", "http://127.0.0.1:9/v1"], "use 'drop' or 'keep'"),
        (["run", "Q", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach the model server"),
        (["run", "Q", "--base-url", "http://127.0.0.1:9/v1"], "run `pacore engine up` for the embedded engine"),
        (["run", "Q", "--base-url", "localhost:8000"], "invalid base URL"),
        (["run", "Q"], "no model server configured and the embedded engine is not installed"),
    ],
)
def test_bad_input_is_one_line_no_traceback_nonzero_exit(args, fragment, python_without_vllm, tmp_path):
    # An empty cache dir: no engine started by `pacore engine up` may be picked up.
    env = {"PACORE_ENGINE_PYTHON": python_without_vllm, "PACORE_CACHE_DIR": str(tmp_path / "cache")}
    result = pacore(*args, env=env)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert fragment in stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.strip().splitlines() if not line.startswith("round ")]  # progress aside
    assert len(errors) == 1, stderr


@pytest.fixture
def python_without_vllm(tmp_path):
    """An interpreter that sees no site-packages, so the embedded engine counts as not installed."""
    wrapper = tmp_path / "python-isolated"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_non_utf8_stdin_is_a_clear_error():
    result = pacore("run", "-", "--base-url", "http://127.0.0.1:9/v1", stdin=b"\xff\xfe bad bytes")
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr.decode()


def test_debug_shows_the_traceback():
    result = pacore("run", "Q", "--schedule", "0", "--base-url", "http://127.0.0.1:9/v1", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr.decode()
