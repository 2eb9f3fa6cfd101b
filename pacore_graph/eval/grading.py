"""Grading: is a graph's answer right? A small protocol, and the math grader (math-verify).

A :class:`Grader` gets the problem and the graph's answer text and returns a :class:`Grade`. The math grader
reads the answer the way the voting graphs do (the last ``\\boxed{...}``, else "The answer is ..."), falls back to
math-verify's own extraction over the whole text, and compares with math-verify; there is no hand-written
equivalence. Code tasks can plug in a grader that runs tests.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.extract import ExtractionPolicy, extract_answer

__all__ = ["EVAL_INSTALL_HINT", "Grade", "Grader", "MathVerifyGrader", "MissingExtraError", "require_eval_extras"]

#: How to install what ``pacore eval`` needs beyond the core.
EVAL_INSTALL_HINT = "pip install 'pacore-graph[eval]'  (math-verify and matplotlib)"


class MissingExtraError(ConfigError):
    """An optional dependency of the evaluation harness is not installed."""


def require_eval_extras() -> None:
    """Fail with the install hint unless math-verify and matplotlib import."""
    missing = []
    for module in ("math_verify", "matplotlib"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtraError(f"pacore eval needs {', '.join(missing)}: {EVAL_INSTALL_HINT}")


class Grade(BaseModel):
    """The verdict on one answer: right or not, and the answer as the grader read it (None: no answer found)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    correct: bool
    extracted: str | None


@runtime_checkable
class Grader(Protocol):
    """Decides whether an answer solves a problem. Called from the event loop's thread."""

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Grade ``answer`` (the graph's final text, or None when the run produced none) for ``problem``."""
        ...


class MathVerifyGrader:
    """Math answers compared with math-verify (``parse`` + ``verify``) against the reference answer."""

    def __init__(self, extraction: ExtractionPolicy | None = None) -> None:
        try:
            # Through importlib: math-verify ships no type information.
            self._math_verify: Any = importlib.import_module("math_verify")
        except ImportError as exc:
            raise MissingExtraError(f"grading math answers needs math-verify: {EVAL_INSTALL_HINT}") from exc
        self.extraction = extraction or ExtractionPolicy()
        self._gold: dict[str, Any] = {}

    def _parse(self, text: str) -> Any:
        parsed = self._math_verify.parse(text)
        if not parsed and not text.lstrip().startswith("$"):
            parsed = self._math_verify.parse(f"${text}$")  # bare LaTeX such as \frac{1}{2}
        return parsed

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Right when math-verify finds the extracted answer equal to the reference answer."""
        if not answer:
            return Grade(correct=False, extracted=None)
        gold = self._gold.get(problem.id)
        if gold is None:
            gold = self._gold[problem.id] = self._parse(problem.answer)
        extracted = extract_answer(answer, self.extraction)
        predicted = self._parse(extracted) if extracted else []
        if not predicted:
            predicted = self._math_verify.parse(answer)  # its own extraction: boxed, then the last expression
        if not predicted:
            return Grade(correct=False, extracted=extracted)
        shown = extracted if extracted is not None else str(predicted[-1])
        return Grade(correct=bool(self._math_verify.verify(gold, predicted)), extracted=shown)
