"""The PaCoRe graph's nodes: each turns state into one pure-function call or one round of backend calls.

They are the parts reasoning graphs are assembled from (see ``pacore_graph.graphs``): ``prepare``, the round
planner (``plan``) and its router (``route``), the round's explorers (``explorers``, awaiting one ``explore``
task per trajectory), the compactor (``compact``), the
synthesizer (``synthesize``) and the voter (``vote``). One round::

    plan: fit P(x, M_{r-1}) to the budget, emit RoundStarted  →  explorers: K explore tasks on that prompt
      →  compact: C(Ω_r) → M_r, render P(x, M_r) once, emit RoundCompacted  →  plan ...

The prompt is stored once in the state, not once per explorer. The explorers are LangGraph tasks
(``langgraph.func.task``) awaited by the ``explorers`` node: a task's result is checkpointed as soon as it
returns, and its arguments are not, so a checkpoint grows with K small trajectories, not with K prompts, and a
resumed run re-runs only the explorers that had not finished.

Per-run settings come from LangGraph's runtime context (``graph.ainvoke(inputs, context={"schedule": "8"})``,
:class:`~pacore_graph.state.PaCoReContext`): :attr:`PaCoReNodes.config` is the graph's settings with the run's
context applied through :meth:`PaCoReConfig.with_overrides <pacore_graph.PaCoReConfig.with_overrides>`, so one
compiled graph serves many configurations. Resume a checkpointed run with the context it started with.

The synthesizer reports its call as a LangChain chat-model run (:mod:`pacore_graph.chat_run`), so
``stream_mode="messages"`` and ``astream_events`` carry the answer's tokens, and appends the answer to
``messages`` as an ``AIMessage`` when the input was a conversation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from langgraph.config import get_config
from langgraph.func import task
from langgraph.runtime import get_runtime

from pacore_graph.budget import check_request_size, plan_round
from pacore_graph.chat_run import SynthesisRun, answer_message
from pacore_graph.clients.base import ChatBackend, ChatResult, SamplingParams, TokenUsage
from pacore_graph.clients.limiter import LATER_ROUND_HEAD_START, current_request_priority, request_priority
from pacore_graph.clients.streaming import StreamAccumulator
from pacore_graph.clients.wrapper import supports_streaming
from pacore_graph.compaction import Selection, reduce_completion, reference_text, select
from pacore_graph.config import PaCoReConfig
from pacore_graph.errors import (
    BackendError,
    ConfigError,
    ContextBudgetError,
    EmptyRoundError,
    ProtocolError,
    QuorumError,
)
from pacore_graph.events import (
    EventWriter,
    RoundCompacted,
    RoundStarted,
    RunFinished,
    SynthesisDelta,
    TrajectoryFinished,
    event_writer,
)
from pacore_graph.extract import extract_answer, majority_vote
from pacore_graph.messages import prompt_chars
from pacore_graph.overrides import Overrides
from pacore_graph.prompts import build_prompt, normalize_problem
from pacore_graph.result import RoundRow, RunUsage
from pacore_graph.state import PaCoReState, RoundStats, Trajectory, UsageSummary
from pacore_graph.tool_calls import tool_options, with_tools

__all__ = ["PaCoReNodes", "round_stats", "summarize_usage"]

#: What an explorer task reports besides its trajectories: their full transcripts, keyed by the task's first
#: index. Kept in memory for the ``explorers`` node to stream, never returned (task results are checkpointed).
Transcripts = dict[int, list[TrajectoryFinished]]


def round_stats(
    round_number: int,
    k: int,
    trajectories: Sequence[Trajectory],
    *,
    messages: int,
    dropped_empty: int = 0,
    dropped_truncated: int = 0,
) -> RoundStats:
    """The row of the round table for one finished round; failed markers (``error`` set) count as ``failed``."""
    started = min((t["started_at"] for t in trajectories), default=0.0)
    finished = max((t["started_at"] + t["seconds"] for t in trajectories), default=0.0)
    failed = sum(1 for t in trajectories if "error" in t)
    return RoundRow(
        round=round_number,
        k=k,
        returned=len(trajectories) - failed,
        messages=messages,
        dropped_empty=dropped_empty,
        dropped_truncated=dropped_truncated,
        failed=failed,
        prompt_tokens=sum(t["prompt_tokens"] for t in trajectories),
        completion_tokens=sum(t["completion_tokens"] for t in trajectories),
        seconds=round(finished - started, 3),
    ).model_dump()


def summarize_usage(rounds: Sequence[RoundStats]) -> UsageSummary:
    """Run totals; effective test-time compute is every trajectory's completion tokens, summed."""
    completion = sum(r["completion_tokens"] for r in rounds)
    prompt = sum(r["prompt_tokens"] for r in rounds)
    totals = RunUsage(prompt_tokens=prompt, completion_tokens=completion, effective_ttc_tokens=completion)
    return {**totals.model_dump(), "rounds": list(rounds)}


