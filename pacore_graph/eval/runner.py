"""Run graphs over a dataset, several times each, resumably.

The unit of work is one *record*: one run of one graph on one problem. Each finished record is appended to
``results.jsonl`` in the output folder (flushed and fsynced), so a crash loses only the records in flight, and
a rerun with the same folder skips every record already there. ``manifest.json`` pins the dataset and each
graph's resolved spec: resuming against a different dataset, or a graph label whose spec changed, is refused
rather than mixing results.

A run whose graph fails with a :class:`~pacore_graph.errors.RoundError` (e.g. no trajectory left an answer)
is recorded as wrong, with the error; a :class:`~pacore_graph.errors.BackendError` stops the evaluation, since
the server is the problem, and the rerun continues from what was saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pacore_graph.clients.base import ChatBackend, ChatMessage, ChatResult, SamplingParams, TokenUsage
from pacore_graph.clients.streaming import ChatChunk
from pacore_graph.clients.wrapper import WrapperBackend
from pacore_graph.errors import ConfigError, RoundError
from pacore_graph.eval.datasets import Problem, dataset_fingerprint
from pacore_graph.eval.grading import Grader, grade_async
from pacore_graph.eval.jsonl import append_record, read_records
from pacore_graph.eval.pool import CountingBackend, EvalCounters, PoolBackend, TrajectoryPool, stable_seed
from pacore_graph.eval.synthesis import SynthesisView, view_synthesis
from pacore_graph.events import RoundCompacted, RoundStarted, TrajectoryFinished
from pacore_graph.graphs import GraphSpec, build_graph, load_spec
from pacore_graph.messages import text_of
from pacore_graph.overrides import Overrides
from pacore_graph.result import PaCoReResult
from pacore_graph.run import stream_run
from pacore_graph.schedule import Schedule

__all__ = [
    "MANIFEST_FILE",
    "POOL_FILE",
    "RESULTS_FILE",
    "EvalGraph",
    "EvalRecord",
    "ResultsLog",
    "parse_graph_arg",
    "resolve_eval_graphs",
    "run_eval",
]

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"
POOL_FILE = "pool.jsonl"


@dataclass(frozen=True)
class EvalGraph:
    """A graph under evaluation: the label it is reported under and its resolved spec."""

    label: str
    spec: GraphSpec

    @property
    def k1(self) -> int:
        """How many round-1 trajectories one run of it samples."""
        return self.spec.schedule.rounds[0]

    @property
    def fingerprint(self) -> str:
        """A hash of the resolved spec: the same label must mean the same graph when resuming."""
        return hashlib.sha256(self.spec.model_dump_json().encode()).hexdigest()[:16]


def parse_graph_arg(text: str) -> tuple[str, Schedule | None]:
    """``NAME`` or ``NAME:SCHEDULE`` (``self-consistency:5``, ``pacore-low:8``, ``pacore-high:16,4``)."""
    name, sep, schedule = text.rpartition(":")
    if not sep or not name:
        return text, None
    try:
        return name, Schedule.parse(schedule)
    except ConfigError:
        return text, None  # not a schedule after all: the whole text names the graph (or a path)


class EvalRecord(BaseModel):
    """One run of one graph on one problem, graded.

    ``synthesis`` is set for graphs that end in a synthesis over references (PaCoRe, sequential): what the
    final synthesis saw and did (:mod:`pacore_graph.eval.synthesis`). ``pool_key`` names the round-1 pool the run
    drew from, so self-consistency curves can be drawn from that pool afterwards.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    graph: str
    problem_id: str
    run: int
    answer: str | None
    extracted: str | None
    correct: bool
    effective_ttc_tokens: int
    prompt_tokens: int
    seconds: float
    finish_reason: str | None = None
    error: str | None = None
    pool_served: int = 0
    pool_generated: int = 0
    score: float | None = None
    synthesis: SynthesisView | None = None
    pool_key: str | None = None


