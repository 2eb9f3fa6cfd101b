"""A hostile upstream, and the partial-failure policy: real HTTP against the fake server, bounded in time.

The matrix runs a whole PaCoRe graph (schedule [2]: two explorers as JSON requests, then a streamed synthesis)
through ``VLLMClient``. Each fault either recovers (the right answer comes out) or fails with a precise error;
none may hang (each case is bounded) or produce a silently wrong answer.
"""

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from pacore_graph import (
    ConnectError,
    EmptyRoundError,
    FailurePolicy,
    PaCoReConfig,
    ProtocolError,
    Schedule,
    UpstreamError,
    UpstreamTimeoutError,
    VLLMClient,
    build_pacore_graph,
)
from pacore_graph.cli.main import app
from pacore_graph.clients.vllm import MAX_SSE_LINE_BYTES
from pacore_graph.events import TrajectoryFinished, parse_event
from pacore_graph.testing import FakeOpenAIServer, FakeReply, Fault

CASE_SECONDS = 10  # no case may take longer: a hang is a failure
ANSWER = "final answer 391"
# Characters of one huge explorer reply. Both go into the synthesis request, kept under 1 MiB: above that aiohttp
# warns (ResourceWarning) that a raw-bytes body may block the event loop.
HUGE = 400_000
BIG_STREAM = " ".join(["word"] * 50_000)  # a synthesis streamed as 50,000 chunks


def hostile(fault_reply: FakeReply, *, target: str, scope: str):
    """A script: requests of ``target`` ("explore": JSON, "synth": the stream) get ``fault_reply``, on the
    first such request only (``scope="first"``) or on all of them (``"all"``); everything else is healthy."""
    hits = {"count": 0}

    def script(request):
        kind = "synth" if request.stream else "explore"
        healthy = FakeReply(content=ANSWER if request.stream else f"<think>w</think>conclusion {request.index}")
        if kind != target:
            return healthy
        hits["count"] += 1
        if scope == "first" and hits["count"] > 1:
            return healthy
        return fault_reply

    return script


def failing(fault: Fault) -> FakeReply:
    return FakeReply(content=ANSWER, fault=fault)  # the content matters for faults that still answer


# id, reply, target, scope, expected: ("answer", text) or (exception type, message fragment)
MATRIX = [
    ("500-once", failing(Fault.http_error(500)), "explore", "first", ("answer", ANSWER)),
    ("500-always", failing(Fault.http_error(500)), "explore", "all", (UpstreamError, "answered HTTP 500")),
    ("429-retry-after", failing(Fault.rate_limited(retry_after=0.3)), "explore", "first", ("answer", ANSWER)),
    ("429-always", failing(Fault.rate_limited(retry_after=0.01)), "explore", "all", (UpstreamError, "HTTP 429")),
    ("reset-once", failing(Fault.reset()), "explore", "first", ("answer", ANSWER)),
    ("reset-always", failing(Fault.reset()), "explore", "all", (ConnectError, "cannot reach the model server")),
    ("timeout", FakeReply(delay=5.0), "explore", "all", (UpstreamTimeoutError, "did not answer in time")),
    ("malformed-json", failing(Fault.malformed_json()), "explore", "first", (ProtocolError, "is not JSON")),
    ("html-502-once", failing(Fault.html_error(502)), "explore", "first", ("answer", ANSWER)),
    ("html-502-always", failing(Fault.html_error(502)), "explore", "all", (UpstreamError, "HTTP 502: <html>")),
    ("html-404", failing(Fault.html_error(404)), "explore", "first", (UpstreamError, "HTTP 404")),
    ("no-choices", failing(Fault.no_choices()), "explore", "first", (ProtocolError, "the server returned 0")),
    ("content-null", FakeReply(content=None), "explore", "all", (EmptyRoundError, "2 empty")),
    ("json-body-cut", failing(Fault.truncated_stream()), "explore", "first", ("answer", ANSWER)),
    ("stream-cut", failing(Fault.truncated_stream(2)), "synth", "first", (ProtocolError, "ended before [DONE]")),
    (
        "stream-cut-abort",
        failing(Fault.truncated_stream(2, abort=True)),
        "synth",
        "first",
        (ProtocolError, "was cut off"),
    ),
    ("stream-no-choices", failing(Fault.no_choices()), "synth", "first", (ProtocolError, "without any choice")),
    ("stream-malformed", failing(Fault.malformed_json()), "synth", "first", (ProtocolError, "not JSON")),
    ("slow-drip-ok", failing(Fault.slow_drip(0.02)), "synth", "first", ("answer", ANSWER)),
    ("slow-drip-stall", failing(Fault.slow_drip(1.0)), "synth", "first", (UpstreamTimeoutError, "stalled")),
    ("stream-500", failing(Fault.http_error(500)), "synth", "first", ("answer", ANSWER)),
    ("huge", FakeReply(content="<think>t</think>" + "9" * HUGE), "explore", "all", ("answer", ANSWER)),
    ("huge-stream", FakeReply(content=BIG_STREAM), "synth", "first", ("answer", BIG_STREAM)),
    # One event over the client's line limit (MiB-sized events are read: tests/test_server_guard.py).
    (
        "huge-stream-line",
        FakeReply(content="7" * (MAX_SSE_LINE_BYTES + 1)),
        "synth",
        "first",
        (ProtocolError, "unreadable event"),
    ),
]


