"""``pacore train build`` as a function: pool, grades, stage filter and episodes for a list of problems.

:func:`build_training_data` fills every problem's message pool (:mod:`pacore_graph.training.pool`), grades every
message (:mod:`pacore_graph.training.accuracy`), applies the stage filter (:mod:`pacore_graph.training.stages`;
stage 2 samples syntheses with the given backend, the current policy) and samples the kept problems' episodes
(:mod:`pacore_graph.training.sampling`). :func:`write_outputs` writes them under the output folder: the TRL and verl
files (:func:`pacore_graph.training.export.write_exports`), ``manifest.json`` and the accuracy histogram, each under
a temporary name first, then renamed.

A problem whose pool holds fewer usable messages than the smallest |M| gets no episode (the manifest says so).
Stage 2 filters on the synthesis accuracy alone (every problem with enough messages is sampled), as the paper
states it; stage 1's message-accuracy filter is not applied again.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.clients.base import ChatBackend, SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.grading import Grader
from pacore_graph.eval.pool import TrajectoryPool
from pacore_graph.training.accuracy import PoolGrades, grade_pool
from pacore_graph.training.episode import Domain, Episode
from pacore_graph.training.pool import PoolProgress, ProblemPool, build_pools
from pacore_graph.training.sampling import MessageRange, problem_domain, sample_episode
from pacore_graph.training.stages import STAGE1_BOUND_TEXT, keeps_stage1, keeps_stage2, sample_syntheses

__all__ = [
    "HISTOGRAM_FILE",
    "MANIFEST_FILE",
    "SYNTHESES_FILE",
    "BuildResult",
    "BuildSettings",
    "NothingKeptError",
    "ProblemSummary",
    "build_training_data",
    "check_problems",
    "write_outputs",
]

MANIFEST_FILE = "manifest.json"
HISTOGRAM_FILE = "message_accuracy.png"
#: Where stage 2's syntheses are kept (a trajectory pool of its own), so a rerun does not sample them again.
SYNTHESES_FILE = "syntheses.jsonl"


class NothingKeptError(ConfigError):
    """The stage filter kept no problem: there is nothing to train on."""


class BuildSettings(BaseModel):
    """What a build does: pool size, |M|'s range, the stage and its samples, the seed, the sampling params."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool_size: int = Field(24, ge=1)
    messages: tuple[int, int] = (16, 24)
    stage: Literal[1, 2] = 1
    episodes_per_problem: int = Field(1, ge=1)
    synthesis_samples: int = Field(8, ge=1)
    domain: Domain | None = None
    seed: int = 0
    parallel: int = Field(8, ge=1)
    params: SamplingParams = SamplingParams()
    synthesis_params: SamplingParams = SamplingParams()
    compaction: CompactionPolicy = CompactionPolicy()

    @property
    def message_range(self) -> MessageRange:
        """|M|'s range."""
        return MessageRange(*self.messages)


