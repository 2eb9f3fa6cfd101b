"""Answer extraction and majority voting: pure functions over a trajectory's conclusion.

* **Boxed first.** The answer is the content of the *last* ``\\boxed{...}`` (braces may nest, as in
  ``\\boxed{\\frac{1}{2}}``). An unbalanced ``\\boxed{`` (a reply cut off mid-answer) is skipped in favour of an
  earlier, complete one.
* **Then a fallback.** With no box, the last match of the first fallback pattern that matches anywhere
  (default: "The answer is ...", "The answer to the problem is ..." / "Final answer: ...") is used. Fallbacks
  are regular expressions whose first group is the answer; :class:`ExtractionPolicy` sets them, and an empty
  list turns them off.
* **No answer is ``None``**, never an empty string, so "the model answered nothing" and "the model answered
  ''" cannot be confused.

:func:`majority_vote` counts extracted answers after a light normalization (:func:`normalize_answer`), so
``$391$`` and ``391.`` vote together. Ties go to the answer that reached the winning count first, in
trajectory order, which keeps votes reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BOXED_COMMAND",
    "DEFAULT_FALLBACK_PATTERNS",
    "ExtractionPolicy",
    "Vote",
    "extract_answer",
    "extract_boxed",
    "majority_vote",
    "normalize_answer",
]

BOXED_COMMAND = "\\boxed"

#: "The answer is 391." / "The answer to the problem is 391." / "**Final answer:** 391": the rest of the line after
#: the phrase. "to the problem" is one of a few fixed objects, so "the answer to 3 + 4 is" is not read as "is".
DEFAULT_FALLBACK_PATTERNS: tuple[str, ...] = (
    r"(?im)(?:the\s+)?(?:final\s+)?answer(?:\s+to\s+(?:the|this|your|our)\s+(?:problem|question|puzzle|exercise))?"
    r"\s+is\s*[:=]?\s*(.+?)\s*$",
    r"(?im)final\s+answer\s*\**\s*[:=]\s*\**\s*(.+?)\s*$",
)


def _balanced_group(text: str, open_index: int) -> str | None:
    """The text inside the braces opening at ``open_index``, or None if they never close."""
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` in ``text`` (nested braces allowed), else None."""
    position = len(text)
    while (start := text.rfind(BOXED_COMMAND, 0, position)) >= 0:
        position = start
        brace = start + len(BOXED_COMMAND)
        while brace < len(text) and text[brace] == " ":
            brace += 1
        if brace < len(text) and text[brace] == "{":
            inner = _balanced_group(text, brace)
            if inner is not None:
                return inner.strip()
    return None


def _clean_fallback(answer: str) -> str:
    # "**391**." and "$391$." are the same answer as "391".
    answer = answer.strip().strip("*").strip()
    answer = answer.rstrip(".").strip().strip("*").strip()  # "**391**." too
    if len(answer) >= 2 and answer[0] == answer[-1] == "$":
        answer = answer[1:-1].strip()
    return answer


class ExtractionPolicy(BaseModel):
    """How an answer is read from a conclusion: ``boxed`` first (if on), then each fallback pattern in order.

    Each fallback is a regular expression with at least one group; group 1 of its last match is the answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    boxed: bool = True
    fallback: tuple[str, ...] = Field(default=DEFAULT_FALLBACK_PATTERNS)

    @field_validator("fallback")
    @classmethod
    def _compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"fallback pattern {pattern!r} is not a valid regular expression: {exc}") from exc
            if compiled.groups < 1:
                raise ValueError(f"fallback pattern {pattern!r} needs a group, e.g. 'answer is (.+)'")
        return patterns


def extract_answer(text: str | None, policy: ExtractionPolicy | None = None) -> str | None:
    """The answer in ``text`` per ``policy`` (see the module docstring); None when there is none."""
    if not text:
        return None
    policy = policy or ExtractionPolicy()
    if policy.boxed:
        boxed = extract_boxed(text)
        if boxed:
            return boxed
    for pattern in policy.fallback:
        matches = list(re.finditer(pattern, text))
        if matches:
            answer = _clean_fallback(matches[-1].group(1) or "")
            if answer:
                return answer
    return None


def normalize_answer(answer: str) -> str:
    """The key two answers are compared by: outer ``$`` and a trailing period removed, whitespace collapsed."""
    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] == "$":
        text = text[1:-1]
    return " ".join(text.rstrip(".").split())


class Vote(BaseModel):
    """The outcome of a majority vote.

    ``answer`` is the winning normalized answer (None when no voter had an answer); ``tally`` counts each
    answer, most votes first; ``winner_index`` is the position of the first voter that gave the winner;
    ``abstained`` counts voters with no answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: str | None
    tally: dict[str, int]
    winner_index: int | None
    abstained: int


def majority_vote(answers: Iterable[str | None]) -> Vote:
    """Majority vote over extracted answers (None abstains); ties go to the answer that got there first."""
    counts: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    best: str | None = None
    abstained = 0
    for index, answer in enumerate(answers):
        if answer is None:
            abstained += 1
            continue
        key = normalize_answer(answer)
        counts[key] = counts.get(key, 0) + 1
        first_seen.setdefault(key, index)
        # Strictly more votes to take the lead, so the earlier answer wins a tie.
        if best is None or counts[key] > counts[best]:
            best = key
    tally = dict(sorted(counts.items(), key=lambda item: (-item[1], first_seen[item[0]])))
    return Vote(
        answer=best,
        tally=tally,
        winner_index=first_seen[best] if best is not None else None,
        abstained=abstained,
    )