class ResultsLog:
    """``results.jsonl`` and ``manifest.json`` in an output folder: what is done, and appending what gets done."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_FILE
        self.records: dict[tuple[str, str, int], EvalRecord] = {}

    def open(self, problems: Sequence[Problem], graphs: Sequence[EvalGraph]) -> None:
        """Create the folder or check it matches, then load the finished records."""
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest_path = self.dir / MANIFEST_FILE
        dataset = dataset_fingerprint(list(problems))
        manifest: dict[str, Any] = {"dataset": dataset, "graphs": {}}
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("dataset") != dataset:
                raise ConfigError(
                    f"{self.dir} holds results for another dataset (or another --limit); use a new --out folder"
                )
        for graph in graphs:
            known = manifest["graphs"].get(graph.label)
            if known is not None and known != graph.fingerprint:
                raise ConfigError(
                    f"{self.dir} holds results for a different {graph.label!r} (its spec or sampling options "
                    "changed); use a new --out folder or the same options"
                )
            manifest["graphs"][graph.label] = graph.fingerprint
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        for record in read_records(self.path, EvalRecord, "a result record"):
            self.records[(record.graph, record.problem_id, record.run)] = record

    def done(self, graph: str, problem_id: str, run: int) -> bool:
        """Whether this run is already recorded."""
        return (graph, problem_id, run) in self.records

    def append(self, record: EvalRecord) -> None:
        """Record a finished run durably (one line, flushed and fsynced)."""
        self.records[(record.graph, record.problem_id, record.run)] = record
        append_record(self.path, record)


class _RunMeter(WrapperBackend):
    """Counts the tokens one run's graph received, so a run that fails still reports what it spent."""

    def __init__(self, inner: ChatBackend) -> None:
        super().__init__(inner)
        self.completion_tokens = 0
        self.prompt_tokens = 0

    def _count(self, usage: TokenUsage) -> None:
        self.completion_tokens += usage.completion_tokens
        self.prompt_tokens += usage.prompt_tokens

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        result = await self.wrapped.chat(messages, params, n=n)
        self._count(result.usage)
        return result

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        usage = TokenUsage()
        try:
            async for chunk in super().stream_chat(messages, params):
                usage = chunk.usage or usage
                yield chunk
        finally:  # a stream cut short still spent what it reported
            self._count(usage)


class _Watched:
    """What a run's events tell about its final synthesis: the references it saw and its whole text."""

    def __init__(self) -> None:
        self.compacted: RoundCompacted | None = None
        self.final_round: RoundStarted | None = None
        self.final: TrajectoryFinished | None = None

    def see(self, event: object) -> None:
        if isinstance(event, RoundCompacted):
            self.compacted = event
        elif isinstance(event, RoundStarted) and event.final:
            self.final_round = event
        elif isinstance(event, TrajectoryFinished) and event.final:
            self.final = event

    def references(self) -> list[str] | None:
        """The references of the last parallel round that the final synthesis was shown (None: no synthesis)."""
        if self.compacted is None or self.final is None:
            return None
        references = list(self.compacted.messages)
        if self.final_round is not None and self.final_round.trimmed:
            # The budget dropped some to fit the context: keep those that are in the prompt it was sent.
            prompt = "\n".join(text_of(m.get("content")) for m in self.final.messages)
            references = [r for r in references if r in prompt]
        return references

    def text(self, answer: str | None) -> str:
        """The synthesis's content and reasoning, where citations of references are looked for."""
        if self.final is None:
            return answer or ""
        return "\n".join(part for part in (self.final.reasoning, self.final.content) if part)


async def _one_run(
    problem: Problem,
    graph: EvalGraph,
    run: int,
    backend: ChatBackend,
    grader: Grader,
) -> EvalRecord:
    meter = _RunMeter(backend)
    compiled = build_graph(graph.spec, meter)
    started = time.perf_counter()
    answer: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    ttc = prompt = 0
    watched = _Watched()
    try:
        async for item in stream_run(compiled, {"messages": problem.messages}):
            if isinstance(item, PaCoReResult):
                answer, finish_reason = item.answer, item.finish_reason
                ttc, prompt = item.usage.effective_ttc_tokens, item.usage.prompt_tokens
            else:
                watched.see(item)
    except RoundError as exc:  # the method failed on this problem: a wrong answer, not a broken eval
        error = f"{type(exc).__name__}: {exc}"
        ttc, prompt = meter.completion_tokens, meter.prompt_tokens
    seconds = time.perf_counter() - started
    grade = await grade_async(grader, problem, answer)
    references = watched.references() if answer is not None else None
    synthesis = None
    if references is not None:
        synthesis = await view_synthesis(grader, problem, references, grade, watched.text(answer))
    pooled = backend if isinstance(backend, PoolBackend) else None
    return EvalRecord(
        graph=graph.label,
        problem_id=problem.id,
        run=run,
        answer=answer,
        extracted=grade.extracted,
        correct=grade.correct,
        effective_ttc_tokens=ttc,
        prompt_tokens=prompt,
        seconds=round(seconds, 3),
        finish_reason=finish_reason,
        error=error,
        pool_served=pooled.served if pooled else 0,
        pool_generated=pooled.generated if pooled else 0,
        score=grade.score,
        synthesis=synthesis,
        pool_key=pooled.keys[0] if pooled and pooled.keys else None,
    )


