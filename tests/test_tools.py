"""Program extraction, test-result evidence, and the LangChain tools (code runner, deep_reason)."""

import json

import pytest
from langchain_core.tools import BaseTool

from pacore_graph import build_pacore_graph
from pacore_graph.testing import FunctionBackend
from pacore_graph.tools import (
    NO_PROGRAM,
    SandboxLimits,
    TestCase,
    TestOutcome,
    TestReport,
    describe_report,
    extract_program,
    make_code_runner_tool,
    make_deep_reason_tool,
)


@pytest.mark.parametrize(
    ("text", "program"),
    [
        ("```python\nprint(1)\n```\nthen\n```python\nprint(2)\n```\ndone", "print(2)\n"),
        ("```python\nprint(1)\n```\n```text\noutput\n```", "print(1)\n"),  # a python fence beats a later other
        ("```\nprint(3)\n```", "print(3)\n"),  # untagged
        ("```cpp\nint main(){}\n```", "int main(){}\n"),  # no python fence: the last fence
        ("```py\nx = 1\nprint(x)\n```", "x = 1\nprint(x)\n"),
        ("~~~python\nprint(4)\n~~~", "print(4)\n"),
        ("````python\nprint('```')\n````", "print('```')\n"),  # a longer fence may contain a shorter one
        ("I write:\n```python\nprint(5)\nprint(6)", "print(5)\nprint(6)\n"),  # cut off before closing
        ("```Python title=sol.py\nprint(7)\n```", "print(7)\n"),
        ("The answer is 3.", None),
        ("```python\n\n```", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_program(text, program):
    assert extract_program(text) == program


def test_describe_report():
    report = TestReport(
        outcomes=[
            TestOutcome(input="1 2\n", expected="3\n", actual="3\n", passed=True),
            TestOutcome(input="10 1\n", expected="11\n", actual="9 \n", passed=False),
            TestOutcome(input="x\n", expected="y\n", actual="", passed=False, error="timed out"),
            TestOutcome(input="z\n", expected="w\n", actual="", passed=False, error="exit code 1"),
        ]
    )
    assert describe_report(report) == (
        "passed 1/4 sample tests; failed on input '10 1': expected '11', got '9'; "
        "failed on input 'x': expected 'y', error: timed out; 1 more failed"
    )
    assert describe_report(TestReport(outcomes=[])) == "no sample tests to run"
    assert "no program found" in NO_PROGRAM


async def test_code_runner_tool_runs_in_the_sandbox(monkeypatch):
    monkeypatch.setenv("PACORE_FAKE_SECRET", "tool-secret")
    tool = make_code_runner_tool(SandboxLimits(wall_seconds=5), max_chars=50)
    assert isinstance(tool, BaseTool)
    assert tool.name == "run_python"
    assert set(tool.args) == {"code", "stdin"}
    result = json.loads(
        await tool.ainvoke(
            {
                "code": "import os\nprint(input()[::-1], os.environ.get('PACORE_FAKE_SECRET'))\n" + "print('x' * 500)",
                "stdin": "olleh\n",
            }
        )
    )
    assert result["stdout"].startswith("hello None\n")
    assert len(result["stdout"]) == 50
    assert result["exit_code"] == 0
    assert set(result) == {
        "stdout",
        "stderr",
        "exit_code",
        "timed_out",
        "memory_exceeded",
        "output_truncated",
        "network_isolated",
    }


async def test_deep_reason_tool_runs_pacore():
    backend = FunctionBackend(lambda messages, params: "<think>17*23 = 391</think> 391 ")
    tool = make_deep_reason_tool(build_pacore_graph(backend, [3]))
    assert tool.name == "deep_reason"
    assert set(tool.args) == {"problem"}
    assert await tool.ainvoke({"problem": "What is 17 * 23?"}) == "391"
    assert len(backend.calls) == 4
    assert backend.calls[0].last_user_content == "What is 17 * 23?"


def test_test_case_requires_an_output():
    with pytest.raises(ValueError):
        TestCase(input="1")


async def test_code_runner_tool_takes_any_text():
    tool = make_code_runner_tool(SandboxLimits(wall_seconds=5))
    for code, stdin in (("print('\udcff')\x00", "\ud800"), ("import sys\nprint(sys.stdin.read())", "\udc80\x00\ufffe")):
        result = json.loads(await tool.ainvoke({"code": code, "stdin": stdin}))
        assert isinstance(result["exit_code"], int)
