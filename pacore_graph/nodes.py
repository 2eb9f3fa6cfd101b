"""The PaCoRe graph's nodes: each turns state into one pure-function call or one backend call.

They are the parts reasoning graphs are assembled from (see ``pacore_graph.graphs``): ``prepare``, the explorer
fan-out (``dispatch`` + ``explore``), the compactor (``compact``), the synthesizer (``synthesize``) and the voter
(``vote``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from langgraph.types import Overwrite, Send

from pacore_graph.budget import fit_prompt
from pacore_graph.clients.base import ChatBackend, ChatResult, SamplingParams, TokenUsage
from pacore_graph.clients.limiter import request_priority
from pacore_graph.clients.streaming import StreamAccumulator
from pacore_graph.clients.wrapper import supports_streaming
from pacore_graph.compaction import compact, conclusion_of, full_text_of, is_cut_mid_thought
from pacore_graph.config import PaCoReConfig
from pacore_graph.errors import BackendError, ContextBudgetError, EmptyRoundError, ProtocolError, QuorumError
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
from pacore_graph.prompts import build_prompt, normalize_problem
from pacore_graph.state import ExploreTask, PaCoReState, RoundStats, Trajectory, UsageSummary

__all__ = ["PaCoReNodes", "prompt_chars", "round_stats", "summarize_usage"]


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
    return RoundStats(
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
    )


def summarize_usage(rounds: Sequence[RoundStats]) -> UsageSummary:
    """Run totals; effective test-time compute is every trajectory's completion tokens, summed."""
    completion = sum(r["completion_tokens"] for r in rounds)
    return UsageSummary(
        prompt_tokens=sum(r["prompt_tokens"] for r in rounds),
        completion_tokens=completion,
        effective_ttc_tokens=completion,
        rounds=list(rounds),
    )


