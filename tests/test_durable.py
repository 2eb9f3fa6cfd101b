"""Durable runs: `pacore run --run-id` is killed with SIGKILL mid-round and resumed, against real checkpoint stores.

SQLite always (a real file); PostgreSQL when ``PACORE_TEST_POSTGRES_URL`` is set (``.ci/run`` starts one on
loopback; in CI a missing URL is a failure, not a skip). The proof is counted at the fake server: after the
resume, only the trajectories that had not finished are requested again, then the later rounds.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"
SEED = 100  # trajectory i of the run is requested with seed 100 + i, which names it at the server
SLOW = {SEED + 2, SEED + 3}  # round-1 explorers still running when the process is killed


def _postgres_url() -> str:
    url = os.environ.get("PACORE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("PACORE_TEST_POSTGRES_URL is not set in CI; .ci/run should start PostgreSQL and export it")
        pytest.skip("PACORE_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """The CLI options selecting the checkpoint store, and a synchronous saver to inspect it from the test."""
    if request.param == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        db = tmp_path / "runs.sqlite"
        yield ["--checkpoint-db", str(db)], lambda: SqliteSaver.from_conn_string(str(db))
    else:
        url = _postgres_url()
        from langgraph.checkpoint.postgres import PostgresSaver

        yield ["--checkpoint-url", url], lambda: PostgresSaver.from_conn_string(url)


def script_with_slow(slow: set[int]):
    def script(request):
        seed = request.body.get("seed")
        return FakeReply(content=f"<think>t{seed}</think>conclusion {seed}", delay=60.0 if seed in slow else 0.0)

    return script


def pacore_args(server_url: str, run_id: str, store_args: list[str], problem: str = PROBLEM) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pacore_graph.cli",
        "run",
        problem,
        "--schedule",
        "4,2",
        "--seed",
        str(SEED),
        "--base-url",
        server_url,
        "--run-id",
        run_id,
        *store_args,
        "--json",
        "--quiet",
    ]


def clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
    return env | {"PACORE_CACHE_DIR": str(tmp_path / "cache")}


def saved_explorers(open_saver, run_id: str) -> int:
    """How many explorer results the store holds as pending writes of the run's latest checkpoint.

    Each explorer is a LangGraph task, whose result is written under the ``__return__`` channel.
    """
    with open_saver() as saver:
        saver.setup()  # idempotent; the tables may not exist yet while the CLI starts
        saved = saver.get_tuple({"configurable": {"thread_id": run_id}})
    if saved is None:
        return 0
    return sum(1 for _, channel, _ in saved.pending_writes or [] if channel == "__return__")


def seeds(server) -> list[int]:
    return [r.body["seed"] for r in server.requests]


def test_kill_9_mid_round_then_resume_requests_only_unfinished_trajectories(store, tmp_path):
    store_args, open_saver = store
    run_id = f"kill-test-{uuid.uuid4().hex[:8]}"  # unique: a PostgreSQL store is shared between runs
    env = clean_env(tmp_path)

    with FakeOpenAIServer(script_with_slow(SLOW)).in_thread() as server:
        proc = subprocess.Popen(
            pacore_args(server.base_url, run_id, store_args),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            # Killed only once the two fast explorers' results are durably stored, as a crash could come then.
            while saved_explorers(open_saver, run_id) < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the fast explorers' results were never checkpointed"
                time.sleep(0.05)
            assert sorted(seeds(server)) == [SEED, SEED + 1, SEED + 2, SEED + 3]
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL

    with FakeOpenAIServer(script_with_slow(set())).in_thread() as server:
        result = subprocess.run(
            pacore_args(server.base_url, run_id, store_args), env=env, capture_output=True, timeout=60
        )
        resumed = seeds(server)
    assert result.returncode == 0, result.stderr.decode()
    assert "resuming run" in result.stderr.decode()
    # The two killed explorers again, then round 2 (K=2) and the final synthesis; nothing else.
    assert sorted(resumed[:2]) == sorted(SLOW)
    assert sorted(resumed[2:4]) == [SEED + 4, SEED + 5]
    assert len(resumed) == 5 and resumed[4] == SEED + 6
    out = json.loads(result.stdout)
    assert out["answer"] == f"conclusion {SEED + 6}"
    assert [(r["k"], r["returned"], r["messages"]) for r in out["rounds"]] == [(4, 4, 4), (2, 2, 2), (1, 1, 1)]

    # A finished run id gives its stored result without calling the model.
    with FakeOpenAIServer(script_with_slow(set())).in_thread() as server:
        again = subprocess.run(
            pacore_args(server.base_url, run_id, store_args), env=env, capture_output=True, timeout=60
        )
        assert server.requests == []
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads(again.stdout)["answer"] == out["answer"]

    # The same id with another problem is refused: it would silently answer the old problem.
    other = subprocess.run(
        pacore_args("http://127.0.0.1:9/v1", run_id, store_args, problem="What is 2 + 2?"),
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert other.returncode == 2
    assert f"run {run_id!r} was started with a different problem" in other.stderr.decode()


def test_checkpoint_options_need_a_run_id(tmp_path):
    args = ["run", "Q", "--base-url", "http://127.0.0.1:9/v1", "--checkpoint-db", str(tmp_path / "x.sqlite")]
    result = subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args],
        env=clean_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "need --run-id" in result.stderr.decode()


async def test_python_api_resumes_a_failed_run_without_redoing_finished_explorers(tmp_path):
    from pacore_graph import ConfigError, SamplingParams, UpstreamError, VLLMClient, build_pacore_graph
    from pacore_graph.durable import open_checkpointer, run_durable
    from pacore_graph.testing import Fault

    broken = {"on": True}

    def script(request):
        seed = request.body["seed"]
        if broken["on"] and seed == SEED + 1:
            return FakeReply(fault=Fault.http_error(400, "not now"), delay=0.2)  # fails after its siblings finished
        return FakeReply(content=f"conclusion {seed}")

    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url) as client:
        async with open_checkpointer(tmp_path / "api.sqlite") as saver:
            graph = build_pacore_graph(client, "3", params=SamplingParams(seed=SEED), checkpointer=saver)
            with pytest.raises(UpstreamError):
                await run_durable(graph, PROBLEM, run_id="api")
            assert sorted(seeds(server)) == [SEED, SEED + 1, SEED + 2]
            broken["on"] = False
            output = await run_durable(graph, PROBLEM, run_id="api")
            assert seeds(server)[3:] == [SEED + 1, SEED + 3]  # the failed explorer again, then the synthesis
            assert output["answer"] == f"conclusion {SEED + 3}"
            assert (await run_durable(graph, PROBLEM, run_id="api"))["answer"] == output["answer"]
            assert len(server.requests) == 5  # a finished run is not run again
            with pytest.raises(ConfigError, match="different problem"):
                await run_durable(graph, "another problem", run_id="api")
