"""Several model servers from the CLI: repeated `--base-url` (or `--upstream`), or a list in PACORE_BASE_URL.

Real CLI, real HTTP, two fake OpenAI servers: the requests of one run are spread over both, and a bad URL
anywhere in the list is one clear error line before anything is sent.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import openai
import pytest
from typer.testing import CliRunner

from pacore_graph.cli.backend import ServerOptions, split_base_urls
from pacore_graph.cli.main import app
from pacore_graph.cli.options import parse_concurrency
from pacore_graph.testing import FakeOpenAIServer, FakeReply

PROBLEM = "What is 17 * 23?"


def is_synthesis(request) -> bool:
    return bool(re.search(r"^Reference \d+:$", request.last_user_content, re.M))


def tagged(name: str):
    """A server whose explorers conclude with its name, and whose synthesis says which servers it saw."""

    def script(request):
        if is_synthesis(request):
            seen = sorted(set(re.findall(r"from server (\w+)", request.last_user_content)))
            return FakeReply(content=f"<think>merge</think>saw {'+'.join(seen)}: 391")
        # Held long enough that all of a round's explorers are in flight at once.
        return FakeReply(content=f"<think>work</think>conclusion {request.index} from server {name}", delay=0.2)

    return script


def explorers(server) -> int:
    return len([r for r in server.requests if not is_synthesis(r)])


def syntheses(server) -> int:
    return len([r for r in server.requests if is_synthesis(r)])


def check_spread(result, a, b) -> None:
    """Four explorers split two and two (least outstanding, ties round-robin); the synthesis saw both servers."""
    assert result.exit_code == 0, result.output
    assert (explorers(a), explorers(b)) == (2, 2)
    assert syntheses(a) + syntheses(b) == 1
    assert json.loads(result.stdout)["answer"] == "saw a+b: 391"


def test_two_base_url_options_spread_one_run_over_both_servers():
    with FakeOpenAIServer(tagged("a")).in_thread() as a, FakeOpenAIServer(tagged("b")).in_thread() as b:
        result = CliRunner().invoke(
            app,
            ["run", PROBLEM, "-s", "4", "--base-url", a.base_url, "--base-url", b.base_url, "--json"],
            catch_exceptions=False,
        )
        check_spread(result, a, b)


@pytest.mark.parametrize("separator", [",", ", ", " "])
def test_pacore_base_url_with_several_urls_spreads_one_run_over_both_servers(separator):
    with FakeOpenAIServer(tagged("a")).in_thread() as a, FakeOpenAIServer(tagged("b")).in_thread() as b:
        result = CliRunner().invoke(
            app,
            ["run", PROBLEM, "-s", "4", "--json"],
            env={"PACORE_BASE_URL": f"{a.base_url}{separator}{b.base_url}"},
            catch_exceptions=False,
        )
        check_spread(result, a, b)


def test_one_url_is_one_server_as_before():
    with FakeOpenAIServer(tagged("a")).in_thread() as a:
        result = CliRunner().invoke(
            app, ["run", PROBLEM, "-s", "4", "--json"], env={"PACORE_BASE_URL": a.base_url}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert (explorers(a), syntheses(a)) == (4, 1)
        assert json.loads(result.stdout)["answer"] == "saw a: 391"


def pacore(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process, with no PACORE_* variable but those in ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "pacore_graph.cli", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


@pytest.mark.parametrize(
    ("urls", "where"),
    [
        (["GOOD", "localhost:8000"], "options"),
        (["localhost:8000", "GOOD"], "options"),
        (["GOOD", "localhost:8000"], "env"),
        (["GOOD", "ftp://127.0.0.1:21/v1"], "env"),
    ],
)
def test_a_bad_url_in_the_list_is_one_clear_line_and_nothing_is_sent(urls, where):
    with FakeOpenAIServer(tagged("a")).in_thread() as good:
        urls = [good.base_url if url == "GOOD" else url for url in urls]
        bad = next(url for url in urls if url != good.base_url)
        if where == "options":
            result = pacore("run", PROBLEM, *(arg for url in urls for arg in ("--base-url", url)))
        else:
            result = pacore("run", PROBLEM, env={"PACORE_BASE_URL": ",".join(urls)})
        assert good.requests == []
    assert result.returncode == 2
    assert f"invalid base URL {bad!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_eval_over_two_servers_uses_both(tmp_path):
    def answer(request):
        return FakeReply(content="The answer is 0.", completion_tokens=3, delay=0.1)

    with FakeOpenAIServer(answer).in_thread() as a, FakeOpenAIServer(answer).in_thread() as b:
        args = [
            "eval", "--dataset", "builtin:arith?n=2", "--graph", "self-consistency:2", "--runs", "1",
            "--no-pool", "--out", str(tmp_path), "--base-url", a.base_url, "--base-url", b.base_url,
        ]  # fmt: skip
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert len(a.requests) + len(b.requests) == 4
        assert len(a.requests) >= 1 and len(b.requests) >= 1
    assert (tmp_path / "report.md").exists()


def test_serve_over_two_upstreams_names_both_and_uses_both():
    with FakeOpenAIServer(tagged("a")).in_thread() as a, FakeOpenAIServer(tagged("b")).in_thread() as b:
        command = [
            sys.executable, "-m", "pacore_graph.cli", "serve",
            "--upstream", a.base_url, "--upstream", b.base_url, "--port", "0",
        ]  # fmt: skip
        proxy = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.stderr is not None
            line = proxy.stderr.readline()
            assert f"→ {a.base_url}, {b.base_url};" in line, line
            base_url = re.search(r"PaCoRe proxy on (http://127\.0\.0\.1:\d+/v1)", line).group(1)
            with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20) as client:
                completion = client.chat.completions.create(
                    model="pacore-low",
                    messages=[{"role": "user", "content": PROBLEM}],
                    extra_body={"pacore": {"schedule": 4}},
                )
            assert completion.choices[0].message.content == "saw a+b: 391"
            assert (explorers(a), explorers(b)) == (2, 2)
        finally:
            proxy.send_signal(signal.SIGINT)
            _, rest = proxy.communicate(timeout=20)
    assert proxy.returncode == 0, rest


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (None, ()),
        ([], ()),
        ("", ()),
        (" , ", ()),
        ("http://a:1/v1", ("http://a:1/v1",)),
        (["http://a:1/v1, http://b:2/v1", "http://c:3/v1"], ("http://a:1/v1", "http://b:2/v1", "http://c:3/v1")),
        ("http://a:1/v1\thttp://b:2/v1\n", ("http://a:1/v1", "http://b:2/v1")),
        # The same server twice (a trailing slash aside) is one server, not a double share.
        (["http://a:1/v1", "http://b:2/v1", "http://a:1/v1/"], ("http://a:1/v1", "http://b:2/v1")),
    ],
)
def test_split_base_urls(values, expected):
    assert split_base_urls(values) == expected


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [
        (None, {"max_concurrency": 64, "adaptive_concurrency": True}),
        (8, {"max_concurrency": 8, "adaptive_concurrency": False}),
    ],
)
def test_concurrency_auto_is_an_adaptive_window_and_n_a_fixed_one(concurrency, expected):
    options = ServerOptions(("http://127.0.0.1:9/v1",), concurrency=concurrency).client_options()
    assert {key: options[key] for key in expected} == expected
    assert parse_concurrency("auto") is None and parse_concurrency(" 12 ") == 12


def test_a_fixed_concurrency_caps_the_requests_in_flight():
    # `--concurrency 2`: the server never sees more than 2 of a round's 6 explorers at once.
    live = 0
    peak = 0

    async def script(request):
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.05)
        live -= 1
        return FakeReply(content="<think>x</think>\\boxed{4}")

    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(
            app, ["run", "2 + 2?", "-s", "6", "--base-url", server.base_url, "--concurrency", "2"]
        )
    assert result.exit_code == 0, result.output
    assert peak == 2