def prompt_chars(messages: Sequence[dict[str, Any]]) -> int:
    """The length of a prompt's text: every message content, text parts included."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return total


class PaCoReNodes:
    """The node functions of one PaCoRe graph, bound to a backend and a config."""

    def __init__(self, backend: ChatBackend, config: PaCoReConfig) -> None:
        self.backend = backend
        self.config = config
        self._gates: dict[tuple[str, int], _StragglerGate] = {}  # rounds running now, for the straggler cutoff

    def prepare(self, state: PaCoReState) -> dict[str, Any]:
        """Validate the input and turn it into chat messages x; start at round 1 with M_0 = ∅."""
        problem = state.get("problem")
        conversation = normalize_problem(problem if problem is not None else state.get("messages") or [])
        return {
            "conversation": conversation,
            "round": 1,
            "references": [],
            "omega": Overwrite([]),
            "run_key": uuid.uuid4().hex,
        }

    async def dispatch(self, state: PaCoReState) -> list[Send] | str:
        """Fan out round r: one ``Send`` per trajectory, all on the same prompt P(x, M_{r-1}).

        With n-batching (``config.n_batch``) one ``Send`` per chunk of at most ``n_batch`` trajectories instead.
        Async because fitting the prompt into the context (``max_model_len``) may ask the server to count tokens.
        """
        round_number = state["round"]
        parallel = self.config.schedule.rounds
        if round_number > len(parallel):
            return "synthesize"
        params = self.config.params_for_round(round_number)
        prompt, trimmed = await self._prompt(state, round_number, params)
        k = parallel[round_number - 1]
        event_writer()(RoundStarted(round=round_number, k=k, prompt_chars=prompt_chars(prompt), trimmed=trimmed))
        key = state.get("run_key", "")
        batch = self.config.n_batch
        if batch is not None and batch > 1:
            return [
                Send(
                    "explore", ExploreTask(round=round_number, index=i, prompt=prompt, run_key=key, n=min(batch, k - i))
                )
                for i in range(0, k, batch)
            ]
        return [Send("explore", ExploreTask(round=round_number, index=i, prompt=prompt, run_key=key)) for i in range(k)]

    async def explore(self, task: ExploreTask) -> dict[str, Any]:
        """Sample one trajectory of a parallel round (or, n-batched, the task's ``n`` with one request)."""
        n = task.get("n", 1)
        seed_offset = self.config.schedule.offset(task["round"]) + task["index"]
        params = self.config.params_for_round(task["round"]).with_seed_offset(seed_offset)
        started_at = time.time()
        try:
            # Later rounds go first when a shared client is full: a problem in round 2 finishes sooner than
            # one that has not started (see clients.limiter).
            with request_priority(task["round"]):
                if n > 1:
                    trajectories = await self._sample_batch(task["prompt"], params, task["round"], task["index"], n)
                else:
                    trajectories = [await self._sample_or_cut_off(task, params)]
        except (BackendError, StragglerCutOff) as exc:
            if not self.config.failure.tolerant:
                raise  # strict: the run fails now and LangGraph cancels the siblings
            # Returned, not raised, so the siblings keep running; close_round counts each against the quorum.
            # A failed n-batched request fails every trajectory it stood for.
            trajectories = [self._failed(task, task["index"] + offset, params, started_at, exc) for offset in range(n)]
        return {"omega": trajectories}

    def _failed(
        self,
        task: ExploreTask,
        index: int,
        params: SamplingParams,
        started_at: float,
        exc: BackendError | StragglerCutOff,
    ) -> Trajectory:
        """A failed marker for trajectory ``index`` of ``task``, announced with its ``TrajectoryFinished``."""
        trajectory = _failed_trajectory(task["round"], index, started_at, exc)
        event_writer()(
            TrajectoryFinished(
                round=task["round"],
                index=index,
                prompt_tokens=0,
                completion_tokens=0,
                finish_reason="error",
                started_at=started_at,
                seconds=trajectory["seconds"],
                content="",
                messages=task["prompt"],
                params=params.model_dump(mode="json"),
                error=trajectory["error"],
            )
        )
        return trajectory

    async def _sample_batch(
        self, prompt: list[dict[str, Any]], params: SamplingParams, round_number: int, first: int, n: int
    ) -> list[Trajectory]:
        """Trajectories ``first`` .. ``first + n - 1`` of a round from one request with ``n`` choices.

        Usage per trajectory, since the server reports one per request: the prompt tokens go to the first
        trajectory only (the prompt was sent, and prefilled, once); the completion tokens are split evenly,
        the remainder on the first, so round and run totals equal what the server reported.
        """
        started_at = time.time()
        clock = time.perf_counter()
        result = await self.backend.chat(prompt, params, n=n)
        seconds = time.perf_counter() - clock
        if len(result.completions) != n:
            raise ProtocolError(f"asked for {n} completions but the backend returned {len(result.completions)}")
        share, remainder = divmod(result.usage.completion_tokens, n)
        trajectories = []
        for offset, completion in enumerate(result.completions):
            usage = TokenUsage(
                prompt_tokens=result.usage.prompt_tokens if offset == 0 else 0,
                completion_tokens=share + (remainder if offset == 0 else 0),
            )
            single = ChatResult(completions=[completion], usage=usage, model=result.model)
            trajectories.append(
                self._finish(single, prompt, params, round_number, first + offset, started_at, seconds, final=False)
            )
        return trajectories

    async def _sample_or_cut_off(self, task: ExploreTask, params: SamplingParams) -> Trajectory:
        """Sample, racing the round's straggler cutoff when the failure policy sets one."""
        sample = self._sample(task["prompt"], params, task["round"], task["index"])
        grace = self.config.failure.straggler_grace
        if grace is None or not task.get("run_key"):
            return await sample
        key = (task.get("run_key", ""), task["round"])
        k = self.config.schedule.rounds[task["round"] - 1]
        gate = self._gates.setdefault(key, _StragglerGate(self.config.failure.quorum(k), grace, k))
        try:
            return await gate.race(sample)
        finally:
            if gate.leave():
                del self._gates[key]

    def compact(self, state: PaCoReState) -> dict[str, Any]:
        """C(Ω_r) → M_r; fail loudly if nothing usable is left, rather than synthesize from nothing."""
        return self.close_round(state, state["omega"])

    def close_round(self, state: PaCoReState, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        """Compact ``trajectories`` (round r's, possibly annotated by the graph) into M_r and move to round r + 1.

        Records the round's row and emits ``RoundCompacted``. Graphs that add to the conclusions first (for
        example verification evidence) call this with their annotated copies, so every graph closes rounds alike.
        """
        round_number = state["round"]
        k = self.config.schedule.rounds[round_number - 1]
        compacted = compact(self.admit(round_number, k, trajectories), self.config.compaction)
        stats = round_stats(
            round_number,
            k,
            trajectories,
            messages=len(compacted.messages),
            dropped_empty=compacted.dropped_empty,
            dropped_truncated=compacted.dropped_truncated,
        )
        if not compacted.messages:
            raise EmptyRoundError(
                f"round {round_number} left no usable conclusion: K={k}, {stats['returned']} returned, "
                f"{stats['dropped_empty']} empty, {stats['dropped_truncated']} cut off by max_tokens before "
                "concluding; raise max_tokens, or keep truncated trajectories (compaction truncated='keep', "
                "CLI --truncated keep)"
            )
        next_prompt = build_prompt(state["conversation"], compacted.messages, self.config.template)
        event_writer()(
            RoundCompacted(
                round=round_number,
                k=k,
                returned=stats["returned"],
                kept=len(compacted.messages),
                dropped_empty=compacted.dropped_empty,
                dropped_truncated=compacted.dropped_truncated,
                failed=stats["failed"],
                messages=compacted.messages,
                next_prompt_chars=prompt_chars(next_prompt),
            )
        )
        return {
            "references": compacted.messages,
            "omega": Overwrite([]),
            "round": round_number + 1,
            "rounds": [stats],
        }

    async def synthesize(self, state: PaCoReState) -> dict[str, Any]:
        """The final K = 1 round on P(x, M_R): its conclusion is the answer."""
        round_number = state["round"]
        params = self.config.final_params.with_seed_offset(self.config.schedule.total_trajectories - 1)
        prompt, trimmed = await self._prompt(state, round_number, params)
        write = event_writer()
        write(RoundStarted(round=round_number, k=1, final=True, prompt_chars=prompt_chars(prompt), trimmed=trimmed))
        with request_priority(round_number):
            trajectory = await self._sample(prompt, params, round_number, 0, final=True)
        stats = round_stats(round_number, 1, [trajectory], messages=int(bool(trajectory["conclusion"].strip())))
        usage = summarize_usage([*state["rounds"], stats])
        write(
            RunFinished(answer=trajectory["conclusion"], finish_reason=trajectory["finish_reason"], usage=dict(usage))
        )
        return {
            "answer": trajectory["conclusion"],
            "finish_reason": trajectory["finish_reason"],
            "rounds": [stats],
            "usage": usage,
        }

    def vote(self, state: PaCoReState) -> dict[str, Any]:
        """Majority vote over the answers extracted from round 1's conclusions (self-consistency); no synthesis.

        The round row counts voters with an answer as kept and those without as dropped (empty).
        """
        round_number = state["round"]
        k = self.config.schedule.rounds[round_number - 1]
        everything = sorted(state["omega"], key=lambda t: t["index"])  # arrival order must not break ties
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
        usage = summarize_usage([*state["rounds"], stats])
        finish_reason = trajectories[outcome.winner_index]["finish_reason"]
        event_writer()(
            RunFinished(answer=outcome.answer, finish_reason=finish_reason, usage=dict(usage), votes=outcome.tally)
        )
        return {
            "answer": outcome.answer,
            "finish_reason": finish_reason,
            "votes": outcome.tally,
            "omega": Overwrite([]),
            "rounds": [stats],
            "usage": usage,
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

    async def _prompt(
        self, state: PaCoReState, round_number: int, params: SamplingParams
    ) -> tuple[list[dict[str, Any]], int]:
        """P(x, M) for this round within the budgets, and how many references were trimmed to fit the context."""
        prompt = build_prompt(state["conversation"], state["references"], self.config.template)
        self._check_budget(prompt, round_number)
        if self.config.max_model_len is None:
            return prompt, 0
        return await fit_prompt(
            self.backend,
            state["conversation"],
            state["references"],
            self.config.template,
            max_model_len=self.config.max_model_len,
            max_tokens=params.max_tokens,
            what=self._round_name(round_number),
        )

    def _round_name(self, round_number: int) -> str:
        return "the final synthesis" if round_number > len(self.config.schedule.rounds) else f"round {round_number}"

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

    async def _sample(
        self,
        prompt: list[dict[str, Any]],
        params: SamplingParams,
        round_number: int,
        index: int,
        *,
        final: bool = False,
    ) -> Trajectory:
        write = event_writer()
        started_at = time.time()
        clock = time.perf_counter()
        if final:
            result = await self._stream_synthesis(prompt, params, round_number, write)
        else:
            result = await self.backend.chat(prompt, params)
        return self._finish(result, prompt, params, round_number, index, started_at, time.perf_counter() - clock, final)

    def _finish(
        self,
        result: ChatResult,
        prompt: list[dict[str, Any]],
        params: SamplingParams,
        round_number: int,
        index: int,
        started_at: float,
        seconds: float,
        final: bool,
    ) -> Trajectory:
        """Reduce one sampled choice to its trajectory, and send its full transcript to the event stream."""
        write = event_writer()
        trajectory = _trajectory(result, round_number, index, started_at, seconds)
        completion = result.completions[0]
        if self.config.compaction.keep == "full":
            # Only the no-compaction ablation needs the whole text in the state (see pacore_graph.state).
            trajectory["full_text"] = full_text_of(completion.content, completion.reasoning)
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
                messages=prompt,
                params=params.model_dump(mode="json"),
            )
        )
        return trajectory

    async def _stream_synthesis(
        self, prompt: list[dict[str, Any]], params: SamplingParams, round_number: int, write: EventWriter
    ) -> ChatResult:
        """The synthesis call: streamed when the backend can, so its text is shown while it is generated."""
        if not supports_streaming(self.backend):  # through wrappers: an eval meter must not hide streaming
            result = await self.backend.chat(prompt, params)
            if result.completions:  # one delta with the whole text keeps consumers uniform
                completion = result.completions[0]
                write(
                    SynthesisDelta(round=round_number, content=completion.content, reasoning=completion.reasoning or "")
                )
            return result
        accumulated = StreamAccumulator()
        started = False
        async for chunk in self.backend.stream_chat(prompt, params):
            accumulated.add(chunk)
            if chunk.content or chunk.reasoning:
                write(SynthesisDelta(round=round_number, content=chunk.content, reasoning=chunk.reasoning))
                started = True
            elif chunk.finish_reason is not None:
                started = True
        if not started:
            # As the JSON path's "returned 0 completions": an empty stream must not pass for an empty answer.
            raise ProtocolError(
                "the synthesis stream ended without any choice (no text and no finish reason); the server sent no "
                "completion: see its logs"
            )
        return accumulated.result()


class StragglerCutOff(Exception):
    """Marks an explorer cancelled by the straggler cutoff (recorded as a failed trajectory, never raised out)."""


class _StragglerGate:
    """Closes a round ``grace`` seconds after ``quorum`` of its ``k`` explorers came back.

    One per (run, round), shared by that round's explorers; it lives on the nodes object only while the round
    runs (the last explorer to leave removes it), so nothing of it enters the graph state or a checkpoint.
    """

    def __init__(self, quorum: int, grace: float, k: int) -> None:
        self.quorum, self.grace, self.k = quorum, grace, k
        self.returned = self.left = 0
        self.closed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def race(self, sample: Coroutine[Any, Any, Trajectory]) -> Trajectory:
        """The trajectory, or ``StragglerCutOff`` if the round closes first (the request is then cancelled)."""
        request = asyncio.ensure_future(sample)
        closing = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({request, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not request.done():
                request.cancel()
            await asyncio.gather(request, closing, return_exceptions=True)
        if request.cancelled():
            raise StragglerCutOff(
                f"cut off as a straggler: {self.returned} of {self.k} had come back (quorum {self.quorum}) "
                f"and the round waited {self.grace:g} s more"
            )
        trajectory = request.result()  # re-raises the request's own failure
        self.returned += 1
        if self.returned >= self.quorum and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.grace, self.closed.set)
        return trajectory

    def leave(self) -> bool:
        """Count an explorer out; True when it was the round's last, so the gate can go."""
        self.left += 1
        if self.left == self.k and self._timer is not None:
            self._timer.cancel()
        return self.left == self.k


def _failed_trajectory(
    round_number: int, index: int, started_at: float, exc: BackendError | StragglerCutOff
) -> Trajectory:
    """The marker a failed explorer returns: no conclusion, no tokens, and why it failed."""
    return Trajectory(
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
        error=f"{type(exc).__name__}: {exc}",
    )


def _trajectory(result: ChatResult, round_number: int, index: int, started_at: float, seconds: float) -> Trajectory:
    if not result.completions:
        raise ProtocolError("the backend returned no completion; check that the server supports chat completions")
    completion = result.completions[0]
    return Trajectory(
        round=round_number,
        index=index,
        conclusion=conclusion_of(completion.content),
        content_chars=len(completion.content),
        finish_reason=completion.finish_reason,
        cut_mid_thought=is_cut_mid_thought(completion.content, completion.reasoning, completion.finish_reason),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        seconds=round(seconds, 3),
        started_at=started_at,
    )