class ProblemSummary(BaseModel):
    """One problem in the manifest: its pool's accuracy, what the filters said, and how many episodes it gave."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    domain: Domain
    right: int
    slots: int
    message_accuracy: float
    usable_messages: int
    enough_messages: bool
    stage1: bool
    synthesis_right: int | None = None
    synthesis_samples: int | None = None
    synthesis_accuracy: float | None = None
    stage2: bool | None = None
    kept: bool
    episodes: int = 0


@dataclass
class BuildResult:
    """What a build made: every problem's pool, grades and summary, and the kept problems' episodes."""

    settings: BuildSettings
    pools: list[ProblemPool]
    grades: list[PoolGrades]
    summaries: list[ProblemSummary]
    episodes: list[Episode]
    progress: PoolProgress
    syntheses_generated: int = 0
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """How many problems the stage filter kept."""
        return sum(s.kept for s in self.summaries)


def check_problems(problems: Sequence[Problem], domain: Domain | None) -> None:
    """Refuse a dataset that cannot be trained on: empty, without answers, or not of the ``--domain`` asked for."""
    if not problems:
        raise ConfigError("the dataset has no problems; give a JSONL file or a source with at least one problem")
    for problem in problems:
        kind = problem_domain(problem)
        if domain is not None and kind != domain:
            raise ConfigError(
                f"problem {problem.id!r} is a {kind} problem (category {problem.category!r}) but --domain is "
                f"{domain}; give a {domain} dataset or leave --domain out"
            )
        if kind == "math" and not problem.answer.strip():
            raise ConfigError(f"problem {problem.id!r} has no answer; every training problem needs one to be graded")
        if kind == "code" and not problem.metadata.get("tests"):
            raise ConfigError(f"code problem {problem.id!r} has no tests; every training problem needs them")


async def build_training_data(
    problems: Sequence[Problem],
    backend: ChatBackend,
    grader: Grader,
    settings: BuildSettings,
    *,
    pool: TrajectoryPool,
    syntheses: TrajectoryPool | None = None,
    model: str | None = None,
    on_pool: Callable[[PoolProgress], None] | None = None,
    on_grade: Callable[[int, int], None] | None = None,
    on_synthesis: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Build the episodes of ``problems`` (see the module docstring); requests go to ``backend``.

    ``on_pool`` hears pool progress after every slot; ``on_grade`` hears (done, total) after every graded problem,
    ``on_synthesis`` after every stage-2 synthesis.
    """
    check_problems(problems, settings.domain)
    progress = PoolProgress(total=0)

    def seen(update: PoolProgress) -> None:
        nonlocal progress
        progress = update
        if on_pool is not None:
            on_pool(update)

    pools = await build_pools(
        problems,
        backend,
        pool,
        pool_size=settings.pool_size,
        params=settings.params,
        policy=settings.compaction,
        model=model,
        parallel=settings.parallel,
        on_progress=seen,
    )
    grades: list[PoolGrades] = []
    for p in pools:
        grades.append(await grade_pool(grader, p))
        if on_grade is not None:
            on_grade(len(grades), len(pools))
    messages = settings.message_range

    def episodes_of(p: ProblemPool, g: PoolGrades, count: int, stage: int) -> list[Episode]:
        drawn = (
            sample_episode(p, messages=messages, seed=settings.seed, index=i, accuracy=float(g.accuracy), stage=stage)
            for i in range(count)
        )
        return [e for e in drawn if e is not None]

    synth: dict[str, list[bool]] = {}
    generated = 0
    if settings.stage == 2:
        store = syntheses if syntheses is not None else TrajectoryPool()  # an empty pool is falsy
        candidates = [(p, g) for p, g in zip(pools, grades, strict=True) if len(p.usable) >= messages.lo]
        total = len(candidates) * settings.synthesis_samples
        done = 0

        def one_done(new: bool) -> None:
            nonlocal done, generated
            done += 1
            generated += new
            if on_synthesis is not None:
                on_synthesis(done, total)

        limit = asyncio.Semaphore(settings.parallel)  # problems sampled at once, as for the pool

        async def sample(p: ProblemPool, g: PoolGrades) -> list[bool]:
            async with limit:
                return await sample_syntheses(
                    p,
                    episodes_of(p, g, settings.synthesis_samples, 2),
                    backend,
                    store,
                    grader,
                    params=settings.synthesis_params,
                    model=model,
                    on_done=one_done,
                )

        sampled = await asyncio.gather(*(sample(p, g) for p, g in candidates))
        synth = {p.problem.id: right for (p, _), right in zip(candidates, sampled, strict=True)}

    summaries: list[ProblemSummary] = []
    episodes: list[Episode] = []
    for p, g in zip(pools, grades, strict=True):
        kind = problem_domain(p.problem)
        enough = len(p.usable) >= messages.lo
        stage1 = enough and keeps_stage1(g.accuracy, kind)
        right = synth.get(p.problem.id)
        stage2 = None if right is None else keeps_stage2(Fraction(sum(right), len(right)))
        kept = stage1 if settings.stage == 1 else bool(stage2)
        mine = episodes_of(p, g, settings.episodes_per_problem, settings.stage) if kept else []
        episodes.extend(mine)
        summaries.append(
            ProblemSummary(
                id=p.problem.id,
                domain=kind,
                right=g.right,
                slots=len(g.correct),
                message_accuracy=float(g.accuracy),
                usable_messages=len(p.usable),
                enough_messages=enough,
                stage1=stage1,
                synthesis_right=None if right is None else sum(right),
                synthesis_samples=None if right is None else len(right),
                synthesis_accuracy=None if not right else sum(right) / len(right),
                stage2=stage2,
                kept=kept,
                episodes=len(mine),
            )
        )
    return BuildResult(settings, pools, grades, summaries, episodes, progress, generated, model)


