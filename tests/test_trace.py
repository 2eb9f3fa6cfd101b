"""Execution traces: `pacore run --trace` and the Python recorder, checked against what the server saw."""

import json

from typer.testing import CliRunner

from pacore_graph import SamplingParams, Trace, TraceRecorder, build_pacore_graph, record_run
from pacore_graph.cli.main import app
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend
from pacore_graph.trace import REDACTED, redact

KEY = "sk-test-0123456789-very-secret"


def script(request):
    i = request.index
    return FakeReply(
        content=f"<think>work {i}</think>The product is \\boxed{{{391 if i % 3 else 381}}}.",
        reasoning=f"reasoning {i}",
        completion_tokens=10 + i,
    )


def run_with_trace(tmp_path, *extra):
    trace_file = tmp_path / "run.json"
    with FakeOpenAIServer(script, api_key=KEY).in_thread() as server:
        result = CliRunner().invoke(
            app,
            ["run", "What is 17*23?", "-s", "4,2", "--base-url", server.base_url, "--api-key", KEY,
             "--trace", str(trace_file), "--seed", "7", *extra],
            catch_exceptions=False,
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    return result, trace_file, requests


def test_cli_trace_holds_every_request_trajectory_round_and_the_answer(tmp_path):
    result, trace_file, requests = run_with_trace(tmp_path, "--json")
    out = json.loads(result.stdout)  # --json stays exactly one JSON object on stdout
    text = trace_file.read_text()
    data = json.loads(text)
    assert data["format"] == "pacore-trace" and data["version"] == 1
    assert data["graph"]["name"] == "pacore-low"
    assert data["graph"]["spec"]["schedule"] == [4, 2]  # the spec as run, overrides included
    assert KEY not in text and KEY not in result.output

    trace = Trace.read(trace_file)
    assert [(r.round, r.k, r.final, len(r.trajectories)) for r in trace.rounds] == [
        (1, 4, False, 4), (2, 2, False, 2), (3, 1, True, 1),
    ]  # fmt: skip
    assert len(trace.trajectories) == 4 + 2 + 1 == len(requests)
    by_seed = {r.body["seed"]: r for r in requests}
    for trajectory in trace.trajectories:
        request = by_seed[trajectory.params["seed"]]  # seeds are distinct: 7 + i
        reply = script(request)
        assert trajectory.messages == request.messages
        assert trajectory.params["temperature"] == request.body["temperature"]
        assert trajectory.content == reply.content
        assert trajectory.reasoning == reply.reasoning
        assert trajectory.completion_tokens == reply.completion_tokens
        assert trajectory.finish_reason == "stop"
        assert trajectory.answer in ("391", "381")
        assert trajectory.seconds >= 0 and trajectory.started_at >= trace.started_at - 1
    # Each round's compacted messages are exactly the references the next round's requests carried.
    for row, following in zip(trace.rounds, trace.rounds[1:], strict=False):
        assert row.kept == len(row.messages_after_compaction) == 4 // row.round
        prompt = following.trajectories[0].messages[-1]["content"]
        assert all(message in prompt for message in row.messages_after_compaction)
        assert row.next_prompt_chars == len(prompt)
    assert trace.rounds[-1].messages_after_compaction is None
    assert trace.answer == out["answer"] == trace.rounds[-1].trajectories[0].content.split("</think>")[-1]
    assert trace.usage["effective_ttc_tokens"] == out["usage"]["effective_ttc_tokens"]


def test_unwritable_trace_path_is_a_one_line_error(tmp_path):
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", "Q", "-s", "2", "--base-url", server.base_url, "--trace", str(tmp_path / "no" / "t.json")]
        )
    assert result.exit_code == 2
    assert "cannot write the trace" in result.stderr


async def test_python_recorder_and_record_run_agree():
    backend = FunctionBackend(lambda m, p: f"<think>x</think>\\boxed{{{p.seed}}}")
    graph = build_pacore_graph(backend, "3", params=SamplingParams(seed=1))
    trace = await record_run(graph, {"problem": "Q"}, graph_name="mine", spec={"schedule": [3]})
    assert trace.graph.name == "mine" and trace.problem == "Q"
    assert [len(r.trajectories) for r in trace.rounds] == [3, 1]
    assert [t.index for t in trace.rounds[0].trajectories] == [0, 1, 2]  # sorted, whatever the arrival order
    assert trace.answer == "\\boxed{4}"
    assert trace.finished_at is not None and trace.finished_at >= trace.started_at


def test_secrets_are_redacted_by_key_and_by_value():
    value = {
        "params": {"extra": {"api_key": "abc", "Authorization": "Bearer abc", "top_k": 5}},
        "messages": [{"role": "user", "content": f"my key is {KEY}"}],
    }
    cleaned = redact(value, [KEY])
    assert cleaned["params"]["extra"] == {"api_key": REDACTED, "Authorization": REDACTED, "top_k": 5}
    assert cleaned["messages"][0]["content"] == f"my key is {REDACTED}"
    assert value["messages"][0]["content"].endswith(KEY)  # the input is not modified

    recorder = TraceRecorder(spec={"sampling": {"extra": {"api_key": KEY}}}, problem=f"leak {KEY}", secrets=[KEY])
    assert KEY not in recorder.trace().model_dump_json()
