"""`pacore mcp`: the official MCP SDK's own client against the real command, over stdio and streamable HTTP.

The server runs as a subprocess (`python -m pacore_graph.cli mcp --base-url FAKE`) in front of a fake OpenAI
server on 127.0.0.1 whose explorers conclude "conclusion i: 391" and whose synthesis is scripted.
"""

import asyncio
import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from pacore_graph.testing import FakeOpenAIServer, FakeReply

ROOT = Path(__file__).parent.parent
PROBLEM = "What is 17 * 23?"
SYNTHESIS = "All references agree: 17 * 23 = 391."
KEY = "mcp-test-key"


def scripted(*schedule: int):
    """Explorers conclude with a boxed 391; the final synthesis of a first run on ``schedule`` says SYNTHESIS."""

    def script(request):
        if request.index == sum(schedule):  # the requests before it are the explorers of every round
            return FakeReply(content=f"<think>merge the references</think>{SYNTHESIS}", completion_tokens=7)
        return FakeReply(content=f"<think>work</think>Attempt {request.index}: \\boxed{{391}}", completion_tokens=5)

    return script


def stdio_server(base_url: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "pacore_graph.cli", "mcp", "--base-url", base_url], cwd=str(ROOT)
    )


class Progress:
    """A progress callback that records every notification."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))


def one_line_error(result) -> str:
    assert result.is_error
    [content] = result.content
    assert "\n" not in content.text
    return content.text


async def test_stdio_lists_the_tool_and_answers_with_one_progress_notification_per_round():
    async with FakeOpenAIServer(scripted(3, 2)) as fake:
        async with Client(stdio_server(fake.base_url), read_timeout_seconds=60) as client:
            [tool] = (await client.list_tools()).tools
            assert tool.name == "deep_reason"
            assert set(tool.input_schema["properties"]) == {"problem", "graph", "schedule"}
            assert tool.input_schema["required"] == ["problem"]
            assert {"answer", "usage", "rounds", "graph"} <= set(tool.output_schema["properties"])

            progress = Progress()
            result = await client.call_tool(
                "deep_reason", {"problem": PROBLEM, "schedule": "3,2"}, progress_callback=progress
            )
            assert not result.is_error, result.content
            assert [content.text for content in result.content] == [SYNTHESIS]
            output = result.structured_content
            assert output["answer"] == SYNTHESIS
            assert (output["graph"], output["schedule"], output["finish_reason"]) == ("pacore-low", [3, 2], "stop")
            assert [row["k"] for row in output["rounds"]] == [3, 2, 1]
            assert output["usage"]["effective_ttc_tokens"] == fake.total_usage.completion_tokens == 3 * 5 + 2 * 5 + 7
            assert output["usage"]["prompt_tokens"] == fake.total_usage.prompt_tokens
            assert len(fake.requests) == 6
            assert fake.requests[-1].last_user_content.count("Attempt") == 2  # the synthesis saw round 2's

            # One notification per round: two parallel rounds and the synthesis, in order, each naming its round.
            assert [(p, total) for p, total, _ in progress.seen] == [(1, 3), (2, 3), (3, 3)]
            messages = [message for _, _, message in progress.seen]
            assert messages[0] == "round 1 started (1/3): K=3"
            assert messages[1] == "round 2 started (2/3): K=2; round 1 kept 3 of 3 references"
            assert messages[2] == "final synthesis started (3/3): K=1; round 2 kept 2 of 2 references"

            # The graph argument: self-consistency votes over one round and makes no synthesis call.
            progress = Progress()
            result = await client.call_tool(
                "deep_reason",
                {"problem": PROBLEM, "graph": "self-consistency", "schedule": [2]},
                progress_callback=progress,
            )
            assert not result.is_error, result.content
            assert result.structured_content["graph"] == "self-consistency"
            assert result.structured_content["votes"] == {"391": 2}
            assert [(p, total) for p, total, _ in progress.seen] == [(1, 1)]


async def test_stdio_bad_input_is_a_one_line_tool_error_and_sends_nothing_upstream():
    async with FakeOpenAIServer(scripted(4)) as fake:
        async with Client(stdio_server(fake.base_url), read_timeout_seconds=60) as client:
            unknown = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM, "graph": "nope"}))
            assert "unknown graph 'nope'; available: " in unknown and "pacore-high" in unknown
            bad = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM, "schedule": "3,x"}))
            assert "invalid schedule '3,x': 'x' is not an integer" in bad
            zero = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM, "schedule": [4, 0]}))
            assert "every K must be at least 1" in zero
            huge = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM, "schedule": "200,200"}))
            assert "runs 401 trajectories, over this server's limit of 256 per call" in huge
            empty = one_line_error(await client.call_tool("deep_reason", {"problem": "  "}))
            assert "the problem is empty" in empty
        assert fake.requests == []


async def test_an_upstream_failure_is_a_one_line_tool_error():
    async with FakeOpenAIServer(lambda request: FakeReply(content="")) as fake:
        async with Client(stdio_server(fake.base_url), read_timeout_seconds=60) as client:
            failed = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM, "schedule": 2}))
        assert fake.requests
    assert "EmptyRoundError" in failed


@contextlib.asynccontextmanager
async def http_server(*command: str):
    """Run ``command`` (a `pacore mcp --transport http`); yield the endpoint URL it prints, then stop it with
    SIGINT (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stderr=subprocess.PIPE)
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        match = re.search(r"PaCoRe MCP server on (http://\S+/mcp) ", line)
        assert match, line
        yield match.group(1)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0, rest.decode()