def text_histogram(result: BuildResult) -> str:
    """The message accuracy histogram in one line: ``right/slots: problems`` for each count that occurs."""
    counts: dict[tuple[int, int], int] = {}
    for s in result.summaries:
        counts[(s.right, s.slots)] = counts.get((s.right, s.slots), 0) + 1
    return ", ".join(f"{r}/{n}: {c}" for (r, n), c in sorted(counts.items()))


def _filter_text(settings: BuildSettings, domains: set[Domain]) -> str:
    if settings.stage == 2:
        return "0 < synthesis accuracy < 1"
    bounds = " or ".join(f"< {STAGE1_BOUND_TEXT[d]} ({d})" for d in sorted(domains))
    return f"0 < message accuracy {bounds}"


def manifest(result: BuildResult, *, dataset: str, files: dict[str, str]) -> dict[str, Any]:
    """The manifest: settings and seed, counts per stage, per-problem accuracy, what the pool held, the files."""
    summaries = result.summaries
    counts: dict[str, Any] = {
        "problems": len(summaries),
        "enough_messages": sum(s.enough_messages for s in summaries),
        "stage1": sum(s.stage1 for s in summaries),
        "kept": result.kept,
        "episodes": len(result.episodes),
    }
    if result.settings.stage == 2:
        counts["stage2"] = sum(bool(s.stage2) for s in summaries)
    settings = result.settings.model_dump(mode="json")
    settings["messages"] = result.settings.message_range.spec
    return {
        "dataset": dataset,
        "model": result.model,
        "stage": result.settings.stage,
        "seed": result.settings.seed,
        "settings": settings,
        "filter": _filter_text(result.settings, {s.domain for s in summaries}),
        "counts": counts,
        "pool": {
            "slots": result.progress.total,
            "generated": result.progress.generated,
            "reused": result.progress.reused,
            "syntheses_generated": result.syntheses_generated,
        },
        "message_accuracy": {s.id: s.message_accuracy for s in summaries},
        "problems": [s.model_dump(mode="json") for s in summaries],
        "files": files,
    }


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_outputs(result: BuildResult, out: Path, *, dataset: str) -> dict[str, Path]:
    """Write the TRL and verl files, the manifest and the histogram under ``out``; returns their paths by name.

    Raises :class:`NothingKeptError` (with the accuracy histogram in its message) when no problem was kept, and
    then writes nothing.
    """
    from pacore_graph.training.export import write_exports
    from pacore_graph.training.plot import plot_message_accuracy

    if not result.episodes:
        why = _filter_text(result.settings, {s.domain for s in result.summaries} or {"math"})
        short = sum(not s.enough_messages for s in result.summaries)
        note = f"; {short} had fewer than {result.settings.messages[0]} usable messages" if short else ""
        raise NothingKeptError(
            f"stage {result.settings.stage} kept none of the {len(result.summaries)} problems ({why}){note}; "
            f"message accuracy histogram (right/slots: problems): {text_histogram(result)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(write_exports(result.episodes, out))
    paths["histogram"] = out / HISTOGRAM_FILE
    fd, temporary = tempfile.mkstemp(prefix=f".{HISTOGRAM_FILE}.", suffix=".png", dir=out)
    os.close(fd)
    try:
        plot_message_accuracy(result, Path(temporary))
        os.replace(temporary, paths["histogram"])
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    paths["manifest"] = out / MANIFEST_FILE
    files = {name: path.name for name, path in paths.items()}
    body = json.dumps(manifest(result, dataset=dataset, files=files), indent=2) + "\n"
    _write_atomic(paths["manifest"], body.encode())
    return paths
