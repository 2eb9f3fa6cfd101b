"""Every shell and Python block of README.md runs as written, in README order, within a time bound.

How a block runs is said in README.md itself, by an HTML comment on the line before its fence (invisible on the
rendered page, visible in the source):

- no comment: a shell block (```bash, ```sh, ```console) runs against the embedded engine (marker ``engine``); a
  Python block runs against the fake OpenAI server (no engine: it checks the API as shown);
- ``<!-- snippet: engine -->`` / ``<!-- snippet: fake-server -->``: the other way round;
- ``<!-- snippet: skip (REASON) -->``: not run, for the reason given (a GPU, servers that run until stopped, ...);
- ``<!-- snippet: file NAME -->`` (on a block that is not code, e.g. a YAML spec): written to ``NAME`` in the
  working folder before any block runs, so the commands that name the file find it.

Shell blocks run one command at a time (a ``\\`` continuation joins lines) with ``bash -c`` in a temporary
folder, the venv's ``bin`` first on ``PATH``, so a command finds files an earlier one wrote (``run.json``). On the
engine, the session's server is registered as a ``pacore engine up`` engine in a fresh ``PACORE_CACHE_DIR``, so a
command without ``--base-url`` uses it as a user's would. Python blocks run in one namespace, in order (a later
fragment uses the ``graph`` an earlier one built), with top-level ``await`` allowed; ``client`` and ``backend``
are given, a client of the server, since the README's fragments take one for granted. The only edit to the text
is the server address: the README's ``http://127.0.0.1:8000/v1`` (a vLLM server) becomes the test server's, and
``http://127.0.0.1:8080/v1`` (``pacore serve``) a proxy over it. ``cat.png`` is provided.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import pytest

from pacore_graph.bridge import run_sync
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The training example trains a model rather than run a graph: tests/test_training_trl.py runs it.
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "train_grpo.py")
TIME_BOUND = 120.0  # seconds, per shell command and per Python block, against the fake server
# On the embedded engine (SmolLM2 on 2 CPU cores, ~55-90 completion tokens/s in all) a command's time follows the
# sampled lengths: one README eval took 88 s in one run, over 120 s in another. This bound only catches a hang.
ENGINE_TIME_BOUND = 300.0
SERVER = "http://127.0.0.1:8000/v1"
PROXY = "http://127.0.0.1:8080/v1"
SHELL = {"bash", "sh", "console"}
RUNNABLE = {*SHELL, "python"}
MARK = re.compile(
    r"^<!-- snippet: (?:(?P<mode>engine|fake-server)|skip \((?P<reason>[^)]+)\)|file (?P<file>[\w.-]+)) -->$"
)
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w-]*)\s*$")

Mode = Literal["engine", "fake-server", "skip", "file"]


@dataclass(frozen=True)
class Block:
    """A fenced code block of README.md."""

    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mark: str | None  # the snippet comment's mode, if any
    reason: str | None  # why a skipped block is skipped
    file: str | None  # the file a ``file`` block is written to

    @property
    def mode(self) -> Mode:
        """How the block runs: its comment's mode, else by its language."""
        if self.mark is not None:
            return self.mark  # type: ignore[return-value]
        return "engine" if self.lang in SHELL else "fake-server"

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced blocks, each with the snippet comment on the line before it (if any)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).split("\n")
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(opening["fence"]))
        mark = MARK.match(lines[i - 1]) if i else None
        mode = None
        if mark:
            mode = mark["mode"] or ("skip" if mark["reason"] else "file")
        blocks.append(
            Block(
                line=i + 1,
                lang=opening["lang"],
                code="\n".join(lines[i + 1 : end]) + "\n",
                mark=mode,
                reason=mark["reason"] if mark else None,
                file=mark["file"] if mark else None,
            )
        )
        i = end + 1
    return blocks


def runnable(mode: Mode) -> list[Block]:
    return [block for block in readme_blocks() if block.lang in RUNNABLE and block.mode == mode]