def queue_order(round_number: int) -> int:
    """Where a request of ``round_number`` made now ranks in a shared client's queue (lower goes first, in ns)."""
    return time.monotonic_ns() - int((round_number - 1) * LATER_ROUND_HEAD_START * 1e9)


async def explore_trajectories(
    nodes: PaCoReNodes,
    prompt: list[dict[str, Any]],
    round_number: int,
    index: int,
    n: int,
    transcripts: Transcripts,
    tool_fields: dict[str, Any] | None = None,
    budget: int | None = None,
    order: int | None = None,
    group: int | None = None,
) -> list[Trajectory]:
    """Trajectories ``index`` .. ``index + n - 1`` of a round (run as the task :data:`explore`)."""
    return await nodes.sample_trajectories(
        prompt, round_number, index, n, transcripts, tool_fields, budget, order, group
    )


#: An explorer as a LangGraph task (named ``explore`` in streamed updates): its result is checkpointed on return.
#: Made from the module-level function rather than with ``@task``, so that LangGraph finds the function under
#: its own name and reuses one runnable for every call: for a decorated function it built a new one per call,
#: with two signature inspections (~0.4 ms an explorer, all spent before a round's first request is sent).
explore: Callable[..., Any] = task(name="explore")(cast(Any, explore_trajectories))


def _budgeted(params: SamplingParams, budget: int | None) -> SamplingParams:
    """``params`` with the round's completion budget (``plan`` set it: what fits; None leaves them as they are)."""
    if budget is None or params.max_tokens == budget:
        return params
    return params.model_copy(update={"max_tokens": budget})


