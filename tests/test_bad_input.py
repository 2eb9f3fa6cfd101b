"""Bad input through the Python API and the CLI: each fails before anything is sent, with one precise line.

Cases already covered elsewhere (an empty problem, a bad or over-limit schedule, an unknown graph or graph type,
non-UTF-8 standard input, malformed specs) live in tests/test_cli_run.py, tests/test_schedule.py and
tests/test_graphs_spec.py; these are the rest.
"""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pacore_graph import ConfigError, ContextBudgetError, SamplingParams, VLLMClient, build_pacore_graph
from pacore_graph.cli.main import app
from pacore_graph.graphs import GraphSpecError, load_graph
from pacore_graph.testing import FakeOpenAIServer, FakeReply

TEN_MB = 10 * 1024 * 1024
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens: any request would fail loudly


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["run", *args], input=input)


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- the Python API ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["   ", "\n\t  \n", ""])
async def test_api_rejects_a_blank_problem_before_sending(problem):
    async with FakeOpenAIServer() as server, VLLMClient(server.base_url) as client:
        with pytest.raises(ConfigError, match="the problem is empty"):
            await build_pacore_graph(client, "2").ainvoke({"problem": problem})
        assert server.requests == []


async def test_api_sends_a_10_mb_problem_intact_or_refuses_it_under_a_budget():
    problem = "digits " * (TEN_MB // 7)
    async with FakeOpenAIServer(lambda r: FakeReply(content="done")) as server:
        # Sent as-is by default (the server decides whether it fits its context)...
        async with VLLMClient(server.base_url) as client:
            graph = build_pacore_graph(client, [1])
            with pytest.warns(ResourceWarning, match="large body"):  # aiohttp's note on >1 MiB request bodies
                output = await graph.ainvoke({"problem": problem})
        assert output["answer"] == "done"
        assert server.requests[0].last_user_content == problem
        sent = len(server.requests)
        # ...and refused before anything is sent under a prompt budget.
        from pacore_graph import PaCoReConfig, Schedule

        async with VLLMClient(server.base_url) as client:
            config = PaCoReConfig(schedule=Schedule.parse([1]), max_prompt_chars=100_000)
            with pytest.raises(ContextBudgetError, match="nothing was sent"):
                await build_pacore_graph(client, config=config).ainvoke({"problem": problem})
        assert len(server.requests) == sent


@pytest.mark.parametrize("max_tokens", [-1, 0])
def test_api_rejects_a_non_positive_max_tokens(max_tokens):
    with pytest.raises(ValidationError, match="max_tokens"):
        SamplingParams(max_tokens=max_tokens)


def test_api_unknown_graph_is_a_config_error():
    with pytest.raises(GraphSpecError, match="unknown graph 'no-such-graph'") as caught:
        load_graph("no-such-graph", VLLMClient(NOWHERE))
    assert isinstance(caught.value, ConfigError)


# -- the CLI ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["   \n  "], "the problem is empty"),
        (["Q", "--max-tokens", "-5"], "Invalid value for '--max-tokens'"),
        (["Q", "--max-tokens", "0"], "Invalid value for '--max-tokens'"),
        (["Q", "--schedule", "1025"], "more than the limit"),
        (["Q", "--schedule", ",".join(["1"] * 17)], "17 rounds"),
        (["Q", "--min-fraction", "1.5"], "Invalid value for '--min-fraction'"),
        (["Q", "--min-trajectories", "0"], "Invalid value for '--min-trajectories'"),
        (["Q", "--run-id", "  "], "the run id is empty"),
        (["Q", "--checkpoint-db", "x.sqlite"], "need --run-id"),
        (["Q", "--concurrency", "0"], "Invalid value for '--concurrency'"),
        (["Q", "--concurrency", "many"], "Invalid value for '--concurrency'"),
        (["Q", "--run-id", "a", "--checkpoint-url", "mysql://u@h/db"], "invalid checkpoint URL"),
    ],
)
def test_cli_bad_options_fail_before_sending(args, fragment):
    result = cli(*args, "--base-url", NOWHERE)
    assert result.exit_code == 2, result.output
    assert fragment in " ".join(result.stderr.split()), result.stderr


def test_cli_checkpoint_db_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("Q", "--run-id", "a", "--checkpoint-db", str(blocker / "runs.sqlite"), "--base-url", NOWHERE)
    assert result.exit_code == 2
    assert "cannot create" in one_line_error(result)


def test_cli_unreachable_postgres_is_one_line_without_the_password():
    url = "postgresql://pacore:s3cret-pw@127.0.0.1:9/nowhere?connect_timeout=2"
    result = cli("Q", "--run-id", "a", "--checkpoint-url", url, "--base-url", NOWHERE)
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "cannot open the PostgreSQL checkpoint store" in line
    assert "s3cret-pw" not in result.stderr


def test_cli_non_utf8_graph_spec_file(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("type: pacore\nschedule: [2]\ndescription: café\n".encode("latin-1"))
    result = cli("Q", "--graph", str(spec), "--base-url", NOWHERE)
    assert result.exit_code == 2
    assert "cannot read the graph spec" in one_line_error(result)


def test_cli_non_utf8_eval_dataset(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_bytes(b'{"problem": "caf\xe9", "answer": "1"}\n')
    result = CliRunner().invoke(
        app, ["eval", "--dataset", str(data), "--out", str(tmp_path / "out"), "--base-url", NOWHERE]
    )
    assert result.exit_code == 2, result.output
    assert "cannot be read as UTF-8" in result.stderr


def test_cli_10_mb_problem_from_stdin_reaches_the_server_intact():
    problem = "x" * (TEN_MB - 1) + "?"
    with FakeOpenAIServer(lambda r: FakeReply(content="done")).in_thread() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
        result = subprocess.run(
            [sys.executable, "-m", "pacore_graph.cli", "run", "-", "-s", "1", "--base-url", server.base_url, "-q"],
            input=problem.encode(),
            capture_output=True,
            env=env,
            timeout=60,
        )
        first = server.requests[0].last_user_content if server.requests else None
    assert result.returncode == 0, result.stderr.decode()[-500:]
    assert first == problem
    assert result.stdout.decode().startswith("done")


def test_cli_10_mb_problem_over_a_graph_budget_sends_nothing():
    problem = "x" * TEN_MB
    with FakeOpenAIServer().in_thread() as server:
        result = cli("-", "--graph", "pacore-no-compaction", "--base-url", server.base_url, input=problem)
        assert server.requests == []
    assert result.exit_code == 1
    assert "over the budget of 120,000 (max_prompt_chars); nothing was sent" in " ".join(result.stderr.split())
