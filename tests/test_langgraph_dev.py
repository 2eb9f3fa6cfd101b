"""``langgraph dev`` (langgraph-cli, in-memory) loads the repository's ``langgraph.json`` and answers runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

REPO = Path(__file__).resolve().parent.parent
ANSWER = "Four, as two and two make."


def script(request: FakeRequest) -> FakeReply:
    if "Reference Responses" in (request.last_user_content or ""):
        return FakeReply(content=ANSWER, reasoning="private")
    return FakeReply(content="draft four")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, body: Any = None, *, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return text if response.headers.get_content_type() == "text/event-stream" else json.loads(text)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, FakeOpenAIServer]]:
    pytest.importorskip("langgraph_runtime_inmem", reason="needs the dev extra: pip install 'langgraph-cli[inmem]'")
    with FakeOpenAIServer(script).in_thread() as upstream:
        port = _free_port()
        env = {
            **os.environ,
            "PACORE_BASE_URL": upstream.base_url,
            "LANGSMITH_TRACING": "false",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "langgraph_cli",
            "dev",
            "--config",
            str(REPO / "langgraph.json"),
            "--host",
            "127.0.0.1",
        ]
        command += ["--port", str(port), "--no-browser", "--no-reload"]
        # cwd: langgraph dev keeps its in-memory state's snapshot (.langgraph_api/) in the working directory.
        log_path = tmp_path / "langgraph-dev.log"
        log = log_path.open("wb")
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    _request(f"{url}/ok", timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        output = log_path.read_text(errors="replace")
                        pytest.fail(f"langgraph dev did not start (exit {server.poll()}):\n{output[-3000:]}")
                    time.sleep(0.3)
            yield url, upstream
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()


def test_langgraph_dev_serves_the_built_in_graphs_and_answers_a_run(dev_server):
    url, upstream = dev_server
    assistants = _request(f"{url}/assistants/search", {"limit": 50})
    by_graph = {a["graph_id"]: a["assistant_id"] for a in assistants}
    assert {"pacore-low", "pacore-high", "self-consistency", "sequential", "pacore-code-verified"} <= set(by_graph)

    # Studio's context form: the per-run settings.
    schemas = _request(f"{url}/assistants/{by_graph['pacore-low']}/schemas")
    assert {"schedule", "temperature", "min_trajectories"} <= set(schemas["context_schema"]["properties"])
    assert "messages" in schemas["input_schema"]["properties"]

    thread = _request(f"{url}/threads", {})
    run = {
        "assistant_id": "pacore-low",
        "input": {"messages": [{"role": "user", "content": "What is 2+2?"}]},
        "context": {"schedule": "2"},
    }
    state = _request(f"{url}/threads/{thread['thread_id']}/runs/wait", run)
    assert state["answer"] == ANSWER
    assert [row["k"] for row in state["usage"]["rounds"]] == [2, 1]  # the context's schedule, not pacore-low's [4]
    assert [m["type"] for m in state["messages"]] == ["human", "ai"]
    assert state["messages"][-1]["content"] == ANSWER
    assert len(upstream.requests) == 3

    # A second turn on the thread: a multi-turn conversation, and a fresh run (pacore-low's [4] this time).
    run = {"assistant_id": "pacore-low", "input": {"messages": [{"role": "user", "content": "And 3+3?"}]}}
    state = _request(f"{url}/threads/{thread['thread_id']}/runs/wait", run)
    assert [m["type"] for m in state["messages"]] == ["human", "ai", "human", "ai"]
    assert [row["k"] for row in state["usage"]["rounds"]] == [4, 1]
    explorer = upstream.requests[3]
    assert [m["content"] for m in explorer.messages] == ["What is 2+2?", ANSWER, "And 3+3?"]

    # The messages stream mode over the HTTP API: the synthesis tokens, no reasoning.
    streamed = _request(
        f"{url}/runs/stream",
        {"assistant_id": "pacore-low", "input": {"problem": "2+2?"}, "stream_mode": "messages-tuple"},
    )
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in streamed.splitlines()
        if line.startswith("data: ") and '"AIMessageChunk"' in line
    ]
    assert "".join(message["content"] for message, _meta in chunks) == ANSWER
    assert {meta["langgraph_node"] for _message, meta in chunks} == {"synthesize"}