def shell_commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comment lines dropped."""
    commands, current = [], ""
    for line in code.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        commands.append(current + line)
        current = ""
    return commands


# --- every block is run or marked -------------------------------------------------------------------------


def test_every_runnable_block_is_run_or_skipped_with_a_reason():
    blocks = readme_blocks()
    assert len([b for b in blocks if b.lang in RUNNABLE]) >= 30
    for block in blocks:
        if block.mark == "file":
            assert block.lang not in RUNNABLE, f"{block.id}: a code block cannot be a file"
        elif block.mark is not None:
            assert block.lang in RUNNABLE, f"{block.id}: a snippet comment on a ```{block.lang} block"
        if block.mode == "skip":
            assert block.reason, f"{block.id}: a skipped block must say why: <!-- snippet: skip (REASON) -->"
    run = {b.id for b in [*runnable("engine"), *runnable("fake-server")]}
    skipped = {b.id for b in runnable("skip")}
    assert run | skipped == {b.id for b in blocks if b.lang in RUNNABLE}
    assert len(skipped) <= 12, "only the few blocks that need a GPU or an outside server may be skipped"


def test_every_snippet_comment_is_on_the_line_before_a_block():
    lines = README.read_text(encoding="utf-8").split("\n")
    comments = [i for i, line in enumerate(lines) if line.startswith("<!-- snippet:")]
    for i in comments:
        assert MARK.match(lines[i]), f"README.md:{i + 1}: malformed snippet comment {lines[i]!r}"
        assert FENCE.match(lines[i + 1]), f"README.md:{i + 1}: a snippet comment must directly precede a fence"


def test_extraction_reads_marks_languages_and_continuations():
    text = (
        "intro\n```bash\npacore run x \\\n    -s 4\n# a comment\npacore trace view t.json  # trailing\n```\n"
        "<!-- snippet: skip (needs a GPU) -->\n```python\nprint(1)\n```\n```yaml\na: 1\n```\n"
    )
    shell, python, yaml = readme_blocks(text.replace("```yaml", "<!-- snippet: file x.yaml -->\n```yaml"))
    assert (shell.line, shell.lang, shell.mode) == (2, "bash", "engine")
    assert shell_commands(shell.code) == ["pacore run x     -s 4", "pacore trace view t.json  # trailing"]
    assert (python.mode, python.reason, python.code) == ("skip", "needs a GPU", "print(1)\n")
    assert (yaml.lang, yaml.mark, yaml.file, yaml.code) == ("yaml", "file", "x.yaml", "a: 1\n")


# --- running blocks -------------------------------------------------------------------------------------


def report(line: str) -> str:
    """Show a timing line at once (past pytest's capture, so a failing run still shows what passed)."""
    print(line, file=sys.__stderr__, flush=True)
    return line


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout("over the time bound")


def run_python_blocks(
    blocks: list[Block],
    namespace: dict[str, Any],
    replace: dict[str, str],
    clients: list[Any],
    bound: float = TIME_BOUND,
) -> list[str]:
    """Exec the blocks in order in one namespace; a block with top-level await runs on the sync bridge's loop
    (where ``client`` lives). Returns one timing line per block; fails at the first block that raises.

    Every ``VLLMClient`` a block leaves in the namespace is added to ``clients``, for :func:`close_clients`:
    a later block may rebind the name (``client = OpenAI(...)``), and a client nothing closes leaves its
    session to the garbage collector, which warns during whichever test runs then."""
    from pacore_graph import VLLMClient

    timings = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for block in blocks:
            code = block.code
            for old, new in replace.items():
                code = code.replace(old, new)
            compiled = compile(code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            started = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, bound)
            try:
                result = eval(compiled, namespace)
                if inspect.iscoroutine(result):
                    run_sync(asyncio.wait_for(result, bound))
            except BaseException as error:
                raise AssertionError(f"{block.id} failed: {type(error).__name__}: {error}\n{code}") from error
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                clients += [v for v in namespace.values() if isinstance(v, VLLMClient) and v not in clients]
            timings.append(report(f"{block.id} python {time.monotonic() - started:.1f} s"))
    finally:
        signal.signal(signal.SIGALRM, previous)
    return timings


def run_shell_blocks(
    blocks: list[Block], cwd: Path, env: dict[str, str], replace: dict[str, str], bound: float = TIME_BOUND
) -> list[str]:
    """Run every command of the blocks in order with bash in ``cwd``; fail at the first that fails or runs over
    the bound. Returns one timing line per command."""
    timings = []
    for block in blocks:
        for command in shell_commands(block.code):
            for old, new in replace.items():
                command = command.replace(old, new)
            started = time.monotonic()
            try:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=bound,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as error:
                raise AssertionError(f"{block.id}: {command!r} ran over {bound:.0f} s\n{error.stderr}") from None
            seconds = time.monotonic() - started
            assert done.returncode == 0, (
                f"{block.id}: {command!r} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
            timings.append(report(f"{block.id} {seconds:6.1f} s  {command}"))
    return timings


def shell_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: the venv first on PATH, no PACORE_* settings but ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PACORE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def provide_files(folder: Path) -> None:
    """The README's ``file`` blocks, and the files it takes for granted (a picture to attach)."""
    for block in readme_blocks():
        if block.file:
            (folder / block.file).write_text(block.code, encoding="utf-8")
    shutil.copy(ROOT / "tests" / "fixtures" / "small.png", folder / "cat.png")


# --- against the fake server ----------------------------------------------------------------------------

WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def fake_script(request: FakeRequest) -> FakeReply:
    """A model that reasons, answers "The answer is 391." and, offered tools, calls one until it has a result."""
    messages = request.messages
    if request.body.get("tools") and not any(m.get("role") == "tool" for m in messages):
        return FakeReply(
            content="<think>I need the weather.</think>", tool_calls=[WEATHER_CALL], finish_reason="tool_calls"
        )
    return FakeReply(content="<think>17 * 23 = 340 + 51 = 391</think>The answer is 391.")


@pytest.fixture
def fake_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Path]]:
    """A fake upstream, a PaCoRe proxy over it (bearer key ``KEY``) and a temporary working folder."""
    from pacore_graph import VLLMClient
    from pacore_graph.server import PaCoReProxy, ProxySettings

    provide_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAIServer(fake_script).in_thread() as upstream:
        backend = VLLMClient(upstream.base_url)
        proxy = PaCoReProxy(backend, ProxySettings(port=0, api_key="KEY"))
        run_sync(proxy.__aenter__())
        try:
            yield upstream.base_url, proxy.base_url, tmp_path
        finally:
            run_sync(proxy.__aexit__(None, None, None))
            run_sync(backend.aclose())


