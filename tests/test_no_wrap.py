"""No hard wrapping off a terminal: the answer on stdout is byte-exact, lines are never split, help fits 80 columns."""

import json
import os
import subprocess
import sys

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply

ENV = {**os.environ, "PACORE_BASE_URL": "", "COLUMNS": "80"}
#: One long line with what rich would touch: markup, an emoji code, a tab, a path and a command.
ANSWER = (
    "The answer is 391, because 17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391 [bold]not bold[/bold] :smile:\t"
    "see /a/very/long/path/that/must/not/be/split/across/lines/at/eighty/columns/result.txt and run "
    "`pacore run 'What is 17 * 23?' --schedule 4,2 --trace run.json` to check it again."
)


def pacore(*args: str) -> subprocess.CompletedProcess[str]:
    """`pacore ARGS` in a child process with stdout and stderr piped."""
    command = [sys.executable, "-m", "pacore_graph.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)


def test_the_answer_on_stdout_is_the_traces_answer_byte_for_byte(tmp_path):
    trace = tmp_path / "run.json"
    with FakeOpenAIServer(lambda r: FakeReply(content=f"<think>w</think>{ANSWER}")).in_thread() as server:
        result = pacore("run", "Q", "-s", "2", "--base-url", server.base_url, "--trace", str(trace))
    assert result.returncode == 0, result.stderr
    recorded = json.loads(trace.read_text())["answer"]
    assert recorded == ANSWER
    assert result.stdout.startswith(recorded + "\n\n")  # then the blank line and the round table


def test_json_on_a_pipe_is_plain_json_with_the_whole_answer():
    with FakeOpenAIServer(lambda r: FakeReply(content=f"<think>w</think>{ANSWER}")).in_thread() as server:
        result = pacore("run", "Q", "-s", "2", "--base-url", server.base_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == ANSWER
    assert "\x1b[" not in result.stdout


def test_an_error_naming_a_long_path_stays_on_one_line(tmp_path):
    path = tmp_path / ("a-directory-with-a-rather-long-name-" * 3) / "run.json"
    with FakeOpenAIServer(lambda r: FakeReply(content="<think>w</think>391")).in_thread() as server:
        result = pacore("run", "Q", "-s", "2", "--base-url", server.base_url, "--trace", str(path))
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(path) in error[0]


COMMANDS = [
    [], ["run"], ["eval"], ["serve"], ["mcp"], ["engine"], ["engine", "up"], ["engine", "install"],
    ["graphs"], ["graphs", "list"], ["graphs", "draw"], ["trace"], ["trace", "view"], ["trace", "plot"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pacore")
def test_help_on_a_pipe_fits_80_columns_and_cuts_nothing(command):
    result = pacore(*command, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, "no help"
    assert [line for line in lines if len(line) > 80 or "…" in line] == []
    if command == ["run"]:
        assert "http://127.0.0.1:8000/v1." in result.stdout  # whole, not "http://127.0.0.1:8…"
