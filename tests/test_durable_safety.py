"""Durable runs under attack: corrupt checkpoint stores, and two processes on one ``--run-id``.

SQLite always; PostgreSQL when ``PACORE_TEST_POSTGRES_URL`` is set (``.ci/run`` starts one; in CI a missing URL is
a failure), as in ``tests/test_durable.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"


def _postgres_url() -> str:
    url = os.environ.get("PACORE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("PACORE_TEST_POSTGRES_URL is not set in CI; .ci/run should start PostgreSQL and export it")
        pytest.skip("PACORE_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request, tmp_path) -> list[str]:
    if request.param == "sqlite":
        return ["--checkpoint-db", str(tmp_path / "runs.sqlite")]
    return ["--checkpoint-url", _postgres_url()]


def clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
    return env | {"PACORE_CACHE_DIR": str(tmp_path / "cache")}


def pacore(base_url: str, run_id: str, store: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "pacore_graph.cli", "run", PROBLEM, "--schedule", "2", "--base-url", base_url,
        "--run-id", run_id, *store, "--json", "--quiet",
    ]  # fmt: skip


def test_a_second_process_on_a_running_run_id_is_refused_and_the_lock_dies_with_its_holder(store_args, tmp_path):
    run_id = f"lock-{uuid.uuid4().hex[:8]}"
    env = clean_env(tmp_path)
    slow = {"on": True}

    def script(request):
        return FakeReply(content="<think>t</think>conclusion 391", delay=60.0 if slow["on"] else 0.0)

    with FakeOpenAIServer(script).in_thread() as server:
        first = subprocess.Popen(pacore(server.base_url, run_id, store_args), env=env, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while len(server.requests) < 2:  # the first process is mid-round
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            second = subprocess.run(
                pacore(server.base_url, run_id, store_args), env=env, capture_output=True, timeout=60
            )
            assert len(server.requests) == 2  # the second process sent nothing
            assert first.poll() is None  # and the first runs on
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.communicate(timeout=10)
        assert second.returncode == 2, second.stderr.decode()
        message = second.stderr.decode().strip()
        assert f"run {run_id!r} is already running" in message and "Traceback" not in message
        assert len(message.splitlines()) == 1
        if "--checkpoint-db" in store_args:
            assert f"pid {first.pid}" in message

        slow["on"] = False  # the holder was killed: its lock went with it, so the run resumes
        resumed = subprocess.run(pacore(server.base_url, run_id, store_args), env=env, capture_output=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert "resuming run" in resumed.stderr.decode()


async def test_run_durable_refuses_a_concurrent_run_of_the_same_id_in_one_process(tmp_path):
    from pacore_graph import VLLMClient, build_pacore_graph
    from pacore_graph.durable import RunInProgressError, open_checkpointer, run_durable

    gate, asked = asyncio.Event(), asyncio.Event()

    async def script(request):
        asked.set()
        await gate.wait()
        return FakeReply(content="conclusion 391")

    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url) as client:
        async with open_checkpointer(tmp_path / "api.sqlite") as saver:
            graph = build_pacore_graph(client, "1", checkpointer=saver)
            first = asyncio.create_task(run_durable(graph, PROBLEM, run_id="same"))
            await asked.wait()
            with pytest.raises(RunInProgressError, match="'same' is already running"):
                await run_durable(graph, PROBLEM, run_id="same")
            other = asyncio.create_task(run_durable(graph, PROBLEM, run_id="other"))  # another id runs at once
            gate.set()
            assert (await first)["answer"] == "conclusion 391"
            assert (await other)["answer"] == "conclusion 391"
            assert (await run_durable(graph, PROBLEM, run_id="same"))["answer"] == "conclusion 391"  # released


def _finished_run(tmp_path) -> str:
    db = tmp_path / "runs.sqlite"
    env = clean_env(tmp_path)
    with FakeOpenAIServer(lambda request: FakeReply(content="conclusion 391")).in_thread() as server:
        done = subprocess.run(
            pacore(server.base_url, "r1", ["--checkpoint-db", str(db)]), env=env, capture_output=True, timeout=60
        )
    assert done.returncode == 0, done.stderr.decode()
    return str(db)


def _refused(tmp_path, db: str) -> str:
    result = subprocess.run(
        pacore("http://127.0.0.1:9/v1", "r1", ["--checkpoint-db", db]),
        env=clean_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    message = result.stderr.decode().strip()
    assert result.returncode == 2, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith(f"error: {db}: the checkpoint store is corrupt"), message
    return message


def test_a_file_that_is_not_sqlite_is_a_one_line_error_naming_it(tmp_path):
    db = tmp_path / "runs.sqlite"
    db.write_bytes(os.urandom(4096))
    assert "file is not a database" in _refused(tmp_path, str(db))


def test_a_truncated_database_is_a_one_line_error_naming_it(tmp_path):
    db = _finished_run(tmp_path)
    with open(db, "rb") as file:
        data = file.read()
    with open(db, "wb") as file:
        file.write(data[: len(data) // 2] + os.urandom(2048))
    _refused(tmp_path, db)


@pytest.mark.parametrize("blob", [b"\xc1 not msgpack", b"\x2a"], ids=["undecodable", "not-a-checkpoint"])
def test_a_checkpoint_that_does_not_decode_is_a_one_line_error_naming_the_file(tmp_path, blob):
    db = _finished_run(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE checkpoints SET checkpoint = ?", (blob,))
    _refused(tmp_path, db)