async def run_eval(
    problems: Sequence[Problem],
    graphs: Sequence[EvalGraph],
    backend: ChatBackend,
    grader: Grader,
    *,
    runs: int,
    log: ResultsLog,
    pool: TrajectoryPool | None = None,
    pool_size: int | None = None,
    parallel: int = 8,
    seed: int = 0,
    model: str | None = None,
    counters: EvalCounters | None = None,
    on_record: Callable[[EvalRecord], None] | None = None,
) -> list[EvalRecord]:
    """Run every graph ``runs`` times on every problem, skipping runs ``log`` already holds.

    With a ``pool``, round-1 trajectories come from it (``pool_size`` slots per problem, default the largest
    K_1 times ``runs``, so even the widest graph's runs are drawn from a pool as large as independent runs
    would sample; ``model`` keys the pool). At most ``parallel`` runs are in flight. Returns every record of
    these graphs, old and new.
    """
    counters = counters or EvalCounters()
    counting = CountingBackend(backend, counters)
    size = pool_size or max(g.k1 for g in graphs) * runs
    too_wide = [g.label for g in graphs if g.k1 > size]
    if pool is not None and too_wide:
        raise ConfigError(f"--pool-size {size} is smaller than K_1 of {', '.join(too_wide)}; raise it")
    todo = [
        (problem, run, graph)
        for problem in problems
        for run in range(runs)
        for graph in graphs
        if not log.done(graph.label, problem.id, run)
    ]
    limit = asyncio.Semaphore(parallel)

    async def work(problem: Problem, run: int, graph: EvalGraph) -> None:
        async with limit:
            run_backend: ChatBackend = counting
            if pool is not None:
                run_backend = PoolBackend(
                    counting,
                    pool,
                    problem.messages,
                    pool_size=size,
                    draw_seed=stable_seed(seed, graph.label, problem.id, run),
                    model=model,
                    counters=counters,
                )
            record = await _one_run(problem, graph, run, run_backend, grader)
            log.append(record)
            if on_record is not None:
                on_record(record)

    # A TaskGroup: when one run fails (the server went away), the others are cancelled and awaited, and the
    # first failure is raised as itself, so callers see a BackendError rather than an ExceptionGroup.
    try:
        async with asyncio.TaskGroup() as group:
            for problem, run, graph in todo:
                group.create_task(work(problem, run, graph))
    except BaseExceptionGroup as failures:
        raise _first_leaf(failures) from None
    labels = {g.label for g in graphs}
    ids = {p.id for p in problems}
    return [r for key, r in sorted(log.records.items()) if key[0] in labels and key[1] in ids and key[2] < runs]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def resolve_eval_graphs(args: Sequence[str], overrides: Overrides | Mapping[str, Any] | None = None) -> list[EvalGraph]:
    """The graphs ``--graph`` names (``NAME`` or ``NAME:SCHEDULE``) with the command line's options applied.

    ``overrides`` go through each spec's ``with_overrides``; a ``NAME:SCHEDULE`` schedule wins over theirs.
    """
    graphs: list[EvalGraph] = []
    for arg in args:
        name, schedule = parse_graph_arg(arg)
        spec = load_spec(name).with_overrides(overrides, schedule=schedule)
        label = arg if schedule is None else f"{name}:{schedule.spec}"
        if any(g.label == label for g in graphs):
            raise ConfigError(f"--graph {arg!r} is given twice")
        graphs.append(EvalGraph(label=label, spec=spec))
    return graphs