def close_clients(clients: list[Any]) -> None:
    """Close the pooled clients the blocks left open (a script may), on the loop they live on."""
    for client in clients:
        run_sync(client.aclose())


def test_readme_python_and_shell_blocks_run_against_the_fake_server(fake_world, capsys):
    from pacore_graph import VLLMClient

    upstream, proxy, folder = fake_world
    replace = {SERVER: upstream, PROXY: proxy}
    client = VLLMClient(upstream)
    namespace: dict[str, Any] = {"__name__": "__main__", "client": client, "backend": client}
    clients = [client]
    try:
        python = [b for b in runnable("fake-server") if b.lang == "python"]
        timings = run_python_blocks(python, namespace, replace, clients)
    finally:
        close_clients(clients)
    shell = [b for b in runnable("fake-server") if b.lang in SHELL]
    env = shell_env(PACORE_BASE_URL=upstream, PACORE_CACHE_DIR=str(folder / "cache"))  # runs.sqlite goes there
    timings += run_shell_blocks(shell, folder, env, replace)
    assert "391" in capsys.readouterr().out
    assert len(timings) == len(runnable("fake-server")) + 1  # a line per Python block, per command
    assert (folder / "run.json").is_file()  # the record_run fragment wrote its trace
    assert (folder / "cache" / "runs.sqlite").is_file()  # the durable run's checkpoints


# --- against the embedded engine -----------------------------------------------------------------------


@pytest.fixture
def engine_world(engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path]:
    """The session's engine as a user's ``pacore engine up`` engine, and a temporary working folder."""
    from pacore_graph.engine import RunningEngine, default_model_dir
    from pacore_graph.engine.persistent import state_path

    cache = tmp_path / "cache"
    path = state_path(cache)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(RunningEngine.from_process(engine).to_json()))
    work = tmp_path / "work"
    work.mkdir()
    provide_files(work)
    monkeypatch.chdir(work)
    env = shell_env(PACORE_CACHE_DIR=str(cache), PACORE_ENGINE_MODEL_DIR=str(default_model_dir()))
    return env, work


@pytest.mark.engine
def test_readme_blocks_run_on_the_engine(engine, engine_world):
    env, work = engine_world
    replace = {SERVER: engine.base_url}
    shell = [b for b in runnable("engine") if b.lang in SHELL]
    timings = run_shell_blocks(shell, work, env, replace, bound=ENGINE_TIME_BOUND)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    clients: list[Any] = []
    try:
        python = [b for b in runnable("engine") if b.lang == "python"]
        timings += run_python_blocks(python, namespace, replace, clients, bound=ENGINE_TIME_BOUND)
    finally:
        close_clients(clients)
    assert timings


@pytest.mark.engine
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_as_a_script_on_the_engine(engine, engine_world, path):
    env, work = engine_world
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=work,
        env={**env, "PACORE_BASE_URL": engine.base_url},
        capture_output=True,
        text=True,
        timeout=ENGINE_TIME_BOUND,
    )
    report(f"{path.name} on the engine: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