@pytest.mark.parametrize(("reply", "target", "scope", "expected"), [c[1:] for c in MATRIX], ids=[c[0] for c in MATRIX])
async def test_hostile_upstream_recovers_or_fails_precisely(reply, target, scope, expected):
    async with FakeOpenAIServer(hostile(reply, target=target, scope=scope)) as server:
        client = VLLMClient(server.base_url, max_retries=2, backoff_base=0.01, backoff_max=0.5, read_timeout=0.4)
        async with client:
            graph = build_pacore_graph(client, "2")
            started = time.monotonic()
            async with asyncio.timeout(CASE_SECONDS):
                if expected[0] == "answer":
                    output = await graph.ainvoke({"problem": "What is 17 * 23?"})
                    assert output["answer"] == expected[1]
                    assert [r["returned"] for r in output["usage"]["rounds"]] == [2, 1]
                else:
                    error_type, fragment = expected
                    with pytest.raises(error_type) as caught:
                        await graph.ainvoke({"problem": "What is 17 * 23?"})
                    assert fragment in str(caught.value)
            elapsed = time.monotonic() - started
        if (
            reply.fault is not None
            and reply.fault.kind == "http_error"
            and reply.fault.status == 429
            and scope == "first"
        ):
            assert elapsed >= 0.3  # Retry-After was honoured
        if expected[0] == "answer" and reply.content and len(reply.content) > HUGE:
            synthesis = server.requests[-1].last_user_content
            assert synthesis.count("9" * HUGE) == 2  # both huge conclusions reached the synthesis whole


# -- the partial-failure policy -------------------------------------------------------------------------------


def seeded_failures(failing_seeds: set[int]):
    """Explorers whose seed is in ``failing_seeds`` get a 400 (not retried); the rest answer."""

    def script(request):
        if request.body.get("seed") in failing_seeds:
            return FakeReply(fault=Fault.http_error(400, f"bad luck for seed {request.body['seed']}"))
        return FakeReply(content=f"<think>w</think>conclusion {request.body.get('seed')}")

    return script


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args], catch_exceptions=False)