def mcp_http(*args: str) -> list[str]:
    """`pacore mcp` over streamable HTTP on a free port, with ``args``."""
    return [sys.executable, "-m", "pacore_graph.cli", "mcp", "--transport", "http", "--port", "0", *args]


def post_ping(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """A raw JSON-RPC ping: its HTTP status and headers."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    all_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    request = urllib.request.Request(url, data=body, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


async def call_over_http(url: str, headers: dict[str, str], progress: Progress | None = None):
    async with httpx2.AsyncClient(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=60) as client:
            return await client.call_tool(
                "deep_reason", {"problem": PROBLEM, "schedule": "2"}, progress_callback=progress
            )


async def test_http_binds_loopback_and_asks_no_key_unless_given():
    async with FakeOpenAIServer(scripted(2)) as fake:
        async with http_server(*mcp_http("--base-url", fake.base_url)) as url:
            assert url.startswith("http://127.0.0.1:")
            progress = Progress()
            result = await call_over_http(url, {}, progress)
            assert [content.text for content in result.content] == [SYNTHESIS]
            assert [(p, total) for p, total, _ in progress.seen] == [(1, 2), (2, 2)]


async def test_http_with_an_api_key_refuses_requests_without_it():
    async with FakeOpenAIServer(scripted(2)) as fake:
        async with http_server(*mcp_http("--base-url", fake.base_url, "--http-api-key", KEY)) as url:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                status, response_headers = await asyncio.to_thread(post_ping, url, headers)
                assert status == 401, headers
                assert response_headers["www-authenticate"].startswith("Bearer ")
            assert fake.requests == []
            progress = Progress()
            result = await call_over_http(url, {"Authorization": f"Bearer {KEY}"}, progress)
            assert [content.text for content in result.content] == [SYNTHESIS]
            assert len(progress.seen) == 2
    assert KEY not in str(result.structured_content)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http-api-key", KEY], "--http-api-key (or PACORE_MCP_API_KEY) protects the HTTP transport"),
        (["--graph", "nope"], "unknown graph"),
    ],
)
def test_bad_command_lines_are_one_error_line(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", "mcp", "--base-url", "http://127.0.0.1:9/v1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""


# -- the README's MCP section: its commands, its client config and its Python snippet, run as written ------------

README_URL = "http://127.0.0.1:8000/v1"
PACORE = str(Path(sys.executable).with_name("pacore"))  # the installed entry point, as a client would start it


def readme_mcp_blocks() -> dict[str, str]:
    """The first fenced block of each language in the README's "## MCP" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## MCP\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(language, body)
    return blocks


def readme_commands() -> list[list[str]]:
    lines = [line for line in readme_mcp_blocks()["bash"].splitlines() if line and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


async def test_readme_client_config_and_stdio_command_run_against_the_fake_server():
    config = json.loads(readme_mcp_blocks()["json"])["mcpServers"]["pacore"]
    stdio_command = readme_commands()[0]
    assert [config["command"], *config["args"]] == stdio_command  # the command and the config say the same
    async with FakeOpenAIServer(scripted(4)) as fake:
        args = [fake.base_url if arg == README_URL else arg for arg in config["args"]]
        server = StdioServerParameters(command=PACORE, args=args, cwd=str(ROOT))
        async with Client(server, read_timeout_seconds=60) as client:
            assert [tool.name for tool in (await client.list_tools()).tools] == ["deep_reason"]
            result = await client.call_tool("deep_reason", {"problem": PROBLEM})
    assert result.structured_content["answer"] == SYNTHESIS
    assert len(fake.requests) == 5  # pacore-low: [4] and the synthesis


async def test_readme_http_command_runs_with_its_key():
    [command] = [line for line in readme_commands() if "--transport" in line]
    key = command[command.index("--http-api-key") + 1]
    async with FakeOpenAIServer(scripted(2)) as fake:
        args = [fake.base_url if arg == README_URL else arg for arg in command[1:]]
        args[args.index("--port") + 1] = "0"  # a free port
        async with http_server(PACORE, *args) as url:
            assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
            assert (await asyncio.to_thread(post_ping, url, {}))[0] == 401
            result = await call_over_http(url, {"Authorization": f"Bearer {key}"})
    assert result.structured_content["answer"] == SYNTHESIS


async def test_readme_python_snippet_runs_against_the_fake_server(capsys):
    code = readme_mcp_blocks()["python"]
    async with FakeOpenAIServer(scripted(8, 2)) as fake:
        code = code.replace(README_URL, fake.base_url).replace('command="pacore"', f"command={PACORE!r}")
        namespace: dict = {}
        exec(compile(code, "README.md (MCP)", "exec"), namespace)
        answer = await namespace["deep_reason"](PROBLEM)
    assert answer == SYNTHESIS
    assert len(fake.requests) == 11
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "[1/3] round 1 started (1/3): K=8",
        "[2/3] round 2 started (2/3): K=2; round 1 kept 8 of 8 references",
        "[3/3] final synthesis started (3/3): K=1; round 2 kept 2 of 2 references",
    ]


async def test_the_python_api_serves_in_process_over_any_backend():
    from pacore_graph.server.mcp import MCPSettings, PaCoReMCP
    from pacore_graph.testing import FunctionBackend

    backend = FunctionBackend(lambda messages, params: "<think>17*23</think>391")
    mcp = PaCoReMCP(backend, MCPSettings(default_graph="sequential", max_trajectories=4))
    async with Client(mcp.server) as client:
        progress = Progress()
        result = await client.call_tool(
            "deep_reason", {"problem": PROBLEM, "schedule": "1,1"}, progress_callback=progress
        )
        refused = one_line_error(await client.call_tool("deep_reason", {"problem": PROBLEM}))  # [1,1,1,1] + 1 > 4
    assert result.structured_content["graph"] == "sequential"
    assert result.structured_content["answer"] == "391"
    assert [(p, total) for p, total, _ in progress.seen] == [(1, 3), (2, 3), (3, 3)]
    assert "runs 5 trajectories, over this server's limit of 4 per call" in refused
    assert len(backend.calls) == 3
