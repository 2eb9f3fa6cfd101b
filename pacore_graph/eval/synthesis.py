"""Synthesis diagnostics (the paper's §4): what the final synthesis did with the references it saw.

The references come from the run's own events, not from a second pass: the ``messages`` of the last
:class:`~pacore_graph.events.RoundCompacted` (the last parallel round) are what the final synthesis was shown,
numbered from 1 in that order. When the final round had to trim references to fit the context
(``RoundStarted.trimmed``), only those whose text is in the synthesis prompt count. Each reference is graded with
the run's grader, so "right" means the same for references and syntheses.

Per run (:class:`SynthesisView`, stored on the eval record), and per graph (:class:`SynthesisDiagnostics`):

* **reference accuracy**: right references over all references the final syntheses saw; **synthesis accuracy**:
  right syntheses over syntheses.
* **emergent correctness**: of the syntheses whose every reference was wrong, the share that is right.
* **majority override**: of the syntheses with an answer whose references had a majority answer (a vote over the
  references' extracted answers; ties go to the first reference, as in :func:`~pacore_graph.extract.majority_vote`),
  the share whose answer differs from it, split into right and wrong.
* **cross-referencing**: the share of syntheses whose text (content and reasoning) cites a reference by number,
  matched by :data:`pacore_graph.prompts.CITATION_PATTERNS` (case-insensitive): "Reference 3", "reference #2", "Ref. 1",
  "Response 2", "response no. 4", "References 1 and 3", "responses 1, 2 and 4". Only numbers from 1 to the number
  of references shown count, so "response 200" in a 4-reference prompt does not.
* **solipsism**: of the syntheses with an answer, the share whose answer matches none of its references' answers.

Answers are compared with the grader's ``same_answer`` (math-verify for math), else after
:func:`~pacore_graph.extract.normalize_answer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.grading import Grade, Grader, grade_async, same_answer
from pacore_graph.extract import majority_vote
from pacore_graph.prompts import CITATION_PATTERNS, cited_references

__all__ = [
    "CITATION_PATTERNS",
    "SynthesisDiagnostics",
    "SynthesisView",
    "cited_references",
    "diagnose",
    "synthesis_table",
    "view_synthesis",
]


class SynthesisView(BaseModel):
    """What one final synthesis saw and did: its references' answers and grades, and what it cited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference_answers: list[str | None]
    reference_correct: list[bool]
    majority: str | None  # the references' majority answer (normalized); None when none had an answer
    agrees_with_majority: bool | None  # None: no majority, or the synthesis gave no answer
    matches_a_reference: bool | None  # None: the synthesis gave no answer
    cited: list[int]

    @property
    def references(self) -> int:
        """How many references the synthesis saw."""
        return len(self.reference_answers)


async def view_synthesis(
    grader: Grader,
    problem: Problem,
    references: Sequence[str],
    synthesis: Grade,
    text: str,
) -> SynthesisView:
    """Grade the ``references`` a synthesis saw and relate them to its grade and its ``text``."""
    grades = [await grade_async(grader, problem, reference) for reference in references]
    answers = [g.extracted for g in grades]
    vote = majority_vote(answers)
    answer = synthesis.extracted
    agrees = None if vote.answer is None or answer is None else same_answer(grader, problem, answer, vote.answer)
    matches = None if answer is None else any(same_answer(grader, problem, answer, a) for a in answers)
    return SynthesisView(
        reference_answers=answers,
        reference_correct=[g.correct for g in grades],
        majority=vote.answer,
        agrees_with_majority=agrees,
        matches_a_reference=matches,
        cited=cited_references(text, len(references)),
    )


class SynthesisDiagnostics(BaseModel):
    """The synthesis diagnostics of one graph over its runs (see the module docstring); rates are None on 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    syntheses: int
    references: int
    references_right: int
    reference_accuracy: float | None
    syntheses_right: int
    synthesis_accuracy: float | None
    all_references_wrong: int
    emergent_right: int
    emergent_correctness: float | None
    with_majority: int
    override_right: int
    override_wrong: int
    majority_override: float | None
    cross_referencing_count: int
    cross_referencing: float | None
    answered: int
    solipsistic: int
    solipsism: float | None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def diagnose(records: Sequence[Any]) -> SynthesisDiagnostics | None:
    """The diagnostics over ``records`` (eval records) that have a synthesis view; None when none has one."""
    views = [(r.synthesis, r.correct) for r in records if getattr(r, "synthesis", None) is not None]
    if not views:
        return None
    references = sum(v.references for v, _ in views)
    references_right = sum(sum(v.reference_correct) for v, _ in views)
    right = sum(correct for _, correct in views)
    all_wrong = [(v, c) for v, c in views if v.references and not any(v.reference_correct)]
    emergent = sum(c for _, c in all_wrong)
    with_majority = [(v, c) for v, c in views if v.agrees_with_majority is not None]
    overrides = [(v, c) for v, c in with_majority if not v.agrees_with_majority]
    override_right = sum(c for _, c in overrides)
    cross = sum(bool(v.cited) for v, _ in views)
    answered = [v for v, _ in views if v.matches_a_reference is not None]
    solipsistic = sum(not v.matches_a_reference for v in answered)
    return SynthesisDiagnostics(
        syntheses=len(views),
        references=references,
        references_right=references_right,
        reference_accuracy=_rate(references_right, references),
        syntheses_right=right,
        synthesis_accuracy=_rate(right, len(views)),
        all_references_wrong=len(all_wrong),
        emergent_right=emergent,
        emergent_correctness=_rate(emergent, len(all_wrong)),
        with_majority=len(with_majority),
        override_right=override_right,
        override_wrong=len(overrides) - override_right,
        majority_override=_rate(len(overrides), len(with_majority)),
        cross_referencing_count=cross,
        cross_referencing=_rate(cross, len(views)),
        answered=len(answered),
        solipsistic=solipsistic,
        solipsism=_rate(solipsistic, len(answered)),
    )


def _cell(rate: float | None, part: int, whole: int) -> str:
    return f"{'–' if rate is None else f'{100 * rate:.1f}'} ({part}/{whole})"


def synthesis_table(rows: Sequence[tuple[str, SynthesisDiagnostics]]) -> str:
    """The diagnostics of each graph as a markdown table, each rate with its count (part/whole)."""
    lines = [
        "| graph | reference acc % | synthesis acc % | emergent correctness % | majority override % "
        "(right / wrong) | cross-referencing % | solipsism % |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, d in rows:
        lines.append(
            f"| {label} | {_cell(d.reference_accuracy, d.references_right, d.references)} "
            f"| {_cell(d.synthesis_accuracy, d.syntheses_right, d.syntheses)} "
            f"| {_cell(d.emergent_correctness, d.emergent_right, d.all_references_wrong)} "
            f"| {_cell(d.majority_override, d.override_right + d.override_wrong, d.with_majority)} "
            f"({d.override_right} / {d.override_wrong}) "
            f"| {_cell(d.cross_referencing, d.cross_referencing_count, d.syntheses)} "
            f"| {_cell(d.solipsism, d.solipsistic, d.answered)} |"
        )
    return "\n".join(lines) + "\n"
