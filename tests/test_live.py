"""The run display: a live view on a terminal, plain lines otherwise, and stdout left to the result."""

import io
import json
import os
import pty
import subprocess
import sys
import threading

from rich.console import Console
from typer.testing import CliRunner

from pacore_graph import SamplingParams, build_pacore_graph, stream_events
from pacore_graph.cli.live import LiveDisplay, PlainDisplay, make_display
from pacore_graph.cli.main import app
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend


def script(request):
    i = request.index
    return FakeReply(content=f"<think>w</think>The answer is \\boxed{{{391 if i % 4 else 381}}}.", completion_tokens=50)


def test_without_a_terminal_progress_is_plain_lines_on_stderr():
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(app, ["run", "Q", "-s", "4,2", "--base-url", server.base_url])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "round 1/2: K=4, prompt 1 chars" in lines
    assert any(line.startswith("round 1/2: 4/4 done, 200 tok, ") and "391×3 · 381×1" in line for line in lines)
    assert any(line.startswith("round 1/2: kept 4 of 4") for line in lines)
    assert any(line.startswith("final synthesis: 1/1 done") for line in lines)
    assert lines[-1] == "done: 350 completion tokens in all"
    assert "\x1b[" not in result.stderr  # no escape codes when nobody is looking
    assert "round 1/2" not in result.stdout  # stdout is the answer and the table only


def test_make_display_picks_by_terminal_and_quiet():
    terminal = Console(file=io.StringIO(), force_terminal=True)
    piped = Console(file=io.StringIO(), force_terminal=False)
    live = make_display(terminal, 1)
    assert isinstance(live, LiveDisplay)
    live.close()
    assert isinstance(make_display(terminal, 1, quiet=True), PlainDisplay)
    assert isinstance(make_display(piped, 1), PlainDisplay)


async def test_live_view_shows_bars_rates_tally_and_the_streamed_synthesis():
    backend = FunctionBackend(lambda m, p: f"<think>x</think>answer \\boxed{{{p.seed % 2}}} ok")
    graph = build_pacore_graph(backend, "4,2", params=SamplingParams(seed=0))
    screen = io.StringIO()
    display = make_display(Console(file=screen, force_terminal=True, width=140, color_system=None), 2)
    async for event in stream_events(graph, {"problem": "Q"}):
        display.handle(event)
    display.close()
    shown = screen.getvalue()
    assert "round 1/2" in shown and "round 2/2" in shown and "4/4" in shown and "2/2" in shown
    assert "tok/s" in shown and "0×2" in shown and "1×2" in shown  # the tally of round 1
    assert "final synthesis" in shown and "answer \\boxed{0} ok" in shown  # the synthesis has seed 6


def test_json_stays_one_object_on_stdout_while_the_live_view_draws_on_a_terminal():
    """A real process whose stderr is a terminal (a pty) and whose stdout is a pipe."""
    with FakeOpenAIServer(script).in_thread() as server:
        leader, follower = pty.openpty()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pacore_graph.cli",
                "run",
                "Q",
                "-s",
                "4,2",
                "--base-url",
                server.base_url,
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={k: v for k, v in os.environ.items() if not k.startswith("PACORE_")} | {"TERM": "xterm-256color"},
        )
        os.close(follower)
        chunks = []

        def drain():  # a full pty buffer would block the process
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        stdout, _ = process.communicate(timeout=60)
        reader.join(timeout=10)
        os.close(leader)
    assert process.returncode == 0
    out = json.loads(stdout)  # the whole of stdout is one JSON object
    assert out["schedule"] == [4, 2]
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in terminal  # the live view really drew, with escape codes
    assert "round 1/2" in terminal and "final synthesis" in terminal
