"""The graph's state: plain JSON-ready data holding only what the next step needs.

Full transcripts (content with reasoning, request bodies) never enter the state, so checkpoints stay small;
an explorer keeps only its trajectory's conclusion and the numbers the round table needs. The one exception
is the "no compaction" ablation (``CompactionPolicy(keep="full")``), which forwards whole trajectories and so
must carry them (``Trajectory.full_text``).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

__all__ = [
    "PaCoReInput",
    "PaCoReOutput",
    "PaCoReState",
    "RoundStats",
    "Trajectory",
    "UsageSummary",
    "VoteOutput",
]


class Trajectory(TypedDict):
    """One sampled trajectory, already reduced to what compaction needs."""

    round: int
    index: int
    conclusion: str
    content_chars: int
    finish_reason: str
    cut_mid_thought: bool
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    started_at: float
    full_text: NotRequired[str]  # only with CompactionPolicy(keep="full")
    error: NotRequired[str]  # set when the request failed and the FailurePolicy allowed it: a failed marker
    tool_calls: NotRequired[list[dict[str, Any]]]  # the calls it proposed (OpenAI form), when it proposed any


#: One row of the round table as the state holds it: a :class:`~pacore_graph.result.RoundRow`, dumped to JSON
#: (``RoundRow(...).model_dump()``), so the fields are declared once and checkpoints hold plain data.
RoundStats = dict[str, Any]

#: A run's token totals (a :class:`~pacore_graph.result.RunUsage`, dumped) plus ``rounds``, its RoundStats rows.
UsageSummary = dict[str, Any]


class PaCoReInput(TypedDict, total=False):
    """Graph input: a ``problem`` string, or chat ``messages`` (OpenAI dicts or LangChain messages); optionally
    OpenAI ``tools``, ``tool_choice`` and ``parallel_tool_calls``, sent with every request of the run (see
    :mod:`pacore_graph.tool_calls`)."""

    problem: str
    messages: list[Any]
    tools: list[dict[str, Any]]
    tool_choice: Any
    parallel_tool_calls: bool


class PaCoReOutput(TypedDict):
    """Graph output: the synthesized answer, how the final trajectory ended, and the usage of the run; with
    tools, the tool calls the synthesis made (OpenAI form; ``[]`` when it answered in text)."""

    answer: str
    finish_reason: str
    usage: UsageSummary
    tool_calls: NotRequired[list[dict[str, Any]]]


class VoteOutput(PaCoReOutput):
    """Output of a voting graph (self-consistency): also the tally, answer → votes, most votes first."""

    votes: dict[str, int]


class PaCoReState(TypedDict):
    """The full graph state: the problem x, the round r, M_{r-1}, the round's prompt and Ω_r, and the result.

    Every key is overwritten, none appended to, so a run started on a thread that already ran starts afresh
    (``prepare`` resets them) and a checkpoint holds one copy of each.
    """

    problem: NotRequired[str]
    messages: NotRequired[list[Any]]
    tools: NotRequired[list[dict[str, Any]]]
    tool_choice: NotRequired[Any]
    parallel_tool_calls: NotRequired[bool]
    tool_fields: NotRequired[dict[str, Any]]  # the checked tools, as sent with every request ({} without tools)
    conversation: list[dict[str, Any]]  # x: the problem as chat messages
    round: int  # the round being run, 1-based; len(schedule) + 1 is the final synthesis
    references: list[str]  # M_{r-1}
    prompt: list[dict[str, Any]]  # P(x, M_{r-1}), fitted to the budget: stored once per round
    omega: list[Trajectory]  # Ω_r, in index order
    rounds: list[RoundStats]  # the finished rounds' rows
    answer: str
    finish_reason: str
    usage: UsageSummary
    votes: NotRequired[dict[str, int]]  # set by the voter node only
    tool_calls: NotRequired[list[dict[str, Any]]]  # the synthesis's tool calls, set by the synthesizer
