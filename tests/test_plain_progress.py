"""Never silent: off a terminal, eval, runs, engine start-up and the examples print plain progress lines."""

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pacore_graph import VLLMClient, build_pacore_graph, run_graph
from pacore_graph.events import RoundStarted, RunFinished
from pacore_graph.progress import ProgressLines, RunProgress
from pacore_graph.testing import FakeOpenAIServer, FakeReply

REPO = Path(__file__).parent.parent
ENV = {**os.environ, "PACORE_BASE_URL": "", "COLUMNS": "80"}


def pacore(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """`pacore ARGS` in a child process, stdout and stderr piped (neither is a terminal)."""
    command = [sys.executable, "-m", "pacore_graph.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV, **kwargs)


def test_lines_are_labelled_rate_limited_and_the_last_update_is_kept():
    stream = io.StringIO()
    lines = ProgressLines("job", stream=stream, min_interval=60.0)
    lines.line("started")
    for i in range(1, 101):
        lines.update(f"{i}/100 done")  # held back: a line was written less than a minute ago
    lines.line("a step")  # never held back
    lines.update("after the step")
    lines.close()
    assert stream.getvalue().splitlines() == ["[job 0 s] started", "[job 0 s] a step", "[job 0 s] after the step"]


def test_heartbeat_and_phases_speak_only_after_quiet_time():
    stream = io.StringIO()
    lines = ProgressLines(stream=stream, heartbeat=0.05)
    lines.line("waiting")
    lines.heartbeat("too soon")
    time.sleep(0.06)
    lines.heartbeat("still waiting")
    report = lines.phases(every=0.05)
    report("Starting", 0.0)
    report("Starting", 1.0)  # the same phase, too soon: nothing
    time.sleep(0.06)
    report("Starting", 2.0)
    assert stream.getvalue().splitlines() == ["waiting", "still waiting", "Starting…", "Starting: 2 s so far"]


def test_run_progress_writes_a_line_per_round_event():
    stream = io.StringIO()
    progress = RunProgress(ProgressLines(stream=stream), rounds=2)
    progress(RoundStarted(round=1, k=4, prompt_chars=10, max_tokens=512))
    progress(RunFinished(answer="391", finish_reason="stop", usage={"effective_ttc_tokens": 1234}))
    assert stream.getvalue().splitlines() == [
        "round 1/2: K=4, prompt 10 chars, max_tokens 512",
        "done: 1,234 completion tokens in all",
    ]


def test_pacore_eval_prints_progress_lines_to_a_pipe(tmp_path):
    # 6 runs of ~0.8 s: past the 3 s during which a short eval stays quiet.
    def reply(request):
        return FakeReply(content=f"The answer is {request.index}.", completion_tokens=3, delay=0.8)

    with FakeOpenAIServer(reply).in_thread() as server:
        result = pacore(
            "eval", "--dataset", "builtin:arith?n=3", "--graph", "self-consistency:1", "--runs", "2",
            "--no-pool", "--parallel", "1", "--out", str(tmp_path / "out"), "--base-url", server.base_url,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(re.match(r"\[pacore eval \d+ s\] \d/6 runs done", line) for line in lines), lines
    assert lines[-1].split("] ")[1].startswith("6/6 runs done (self-consistency:1 ")
    assert "\x1b[" not in result.stderr and "━" not in result.stderr  # no bar frames, no colours


def test_lines_within_start_after_are_not_written():
    stream = io.StringIO()
    lines = ProgressLines(stream=stream, start_after=60.0)
    lines.line("starting")
    lines.update("1/2 done")
    lines.close()
    assert stream.getvalue() == ""


def test_pacore_run_prints_round_lines_to_a_pipe():
    with FakeOpenAIServer(lambda r: FakeReply(content="<think>w</think>391")).in_thread() as server:
        result = pacore("run", "What is 17 * 23?", "-s", "2", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert "round 1/1: K=2, prompt 16 chars" in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1].startswith("done: ")


def test_an_example_prints_progress_lines_to_a_pipe():
    with FakeOpenAIServer(lambda r: FakeReply(content="<think>carry the 2</think> 391 ")).in_thread() as server:
        result = subprocess.run(
            [sys.executable, str(REPO / "examples" / "pacore_as_subgraph.py")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**ENV, "PACORE_BASE_URL": server.base_url},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "17 * 23 = 391\n"
    lines = result.stderr.splitlines()
    assert any(line.startswith("[pacore ") and "round 1/1: K=2" in line for line in lines)
    assert lines[-1].startswith("[pacore ") and "done: " in lines[-1]


async def test_a_long_round_gets_heartbeat_lines():
    stream = io.StringIO()
    progress = RunProgress(ProgressLines(stream=stream, heartbeat=0.2), tick=0.05)
    slow = FakeReply(content="<think>w</think>391", delay=0.6)
    async with FakeOpenAIServer(lambda r: slow) as server, VLLMClient(server.base_url) as client:
        await run_graph(build_pacore_graph(client, [2]), {"problem": "Q"}, progress=progress)
    lines = stream.getvalue().splitlines()
    assert any(re.fullmatch(r"round 1: 0/2 done, \d+ s so far", line) for line in lines), lines
    assert any(re.fullmatch(r"final synthesis: 0/1 done, \d+ s so far", line) for line in lines), lines
    assert lines[-1].startswith("done: ") and progress._timer is None  # the run's end stopped the heartbeat
