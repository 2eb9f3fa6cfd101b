"""Programs in model output: find the final program in markdown fences, and state test results as evidence.

:func:`extract_program` picks the program a response ends with:

1. the last fence tagged ``python`` (also ``py``, ``python3``);
2. else the last fence of any other kind (untagged included);
3. else an unclosed fence at the end (a response cut off mid-program), tagged python or untagged;
4. else ``None``: there is no program, which callers report as such rather than run the prose.

:func:`describe_report` turns a :class:`~pacore_graph.tools.sandbox.TestReport` into one short paragraph a
model can reason over: ``passed 2/3 sample tests; failed on input '10 1': expected '11', got '9'``.
"""

from __future__ import annotations

import re

from .sandbox import TestReport, normalize_output

__all__ = ["NO_PROGRAM", "describe_report", "extract_program"]

#: What a verification says about a response without a program.
NO_PROGRAM = "no program found (no ``` code fence in the response)"

_PYTHON_TAGS = {"python", "py", "python3"}
# An opening fence at a line start, its info string, the body, and a closing fence at a line start.
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\n`]*)\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_OPEN_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\n`]*)\n", re.MULTILINE)


def _tag(info: str) -> str:
    return info.strip().split(maxsplit=1)[0].lower() if info.strip() else ""


def extract_program(text: str | None) -> str | None:
    """The final program in ``text`` (see the module docstring for the rules), or None if there is none."""
    if not text:
        return None
    fences = [(_tag(m.group(2)), m.group(3)) for m in _FENCE.finditer(text)]
    python = [body for tag, body in fences if tag in _PYTHON_TAGS]
    chosen = python[-1] if python else (fences[-1][1] if fences else None)
    if chosen is None:
        end_of_closed = 0
        for match in _FENCE.finditer(text):
            end_of_closed = match.end()
        opened = [m for m in _OPEN_FENCE.finditer(text, end_of_closed) if _tag(m.group(2)) in _PYTHON_TAGS | {""}]
        if opened:
            chosen = text[opened[-1].end() :]
    if chosen is None or not chosen.strip():
        return None
    return chosen.rstrip() + "\n"


def _show(text: str, limit: int) -> str:
    """A short, single-line ``repr`` of a test's text for the evidence line."""
    shown = normalize_output(text)
    if len(shown) > limit:
        shown = shown[:limit] + "…"
    return repr(shown)


def describe_report(report: TestReport, *, max_failures: int = 2, limit: int = 80) -> str:
    """One paragraph: how many sample tests passed and, for the first failures, input, expected and actual."""
    if not report.outcomes:
        return "no sample tests to run"
    summary = f"passed {report.passed}/{report.total} sample tests"
    failures = [outcome for outcome in report.outcomes if not outcome.passed]
    parts = [summary]
    for outcome in failures[:max_failures]:
        got = f"error: {outcome.error}" if outcome.error else f"got {_show(outcome.actual, limit)}"
        parts.append(f"failed on input {_show(outcome.input, limit)}: expected {_show(outcome.expected, limit)}, {got}")
    if len(failures) > max_failures:
        parts.append(f"{len(failures) - max_failures} more failed")
    return "; ".join(parts)