def test_quorum_met_round_goes_on_and_records_every_failure(tmp_path):
    trace = tmp_path / "trace.json"
    with FakeOpenAIServer(seeded_failures({101, 102})).in_thread() as server:
        result = run_cli(
            "Q", "-s", "4", "--seed", "100", "--min-trajectories", "2", "--base-url", server.base_url, "--json",
            "--trace", str(trace),
        )  # fmt: skip
        synthesis = server.requests[-1].last_user_content
    assert result.exit_code == 0, result.output
    rounds = json.loads(result.stdout)["rounds"]
    assert [(r["k"], r["returned"], r["failed"], r["messages"]) for r in rounds] == [(4, 2, 2, 2), (1, 1, 0, 1)]
    assert "conclusion 100" in synthesis and "conclusion 103" in synthesis
    assert "Reference 3" not in synthesis  # the failed explorers left nothing behind
    recorded = json.loads(trace.read_text())
    first = recorded["rounds"][0]
    assert first["failed"] == 2 and first["k"] == 4
    errors = {t["index"]: t["error"] for t in first["trajectories"] if t["error"]}
    assert sorted(errors) == [1, 2]
    assert "HTTP 400: bad luck for seed 101" in errors[1]


def test_quorum_not_met_fails_naming_what_failed_and_why():
    with FakeOpenAIServer(seeded_failures({101, 102})).in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", "Q", "-s", "4", "--seed", "100", "--min-fraction", "0.75", "--base-url", server.base_url]
        )
        requests = len(server.requests)
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "round 1 failed: 2 of K=4 trajectories came back, below the quorum of 3" in message
    assert "#1: UpstreamError" in message and "bad luck for seed 101" in message
    assert "#2: UpstreamError" in message and "bad luck for seed 102" in message
    assert requests == 4  # every explorer ran to the end (none cancelled); no synthesis was attempted


def test_default_policy_fails_the_run_at_the_first_failure():
    with FakeOpenAIServer(seeded_failures({101})).in_thread() as server:
        result = CliRunner().invoke(app, ["run", "Q", "-s", "4", "--seed", "100", "--base-url", server.base_url])
    assert result.exit_code == 1
    assert "bad luck for seed 101" in result.stderr
    assert "quorum" not in result.stderr


async def test_tolerated_failures_are_events_with_the_error():
    async with FakeOpenAIServer(seeded_failures({101})) as server:
        async with VLLMClient(server.base_url) as client:
            config = PaCoReConfig(
                schedule=Schedule.parse("3"),
                params={"seed": 100},
                failure=FailurePolicy(min_fraction=0.5),
            )
            graph = build_pacore_graph(client, config=config)
            events = [
                parse_event(chunk)
                async for chunk in graph.astream({"problem": "Q"}, stream_mode="custom")  # type: ignore[arg-type]
            ]
    failed = [e for e in events if isinstance(e, TrajectoryFinished) and e.error]
    assert [(e.round, e.index, e.finish_reason) for e in failed] == [(1, 1, "error")]


@pytest.mark.parametrize(
    ("policy", "k", "quorum"),
    [
        (FailurePolicy(), 4, 4),
        (FailurePolicy(min_trajectories=2), 4, 2),
        (FailurePolicy(min_trajectories=8), 4, 4),  # never more than K
        (FailurePolicy(min_fraction=0.5), 5, 3),
        (FailurePolicy(min_fraction=0.75), 4, 3),
        (FailurePolicy(min_trajectories=3, min_fraction=0.25), 8, 3),  # the stricter wins
        (FailurePolicy(min_fraction=0.01), 4, 1),
    ],
)
def test_quorum_arithmetic(policy, k, quorum):
    assert policy.quorum(k) == quorum


def test_failure_policy_in_a_graph_spec(tmp_path):
    from pacore_graph.graphs import GraphSpecError, load_spec_file

    good = tmp_path / "tolerant.yaml"
    good.write_text("type: pacore\nschedule: [8]\nfailure:\n  min_fraction: 0.5\n")
    assert load_spec_file(good).to_config().failure.quorum(8) == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: pacore\nschedule: [8]\nfailure:\n  min_fraction: 1.5\n")
    with pytest.raises(GraphSpecError, match=r"failure\.min_fraction"):
        load_spec_file(bad)


