"""The graph's state: plain JSON-ready data holding only what the next step needs.

Full transcripts (content with reasoning, request bodies) never enter the state, so checkpoints stay small;
an explorer keeps only its trajectory's conclusion and the numbers the round table needs. The one exception
is the "no compaction" ablation (``CompactionPolicy(keep="full")``), which forwards whole trajectories and so
must carry them (``Trajectory.full_text``).

The schemas are ``typing_extensions.TypedDict`` (not ``typing``'s), which pydantic needs on Python < 3.12 to
build the graphs' input, output and context JSON schemas (``graph.get_input_jsonschema()``, LangGraph Studio).

Input and output keys of the PaCoRe graphs:

* in: ``problem`` (a one-off question: x is that text alone) or ``messages`` (a chat turn: x is the thread's
  messages plus the new ones, merged by LangGraph's ``add_messages``, so a parent ``MessagesState`` graph or a
  second turn on a checkpointed thread is a multi-turn conversation);
* out: ``answer``, ``finish_reason``, ``usage`` (this run's: every run starts afresh), and ``messages``: when the
  input was ``messages``, the conversation with the answer appended as an ``AIMessage`` (usage in its
  ``usage_metadata``); after a ``problem``, the thread's messages as they were (empty on a fresh thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NotRequired

from typing_extensions import TypedDict

from pacore_graph.errors import ConfigError

__all__ = [
    "PaCoReContext",
    "PaCoReInput",
    "PaCoReOutput",
    "PaCoReState",
    "RoundStats",
    "Trajectory",
    "UsageSummary",
    "VoteOutput",
    "add_conversation",
]


def add_conversation(left: Sequence[Any] | None, right: Sequence[Any] | Any) -> list[Any]:
    """The ``messages`` reducer: LangGraph's ``add_messages`` (append, or replace by id).

    Messages are OpenAI dicts (``{"role": "user", "content": ...}``), LangChain messages or their dict form. An
    OpenAI message LangChain cannot represent (a tool call whose arguments are not a JSON object, as a weak model
    may write them) is kept as the dict it is, appended without the id rules, so the conversation reaches the model
    server unchanged; anything that is not a chat message at all is a :class:`~pacore_graph.errors.ConfigError`
    raised before any request is sent.
    """
    from langchain_core.messages import BaseMessage
    from langgraph.graph.message import add_messages  # imported here: this module loads with the light core

    try:
        return list(add_messages(list(left or []), right))  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        incoming = list(right) if isinstance(right, Sequence) and not isinstance(right, str | dict) else [right]
        everything = [*(left or []), *incoming]
        if all(
            isinstance(m, BaseMessage) or (isinstance(m, dict) and isinstance(m.get("role"), str)) for m in everything
        ):
            return everything
        raise ConfigError(
            f"invalid chat message in messages ({exc}); each message needs a 'role' and a 'content', "
            "e.g. {'role': 'user', 'content': '...'}"
        ) from exc


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
    :mod:`pacore_graph.tool_calls`).

    ``problem`` wins when both are given. On a checkpointed thread, ``messages`` are added to the thread's
    (send only the new turn); a ``problem`` leaves the thread's messages as they are.
    """

    problem: str
    messages: Annotated[list[Any], add_conversation]
    tools: list[dict[str, Any]]
    tool_choice: Any
    parallel_tool_calls: bool


class PaCoReOutput(TypedDict):
    """Graph output: the synthesized answer, how the final trajectory ended, and the usage of the run; with
    tools, the tool calls the synthesis made (OpenAI form; ``[]`` when it answered in text).

    ``messages``, for a ``messages`` input, is the conversation with the answer appended as an ``AIMessage``
    (``usage_metadata``: the run's token totals; ``response_metadata``: ``finish_reason`` and ``usage``), so a
    parent ``MessagesState`` graph gets the answer as its next message; a ``problem`` leaves it as it was.
    """

    answer: str
    finish_reason: str
    usage: UsageSummary
    tool_calls: NotRequired[list[dict[str, Any]]]
    messages: NotRequired[Annotated[list[Any], add_conversation]]


class VoteOutput(PaCoReOutput):
    """Output of a voting graph (self-consistency): also the tally, answer → votes, most votes first."""

    votes: dict[str, int]


class PaCoReState(TypedDict):
    """The full graph state: the problem x, the round r, M_{r-1}, the round's prompt and Ω_r, and the result.

    Every key is overwritten, none appended to, so a run started on a thread that already ran starts afresh
    (``prepare`` resets them) and a checkpoint holds one copy of each.
    """

    problem: NotRequired[str | None]  # this run's one-off question; prepare consumes it (sets None)
    messages: NotRequired[Annotated[list[Any], add_conversation]]  # the thread's conversation
    reply_in_messages: NotRequired[bool]  # the input was messages: the answer is appended to them
    tools: NotRequired[list[dict[str, Any]]]
    tool_choice: NotRequired[Any]
    parallel_tool_calls: NotRequired[bool]
    tool_fields: NotRequired[dict[str, Any]]  # the checked tools, as sent with every request ({} without tools)
    conversation: list[dict[str, Any]]  # x: the problem as chat messages
    round: int  # the round being run, 1-based; len(schedule) + 1 is the final synthesis
    run_order: NotRequired[int]  # when the run started (ns since the epoch): a shared client serves older runs first
    references: list[str]  # M_{r-1}
    prompt: list[dict[str, Any]]  # P(x, M_{r-1}), fitted to the budget: stored once per round
    budget: NotRequired[int | None]  # the round's max_tokens (plan: what fits, see budget.py); None: as sampled
    omega: list[Trajectory]  # Ω_r, in index order
    rounds: list[RoundStats]  # the finished rounds' rows
    answer: str
    finish_reason: str
    usage: UsageSummary
    votes: NotRequired[dict[str, int]]  # set by the voter node only
    tool_calls: NotRequired[list[dict[str, Any]]]  # the synthesis's tool calls, set by the synthesizer


class PaCoReContext(TypedDict, total=False):
    """Per-run settings, passed as LangGraph's runtime context (``graph.invoke(inputs, context={...})``).

    The keys are the :class:`~pacore_graph.overrides.Overrides` options, applied to the graph's settings with
    :meth:`PaCoReConfig.with_overrides <pacore_graph.PaCoReConfig.with_overrides>` (the one override path, so a
    bad value is the same :class:`~pacore_graph.errors.ConfigError` as on the command line). One compiled graph
    serves every configuration; LangGraph Studio shows this schema as the run's context form.
    """

    schedule: str | list[int] | int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: list[str]
    truncated: str
    empty: str
    max_prompt_chars: int
    max_model_len: int
    max_request_bytes: int
    min_trajectories: int
    min_fraction: float
    straggler_grace: float
    n_batch: int
    presence_penalty: float
    frequency_penalty: float
    response_format: Any
