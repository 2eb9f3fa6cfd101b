"""Tools to compose with PaCoRe graphs and agents (installed as ``pacore_graph.tools``).

* :mod:`~pacore_graph.tools.sandbox`: run untrusted, model-written Python with process, network, filesystem
  and resource containment (:func:`run_python`), and against stdin → stdout tests (:func:`run_tests`).
* :mod:`~pacore_graph.tools.programs`: find the final program in a response (:func:`extract_program`) and
  state test results as evidence a model can read (:func:`describe_report`).
* :mod:`~pacore_graph.tools.agent_tools`: LangChain tools: the code runner and ``deep_reason`` (PaCoRe).

Tools import the core only, never a graph module or a face.
"""

from .agent_tools import make_code_runner_tool, make_deep_reason_tool
from .programs import NO_PROGRAM, describe_report, extract_program
from .sandbox import (
    RunResult,
    SandboxCapabilities,
    SandboxLimits,
    TestCase,
    TestOutcome,
    TestReport,
    arun_python,
    arun_tests,
    normalize_output,
    run_python,
    run_tests,
    sandbox_capabilities,
)

__all__ = [
    "NO_PROGRAM",
    "RunResult",
    "SandboxCapabilities",
    "SandboxLimits",
    "TestCase",
    "TestOutcome",
    "TestReport",
    "arun_python",
    "arun_tests",
    "describe_report",
    "extract_program",
    "make_code_runner_tool",
    "make_deep_reason_tool",
    "normalize_output",
    "run_python",
    "run_tests",
    "sandbox_capabilities",
]