def test_the_table_output_says_which_rounds_had_failures():
    with FakeOpenAIServer(seeded_failures({101})).in_thread() as server:
        failed = run_cli("Q", "-s", "3", "--seed", "100", "--min-trajectories", "1", "--base-url", server.base_url)
        clean = run_cli("Q", "-s", "3", "--seed", "200", "--base-url", server.base_url)
    assert failed.exit_code == 0 and clean.exit_code == 0, failed.output + clean.output
    assert "round 1: 1 of K=3 requests failed after retries" in failed.stdout
    assert "failed" not in clean.stdout
    assert "│ final │" in failed.stdout  # the table itself is unchanged and fits 80 columns


def slow_seeds(slow: set[int], delay: float):
    """Explorers whose seed is in ``slow`` answer after ``delay`` seconds; the rest at once."""

    def script(request):
        seed = request.body.get("seed")
        return FakeReply(content=f"conclusion {seed}", delay=delay if seed in slow else 0.0)

    return script


async def test_straggler_cutoff_closes_the_round_and_records_the_straggler():
    async with FakeOpenAIServer(slow_seeds({103}, delay=30.0)) as server:
        async with VLLMClient(server.base_url) as client:
            config = PaCoReConfig(
                schedule=Schedule.parse("4"),
                params={"seed": 100},
                failure=FailurePolicy(min_trajectories=3, straggler_grace=0.2),
            )
            started = time.perf_counter()
            state = await build_pacore_graph(client, config=config).ainvoke({"problem": "Q"})
            seconds = time.perf_counter() - started
        synthesis = server.requests[-1].last_user_content
    first = state["usage"]["rounds"][0]
    assert (first["k"], first["returned"], first["failed"], first["messages"]) == (4, 3, 1, 3)
    assert seconds < 10, "the round waited for the straggler"
    assert "conclusion 103" not in synthesis and all(f"conclusion {s}" in synthesis for s in (100, 101, 102))


async def test_straggler_is_an_event_with_the_reason():
    async with FakeOpenAIServer(slow_seeds({101}, delay=30.0)) as server:
        async with VLLMClient(server.base_url) as client:
            config = PaCoReConfig(
                schedule=Schedule.parse("2"),
                params={"seed": 100},
                failure=FailurePolicy(min_fraction=0.5, straggler_grace=0),
            )
            graph = build_pacore_graph(client, config=config)
            events = [parse_event(c) async for c in graph.astream({"problem": "Q"}, stream_mode="custom")]
    cut = [e for e in events if isinstance(e, TrajectoryFinished) and e.error]
    assert len(cut) == 1 and cut[0].index == 1
    assert "cut off as a straggler: 1 of 2 had come back (quorum 1)" in cut[0].error


async def test_without_a_grace_the_round_waits_for_every_explorer():
    async with FakeOpenAIServer(slow_seeds({101}, delay=0.5)) as server:
        async with VLLMClient(server.base_url) as client:
            config = PaCoReConfig(
                schedule=Schedule.parse("2"), params={"seed": 100}, failure=FailurePolicy(min_fraction=0.5)
            )
            state = await build_pacore_graph(client, config=config).ainvoke({"problem": "Q"})
    assert state["usage"]["rounds"][0]["returned"] == 2


def test_straggler_grace_from_the_cli_and_its_validation():
    with FakeOpenAIServer(slow_seeds({102}, delay=30.0)).in_thread() as server:
        result = run_cli(
            "Q", "-s", "3", "--seed", "100", "--min-trajectories", "2", "--straggler-grace", "0.1",
            "--base-url", server.base_url, "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(r["returned"], r["failed"]) for r in json.loads(result.stdout)["rounds"]] == [(2, 1), (1, 0)]
    refused = CliRunner().invoke(app, ["run", "Q", "--straggler-grace", "1", "--base-url", "http://127.0.0.1:9/v1"])
    assert refused.exit_code == 2
    assert "straggler_grace closes a round once its quorum is back, so it needs a quorum" in refused.stderr
