"""Every file in examples/ runs against the in-process fake backend, and as a script against the fake server.

tests/integration/test_readme_snippets.py runs them as scripts on the embedded engine too; the training example
trains a real model instead (tests/test_training_trl.py runs it).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest, FunctionBackend

# The training example trains a real model, not a graph against a backend: tests/test_training_trl.py runs it.
TRAINING_EXAMPLES = {"train_grpo.py"}
EXAMPLES = sorted(
    p for p in (Path(__file__).parent.parent / "examples").glob("*.py") if p.name not in TRAINING_EXAMPLES
)


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_examples():
    assert EXAMPLES


PRODUCT_PROGRAM = "```python\na, b = map(int, input().split())\nprint(a * b)\n```"


def fake_reply(messages, params):
    """ "391" for a question; a program for a code task (one whose prompt has sample tests)."""
    if "Sample Input" in str(messages[-1].get("content")):
        return f"<think>17*23 = 391</think>Multiply them:\n{PRODUCT_PROGRAM}"
    return "<think>17*23 = 391</think>391"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_example_runs_against_the_fake_backend(path):
    backend = FunctionBackend(fake_reply)
    result = await load(path).main(backend)
    assert "391" in result
    assert backend.calls, "the example must call the model"


async def test_subgraph_example_feeds_pacore_and_uses_its_answer():
    backend = FunctionBackend(lambda messages, params: "<think>carry the 2</think> 391 ")
    report = await load(Path(__file__).parent.parent / "examples" / "pacore_as_subgraph.py").main(backend)
    assert report == "17 * 23 = 391"
    assert len(backend.calls) == 3
    assert backend.calls[0].last_user_content == "Compute 17 * 23. Give the final number only."


async def test_agent_example_calls_pacore_as_a_tool():
    backend = FunctionBackend(lambda messages, params: "<think>17*23 = 391</think> 391 ")
    answer = await load(Path(__file__).parent.parent / "examples" / "pacore_as_agent_tool.py").main(backend)
    assert answer == "After deep reasoning: 391"
    assert len(backend.calls) == 3  # PaCoRe [2]: two explorers and the synthesis
    assert backend.calls[0].last_user_content == "What is 17 * 23?"


async def test_code_verified_example_verifies_and_runs_the_final_program():
    backend = FunctionBackend(fake_reply)
    report = await load(Path(__file__).parent.parent / "examples" / "code_verified.py").main(backend)
    assert report == "final program: passed 2/2 sample tests\n17 23 -> 391 (exit code 0)"
    synthesis = backend.calls[-1].last_user_content
    assert synthesis.count("[Verification of the program above on the sample tests: passed 2/2 sample tests]") == 3


def fake_server_reply(request: FakeRequest) -> FakeReply:
    return FakeReply(content=fake_reply(request.messages, None))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_as_a_script_against_the_fake_server(path, tmp_path):
    """``python examples/X.py`` as the README says, with PACORE_BASE_URL naming the server, within 120 s."""
    with FakeOpenAIServer(fake_server_reply).in_thread() as server:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PACORE_")}
        done = subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            env={**env, "PACORE_BASE_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        requests = len(server.requests)
    assert done.returncode == 0, done.stderr
    assert "391" in done.stdout
    assert requests
