"""Message accuracy: every pool message graded with the eval harness's graders, as an exact fraction per problem.

A message is the text after its trajectory's last ``</think>`` (the pool's compaction), graded by the problem's
category grader (:class:`~pacore_graph.eval.grading.CategoryGrader`: math-verify for math, the sandboxed
:class:`~pacore_graph.eval.code.CodeGrader` for code). A slot that holds no message (an empty conclusion, or a
trajectory cut off mid-thought) counts as wrong: it has no answer. The accuracy of a problem is right slots over
pool slots, kept as a :class:`fractions.Fraction` so the stage thresholds (9/24, 15/24) compare exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from pacore_graph.compaction import conclusion_of
from pacore_graph.eval.grading import Grader, grade_async
from pacore_graph.training.pool import ProblemPool

__all__ = ["PoolGrades", "grade_pool", "grade_text"]


@dataclass(frozen=True)
class PoolGrades:
    """The grades of one problem's pool: which slots are right, and the exact accuracy."""

    correct: list[bool]

    @property
    def right(self) -> int:
        """How many slots hold a right message."""
        return sum(self.correct)

    @property
    def accuracy(self) -> Fraction:
        """Right slots over all slots."""
        return Fraction(self.right, len(self.correct)) if self.correct else Fraction(0)


async def grade_text(grader: Grader, pool: ProblemPool, text: str | None) -> bool:
    """Whether ``text`` answers the pool's problem, graded after its last ``</think>``."""
    if text is None:
        return False
    grade = await grade_async(grader, pool.problem, conclusion_of(text))
    return grade.correct


async def grade_pool(grader: Grader, pool: ProblemPool) -> PoolGrades:
    """Grade every slot of ``pool`` (one at a time: a code grader runs each in the sandbox)."""
    return PoolGrades([await grade_text(grader, pool, message) for message in pool.messages])
