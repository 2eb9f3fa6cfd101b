"""One training episode: a problem presented with |M| references drawn from its message pool."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Domain", "Episode"]

Domain = Literal["math", "code"]
"""What grades an episode: math-verify on the final answer, or the code grader on the final program."""


class Episode(BaseModel):
    """One synthesis task: the conversation ending in P(x, M), and what grades the policy's answer.

    ``prompt`` is the chat conversation the policy continues: the problem's messages with the last user message
    replaced by the official template over the sampled references (non-text parts such as images kept after the
    text, as at inference). ``answer`` is the reference answer for math, or the code problem's tests as JSON.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem_id: str
    domain: Domain = "math"
    prompt: list[dict[str, Any]] = Field(min_length=1)
    answer: str
    slots: list[int] = Field(description="The pool slots of the references, in the order they appear.")
    message_accuracy: float = Field(ge=0.0, le=1.0, description="Mean correctness of the problem's whole pool.")
    stage: Literal[1, 2] = 1
    index: int = Field(default=0, ge=0, description="Which of the problem's episodes this is.")

    @property
    def num_messages(self) -> int:
        """|M|, the number of references in the prompt."""
        return len(self.slots)
