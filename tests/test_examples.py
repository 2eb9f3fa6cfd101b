"""Every file in examples/ runs against the in-process fake backend."""

import importlib.util
from pathlib import Path

import pytest

from pacore_graph.testing import FunctionBackend

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_example_runs_against_the_fake_backend(path):
    backend = FunctionBackend(lambda messages, params: "<think>17*23 = 391</think>391")
    result = await load(path).main(backend)
    assert "391" in result
    assert backend.calls, "the example must call the model"


async def test_subgraph_example_feeds_pacore_and_uses_its_answer():
    backend = FunctionBackend(lambda messages, params: "<think>carry the 2</think> 391 ")
    report = await load(Path(__file__).parent.parent / "examples" / "pacore_as_subgraph.py").main(backend)
    assert report == "17 * 23 = 391"
    assert len(backend.calls) == 3
    assert backend.calls[0].last_user_content == "Compute 17 * 23. Give the final number only."