class PaCoReNodes:
    """The node functions of one PaCoRe graph, bound to a backend and a config. They hold no run state."""

    def __init__(self, backend: ChatBackend, config: PaCoReConfig) -> None:
        self.backend = backend
        self.base_config = config
        self._configured: dict[str, PaCoReConfig] = {}  # the settings per distinct run context, validated once

    @property
    def config(self) -> PaCoReConfig:
        """The settings of the current run: the graph's, with the run's context (if any) applied."""
        context = _run_context()
        if not context:
            return self.base_config
        key = json.dumps(context, sort_keys=True, default=str)
        configured = self._configured.get(key)
        if configured is None:
            configured = self.base_config.with_overrides(context)
            if len(self._configured) >= 64:  # a long-lived graph serving many configurations: keep the map small
                self._configured.clear()
            self._configured[key] = configured
        return configured

    def prepare(self, state: PaCoReState) -> dict[str, Any]:
        """Validate the input and turn it into chat messages x; start at round 1 with M_0 = ∅ and P(x, ∅) = x.

        A ``problem`` is this run's question alone; without one, x is the thread's ``messages`` (a parent's
        conversation, or every turn of a checkpointed thread). The problem is consumed (set to None) and the
        previous run's result cleared, so a thread reused for another run starts afresh whichever key it gets.
        The input's tools are checked here, before anything is sent (see :mod:`pacore_graph.tool_calls`).
        """
        _ = self.config  # check the run's context before anything runs
        problem = state.get("problem")
        conversation = normalize_problem(problem if problem is not None else state.get("messages") or [])
        tools = tool_options(state.get("tools"), state.get("tool_choice"), state.get("parallel_tool_calls"))
        return {
            "tool_fields": tools.request_fields() if tools is not None else {},
            "problem": None,
            "reply_in_messages": problem is None,
            "conversation": conversation,
            "round": 1,
            "run_order": time.time_ns(),
            "references": [],
            "prompt": build_prompt(conversation, []),
            "omega": [],
            "rounds": [],
            "answer": None,
            "finish_reason": None,
            "usage": None,
        }

    async def plan(self, state: PaCoReState) -> dict[str, Any]:
        """Fit this round's prompt to the budgets (once), announce the round, and store the fitted prompt.

        Async because fitting the prompt into the context (``max_model_len``) may ask the server to count tokens.
        """
        round_number = state["round"]
        final = self._is_final(round_number)
        params = self.config.final_params if final else self.config.params_for_round(round_number)
        prompt = state["prompt"]
        self._check_budget(prompt, round_number)
        what = self._round_name(round_number)
        prompt, trimmed, tokens, counted, budget = await plan_round(
            self.backend,
            state["conversation"],
            state["references"],
            self.config.template,
            prompt=prompt,
            max_model_len=self.config.max_model_len,
            max_tokens=params.max_tokens,
            token_budget=self.config.token_budget,
            what=what,
        )
        k = 1 if final else self.config.schedule.rounds[round_number - 1]
        size = check_request_size(
            prompt,
            self._requests(k),
            max_request_bytes=self.config.max_request_bytes,
            what=what,
        )
        event_writer()(
            RoundStarted(
                round=round_number,
                k=k,
                final=final,
                prompt_chars=prompt_chars(prompt),
                trimmed=trimmed,
                prompt_tokens=tokens,
                tokens_counted=counted,
                request_bytes=size,
                max_tokens=budget,
            )
        )
        update: dict[str, Any] = {"budget": budget}
        return {**update, "prompt": prompt} if trimmed else update

    def route(self, state: PaCoReState) -> str:
        """After ``plan``: a parallel round goes to the explorers, the last one to the synthesizer."""
        return "synthesize" if self._is_final(state["round"]) else "explorers"

    async def explorers(self, state: PaCoReState) -> dict[str, Any]:
        """Run round r's K explorers on the stored prompt, as LangGraph tasks, and collect Ω_r.

        Failure rules (:class:`~pacore_graph.config.FailurePolicy`): strict (the default), the first failed
        explorer fails the round and its siblings are cancelled and awaited; with a quorum, a failed explorer
        returns a failed marker and the others go on. With ``straggler_grace``, once the quorum has come back the
        round waits that long more, then cancels the explorers still running and records each as failed.
        """
        round_number = state["round"]
        k = self.config.schedule.rounds[round_number - 1]
        batch = self.config.n_batch if self.config.n_batch is not None and self.config.n_batch > 1 else 1
        transcripts: Transcripts = {}
        order = queue_order(round_number)  # the round's place in a shared queue: when it started (see clients.limiter)
        futures: dict[asyncio.Future[list[Trajectory]], int] = {
            # typed as a concurrent future, but inside an async node LangGraph returns an asyncio one
            cast(
                "asyncio.Future[list[Trajectory]]",
                explore(
                    self,
                    state["prompt"],
                    round_number,
                    index,
                    min(batch, k - index),
                    transcripts,
                    state.get("tool_fields"),
                    state.get("budget"),
                    order,
                    state.get("run_order"),
                ),
            ): index
            for index in range(0, k, batch)
        }
        trajectories = await self._collect(futures, state["prompt"], round_number, k, transcripts)
        return {"omega": sorted(trajectories, key=lambda t: t["index"])}

    async def _collect(
        self,
        futures: dict[asyncio.Future[list[Trajectory]], int],
        prompt: list[dict[str, Any]],
        round_number: int,
        k: int,
        transcripts: Transcripts,
    ) -> list[Trajectory]:
        """Await the explorer tasks, streaming each one's transcript as it returns (see ``explorers`` for the rules)."""
        write = event_writer()
        grace = self.config.failure.straggler_grace
        quorum = self.config.failure.quorum(k)
        loop = asyncio.get_running_loop()
        pending = dict(futures)
        trajectories: list[Trajectory] = []
        deadline: float | None = None
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # the straggler grace ran out
                for future in sorted(done, key=lambda f: pending[f]):  # ties in index order, as they were sent
                    index = pending.pop(future)
                    trajectories.extend(future.result())  # strict: re-raises, and the siblings are cancelled below
                    for event in transcripts.pop(index, []):
                        write(event)
                returned = sum(1 for t in trajectories if "error" not in t)
                if grace is not None and deadline is None and returned >= quorum:
                    deadline = loop.time() + grace
        finally:
            for future in pending:
                future.cancel()
            if pending:
                await asyncio.wait(pending)
        returned = sum(1 for t in trajectories if "error" not in t)
        reason = (
            f"cut off as a straggler: {returned} of {k} had come back (quorum {quorum}) "
            f"and the round waited {grace or 0:g} s more"
        )
        params = self.config.params_for_round(round_number)
        for index in pending.values():
            trajectories.append(self._failed(prompt, round_number, index, params, time.time(), reason, write))
        return trajectories

    async def sample_trajectories(
        self,
        prompt: list[dict[str, Any]],
        round_number: int,
        index: int,
        n: int,
        transcripts: Transcripts,
        tool_fields: dict[str, Any] | None = None,
        budget: int | None = None,
        order: int | None = None,
        group: int | None = None,
    ) -> list[Trajectory]:
        """Sample trajectories ``index`` .. ``index + n - 1`` of a parallel round (one request; n > 1 is n-batching).

        ``tool_fields`` (the run's checked tools) are sent with the request, with ``budget`` (the round's
        ``max_tokens``, see ``plan``) when set. A failure raises when the failure policy is strict, and becomes
        failed markers when it allows a quorum. ``order`` ranks the request in a shared client's queue
        (:func:`queue_order` of when its round started; default: now), and ``group`` (when the run started) names
        its run, so a prefix-aware balancer keeps the run's requests together.
        """
        seed_offset = self.config.schedule.offset(round_number) + index
        params = self.config.params_for_round(round_number).with_seed_offset(seed_offset)
        params = with_tools(_budgeted(params, budget), tool_fields)
        records = transcripts.setdefault(index, [])
        record: EventWriter = records.append  # type: ignore[assignment]  # records hold TrajectoryFinished only
        started_at = time.time()
        try:
            # Older requests go first when a shared client is full, later rounds with a head start
            # (see clients.limiter); the run's start names its group, for prefix-aware routing.
            rank = queue_order(round_number) if order is None else order
            with request_priority(current_request_priority(), rank, group):
                clock = time.perf_counter()
                # n is passed only when batching, so a backend without `n` still serves one request per trajectory
                result = await (self.backend.chat(prompt, params, n=n) if n > 1 else self.backend.chat(prompt, params))
                seconds = time.perf_counter() - clock
        except BackendError as exc:
            if not self.config.failure.tolerant:
                raise
            reason = f"{type(exc).__name__}: {exc}"
            return [self._failed(prompt, round_number, index + i, params, started_at, reason, record) for i in range(n)]
        if len(result.completions) != n and n > 1:
            raise ProtocolError(f"asked for {n} completions but the backend returned {len(result.completions)}")
        return [
            self._finish(choice, prompt, params, round_number, index + offset, started_at, seconds, record)
            for offset, choice in enumerate(_split_choices(result, n))
        ]

    def compact(self, state: PaCoReState) -> dict[str, Any]:
        """C(Ω_r) → M_r; fail loudly if nothing usable is left, rather than synthesize from nothing."""
        return self.close_round(state, state["omega"])

    def close_round(
        self, state: PaCoReState, trajectories: Sequence[Trajectory], messages: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Compact round r's ``trajectories`` into M_r, render P(x, M_r) once, and move to round r + 1.

        Records the round's row and emits ``RoundCompacted``. A graph that adds to the references (for example
        verification evidence) selects first with :meth:`selection` and passes its ``messages``, one per kept
        trajectory in the selection's order, so every graph closes rounds with the same rules.
        """
        round_number = state["round"]
        k = self.config.schedule.rounds[round_number - 1]
        selection = self.selection(round_number, trajectories)
        if messages is None:
            messages = [reference_text(t, self.config.compaction) for t in selection.kept]
        references = list(messages)
        stats = round_stats(
            round_number,
            k,
            trajectories,
            messages=len(references),
            dropped_empty=selection.dropped_empty,
            dropped_truncated=selection.dropped_truncated,
        )
        if not any(reference.strip() for reference in references):  # blank ones too (compaction empty="keep")
            raise EmptyRoundError(
                f"round {round_number} left no usable conclusion: K={k}, {stats['returned']} returned, "
                f"{stats['dropped_empty']} empty, {stats['dropped_truncated']} cut off by max_tokens before "
                "concluding; raise max_tokens, or keep truncated trajectories (compaction truncated='keep', "
                "CLI --truncated keep)"
            )
        prompt = build_prompt(state["conversation"], references, self.config.template)
        event_writer()(
            RoundCompacted(
                round=round_number,
                k=k,
                returned=stats["returned"],
                kept=len(references),
                dropped_empty=selection.dropped_empty,
                dropped_truncated=selection.dropped_truncated,
                failed=stats["failed"],
                messages=references,
                next_prompt_chars=prompt_chars(prompt),
            )
        )
        return {
            "references": references,
            "prompt": prompt,
            "omega": [],
            "round": round_number + 1,
            "rounds": [*state["rounds"], stats],
        }

    def selection(self, round_number: int, trajectories: Sequence[Trajectory]) -> Selection:
        """The trajectories C(Ω_r) keeps, in reference order, once the round's quorum is met."""
        k = self.config.schedule.rounds[round_number - 1]
        returned = self.admit(round_number, k, trajectories)
        if self.config.compaction.empty == "keep":  # the authors' layout: a failed explorer is an empty placeholder
            returned = list(trajectories)
        return select(returned, self.config.compaction)

    async def synthesize(self, state: PaCoReState) -> dict[str, Any]:
        """The final K = 1 round on the stored P(x, M_R): its conclusion is the answer, its tool calls the run's."""
        round_number = state["round"]
        params = self.config.final_params.with_seed_offset(self.config.schedule.total_trajectories - 1)
        params = with_tools(_budgeted(params, state.get("budget")), state.get("tool_fields"))
        prompt = state["prompt"]
        write = event_writer()
        chat = SynthesisRun()
        started_at = time.time()
        clock = time.perf_counter()
        await chat.start(prompt, params.model_dump(mode="json", exclude_none=True))
        try:
            with request_priority(current_request_priority(), queue_order(round_number), state.get("run_order")):
                result = await self._stream_synthesis(prompt, params, round_number, write, chat)
            if not result.completions:
                raise ProtocolError(
                    "the backend returned no completion; check that the server supports chat completions"
                )
        except BaseException as exc:
            await chat.error(exc)
            raise
        trajectory = self._finish(
            result, prompt, params, round_number, 0, started_at, time.perf_counter() - clock, write, final=True
        )
        tool_calls = trajectory.get("tool_calls", [])
        if state.get("tool_fields", {}).get("parallel_tool_calls") is False:
            tool_calls = tool_calls[:1]  # one call at most, even from a server that ignores the flag
        answered = bool(trajectory["conclusion"].strip() or tool_calls)
        stats = round_stats(round_number, 1, [trajectory], messages=int(answered))
        rounds = [*state["rounds"], stats]
        usage = summarize_usage(rounds)
        message = answer_message(trajectory["conclusion"], trajectory["finish_reason"], usage, chat.message_id)
        await chat.end(message)
        write(
            RunFinished(
                answer=trajectory["conclusion"],
                finish_reason=trajectory["finish_reason"],
                usage=dict(usage),
                tool_calls=tool_calls,
            )
        )
        return {
            "answer": trajectory["conclusion"],
            "finish_reason": trajectory["finish_reason"],
            "rounds": rounds,
            "usage": usage,
            "tool_calls": tool_calls,  # always written, so a thread's earlier calls never leak into this run
            **({"messages": [message]} if state.get("reply_in_messages") else {}),
        }

    def vote(self, state: PaCoReState) -> dict[str, Any]:
        """Majority vote over the answers extracted from round 1's conclusions (self-consistency); no synthesis.

        The round row counts voters with an answer as kept and those without as dropped (empty).
        """
        round_number = state["round"]
        k = self.config.schedule.rounds[round_number - 1]
        everything = state["omega"]  # in index order: arrival order must not break ties
        trajectories = self.admit(round_number, k, everything)
        answers = [extract_answer(t["conclusion"], self.config.extraction) for t in trajectories]
        outcome = majority_vote(answers)
        voted = len(answers) - outcome.abstained
        stats = round_stats(round_number, k, everything, messages=voted, dropped_empty=outcome.abstained)
        if outcome.answer is None or outcome.winner_index is None:
            raise EmptyRoundError(
                f"no answer to vote on: none of the {len(answers)} trajectories (K={k}) gave an answer in "
                "\\boxed{...} or a fallback phrase such as 'The answer is ...'; ask for a boxed answer in the "
                "problem, or set the spec's answer.fallback patterns"
            )
        rounds = [*state["rounds"], stats]
        usage = summarize_usage(rounds)
        finish_reason = trajectories[outcome.winner_index]["finish_reason"]
        event_writer()(
            RunFinished(answer=outcome.answer, finish_reason=finish_reason, usage=dict(usage), votes=outcome.tally)
        )
        reply = answer_message(outcome.answer, finish_reason, usage, None) if state.get("reply_in_messages") else None
        return {
            "answer": outcome.answer,
            "finish_reason": finish_reason,
            "votes": outcome.tally,
            "omega": [],
            "rounds": rounds,
            "usage": usage,
            **({"messages": [reply]} if reply is not None else {}),
        }

    def admit(self, round_number: int, k: int, trajectories: Sequence[Trajectory]) -> list[Trajectory]:
        """The trajectories that came back, once the round's quorum is met; else ``QuorumError`` naming each failure."""
        failed = [t for t in trajectories if "error" in t]
        returned = [t for t in trajectories if "error" not in t]
        quorum = self.config.failure.quorum(k)
        if len(returned) < quorum:
            reasons = "; ".join(f"#{t['index']}: {t['error']}" for t in sorted(failed, key=lambda t: t["index"]))
            raise QuorumError(
                f"round {round_number} failed: {len(returned)} of K={k} trajectories came back, below the quorum "
                f"of {quorum}; {len(failed)} failed after retries: {reasons}. Check the model server, or lower "
                "the quorum (failure.min_trajectories / min_fraction, CLI --min-trajectories / --min-fraction)"
            )
        return returned

    def _requests(self, k: int) -> int:
        """How many requests a round of ``k`` trajectories sends (n-batching sends fewer, larger ones)."""
        batch = self.config.n_batch if self.config.n_batch is not None and self.config.n_batch > 1 else 1
        return -(-k // batch)

    def _is_final(self, round_number: int) -> bool:
        return round_number > len(self.config.schedule.rounds)

    def _round_name(self, round_number: int) -> str:
        return "the final synthesis" if self._is_final(round_number) else f"round {round_number}"

    def _check_budget(self, prompt: list[dict[str, Any]], round_number: int) -> None:
        budget = self.config.max_prompt_chars
        if budget is None:
            return
        size = prompt_chars(prompt)
        if size > budget:
            what = self._round_name(round_number)
            raise ContextBudgetError(
                f"the prompt of {what} is {size:,} characters, over the budget of {budget:,} (max_prompt_chars); "
                "nothing was sent. Pass conclusions instead of full trajectories (compaction keep: conclusion), "
                "lower K, cap max_tokens, or raise max_prompt_chars if the model's context allows it"
            )

    def _failed(
        self,
        prompt: list[dict[str, Any]],
        round_number: int,
        index: int,
        params: SamplingParams,
        started_at: float,
        reason: str,
        write: EventWriter,
    ) -> Trajectory:
        """A failed marker for trajectory ``index`` (no conclusion, no tokens, and why), announced as it is made."""
        trajectory = Trajectory(
            round=round_number,
            index=index,
            conclusion="",
            content_chars=0,
            finish_reason="error",
            cut_mid_thought=False,
            prompt_tokens=0,
            completion_tokens=0,
            seconds=round(time.time() - started_at, 3),
            started_at=started_at,
            error=reason,
        )
        write(
            TrajectoryFinished(
                round=round_number,
                index=index,
                prompt_tokens=0,
                completion_tokens=0,
                finish_reason="error",
                started_at=started_at,
                seconds=trajectory["seconds"],
                content="",
                messages=prompt,
                params=params.model_dump(mode="json"),
                error=reason,
            )
        )
        return trajectory

    def _finish(
        self,
        result: ChatResult,
        prompt: list[dict[str, Any]],
        params: SamplingParams,
        round_number: int,
        index: int,
        started_at: float,
        seconds: float,
        write: EventWriter,
        *,
        final: bool = False,
    ) -> Trajectory:
        """Reduce one sampled choice to its trajectory, and send its full transcript to the event stream."""
        completion = result.completions[0]
        trajectory = reduce_completion(
            completion,
            round_number=round_number,
            index=index,
            usage=result.usage,
            started_at=started_at,
            seconds=seconds,
            keep_full=self.config.compaction.keep == "full",
        )
        # The full transcript goes to the event stream (a trace can record it), never into the state.
        write(
            TrajectoryFinished(
                round=round_number,
                index=index,
                final=final,
                prompt_tokens=trajectory["prompt_tokens"],
                completion_tokens=trajectory["completion_tokens"],
                finish_reason=trajectory["finish_reason"],
                answer=extract_answer(trajectory["conclusion"], self.config.extraction),
                started_at=started_at,
                seconds=trajectory["seconds"],
                content=completion.content,
                reasoning=completion.reasoning,
                tool_calls=trajectory.get("tool_calls", []),
                messages=prompt,
                params=params.model_dump(mode="json"),
            )
        )
        return trajectory

    async def _stream_synthesis(
        self,
        prompt: list[dict[str, Any]],
        params: SamplingParams,
        round_number: int,
        write: EventWriter,
        chat: SynthesisRun,
    ) -> ChatResult:
        """The synthesis call: streamed when the backend can, so its text is shown while it is generated.

        The text goes to the PaCoRe events (``SynthesisDelta``, with reasoning) and to the chat-model run
        (``chat``, the answer's text only).
        """
        if not supports_streaming(self.backend):  # through wrappers: an eval meter must not hide streaming
            result = await self.backend.chat(prompt, params)
            if result.completions:  # one delta with the whole text keeps consumers uniform
                completion = result.completions[0]
                write(
                    SynthesisDelta(round=round_number, content=completion.content, reasoning=completion.reasoning or "")
                )
                await chat.token(completion.content)
            return result
        accumulated = StreamAccumulator()
        started = False
        async for chunk in self.backend.stream_chat(prompt, params):
            accumulated.add(chunk)
            if chunk.content or chunk.reasoning:
                write(SynthesisDelta(round=round_number, content=chunk.content, reasoning=chunk.reasoning))
                await chat.token(chunk.content)
                started = True
            elif chunk.finish_reason is not None or chunk.tool_calls:
                started = True
        if not started:
            # As the JSON path's "returned 0 completions": an empty stream must not pass for an empty answer.
            raise ProtocolError(
                "the synthesis stream ended without any choice (no text and no finish reason); the server sent no "
                "completion: see its logs"
            )
        return accumulated.result()


def _run_context() -> dict[str, Any] | None:
    """The current run's per-run settings (its context's override options), or None outside a run or without any.

    At the top level the context is the graph's own: every key must be an option, so a typo is a ConfigError.
    Inside a parent graph the context is the parent's and may hold its own keys: only the options are read.
    """
    try:
        config = get_config()
    except RuntimeError:  # outside a LangGraph run
        return None
    context = getattr(get_runtime(), "context", None)
    if isinstance(context, Overrides):
        return context.given() or None
    nested = "|" in str(config.get("configurable", {}).get("checkpoint_ns", ""))  # a subgraph's node, or a task
    if not isinstance(context, Mapping):
        if context is None or nested:
            return None
        raise ConfigError(
            f"the run's context is a {type(context).__name__}; give a dict of PaCoRe options (PaCoReContext), "
            "e.g. context={'schedule': '8', 'temperature': 0.6}, or an Overrides"
        )
    if nested:
        context = {key: value for key, value in context.items() if key in Overrides.model_fields}
    return dict(context) or None


def _split_choices(result: ChatResult, n: int) -> list[ChatResult]:
    """One result per choice of an ``n``-choice request.

    The server reports one usage per request: the prompt tokens go to the first trajectory only (the prompt was
    sent, and prefilled, once); the completion tokens are split evenly, the remainder on the first, so round
    and run totals equal what the server reported.
    """
    if not result.completions:
        raise ProtocolError("the backend returned no completion; check that the server supports chat completions")
    if n == 1:
        return [ChatResult(completions=[result.completions[0]], usage=result.usage, model=result.model)]
    share, remainder = divmod(result.usage.completion_tokens, n)
    return [
        ChatResult(
            completions=[completion],
            usage=TokenUsage(
                prompt_tokens=result.usage.prompt_tokens if offset == 0 else 0,
                completion_tokens=share + (remainder if offset == 0 else 0),
            ),
            model=result.model,
        )
        for offset, completion in enumerate(result.completions)
    ]
