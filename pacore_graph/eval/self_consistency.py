"""Self-consistency curves for free: SC@k from the round-1 pool, by subsampling, without a new request.

Every round-1 trajectory an evaluation drew is stored in the pool (:mod:`pacore_graph.eval.pool`), and a
self-consistency run of width k is a majority vote over k of them. So, per problem, the pool the problem's runs
drew from (the one with the most entries, if they drew from several) gives SC@k for every k up to its size:

* k runs over 1, 2, 4, ... and the pool size itself, up to the smallest pool over the problems;
* for each k, every k-subset when there are at most ``subsamples`` of them, else ``subsamples`` random ones
  (seeded); each subset votes over its entries' extracted answers (:func:`~pacore_graph.extract.majority_vote`,
  ties to the first) and is right when the winning answer was graded right; no answer at all is wrong;
* SC@k accuracy is the mean over problems of the mean over subsets; its TTC is the mean completion tokens of a
  subset (what an SC@k run would have spent), averaged over problems.

Each pool entry is graded once, with the evaluation's grader.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.grading import Grader, grade_async
from pacore_graph.eval.pool import PoolEntry, TrajectoryPool, stable_seed
from pacore_graph.extract import majority_vote, normalize_answer

__all__ = ["SCPoint", "sc_curve", "sc_ks", "sc_table"]


class SCPoint(BaseModel):
    """SC@k measured from the pool: accuracy, the mean TTC of one SC@k run, and what it was averaged over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int
    accuracy: float
    mean_ttc_tokens: float
    problems: int
    subsets: int  # subsets voted on per problem (at most)


def sc_ks(size: int) -> list[int]:
    """1, 2, 4, ... up to ``size``, and ``size`` itself."""
    ks = [2**i for i in range(size.bit_length()) if 2**i <= size]
    return ks if not ks or ks[-1] == size else [*ks, size]


def _subsets(n: int, k: int, subsamples: int, seed: int) -> list[tuple[int, ...]]:
    if math.comb(n, k) <= subsamples:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(seed)
    return [tuple(rng.sample(range(n), k)) for _ in range(subsamples)]


async def sc_curve(
    problems: Sequence[Problem],
    records: Sequence[Any],
    pool: TrajectoryPool,
    grader: Grader,
    *,
    subsamples: int = 64,
    seed: int = 0,
) -> list[SCPoint]:
    """SC@k for k = 1, 2, 4, ... from the pool entries that ``records`` (eval records) drew (empty without any)."""
    keys: dict[str, Counter[str]] = {}
    for record in records:
        if getattr(record, "pool_key", None):
            keys.setdefault(record.problem_id, Counter())[record.pool_key] += 1
    chosen: list[tuple[Problem, list[PoolEntry]]] = []
    for problem in problems:
        candidates = keys.get(problem.id)
        if not candidates:
            continue
        entries = max((pool.entries(key) for key in candidates), key=len)
        if entries:
            chosen.append((problem, entries))
    if not chosen:
        return []
    graded: list[tuple[list[str | None], list[bool], list[int]]] = []
    for problem, entries in chosen:
        grades = [await grade_async(grader, problem, entry.content) for entry in entries]
        answers = [normalize_answer(g.extracted) if g.extracted is not None else None for g in grades]
        graded.append((answers, [g.correct for g in grades], [e.completion_tokens for e in entries]))
    points: list[SCPoint] = []
    for k in sc_ks(min(len(answers) for answers, _, _ in graded)):
        accuracies: list[float] = []
        tokens: list[float] = []
        most = 0
        for (problem, _), (answers, correct, spent) in zip(chosen, graded, strict=True):
            subsets = _subsets(len(answers), k, subsamples, stable_seed(seed, problem.id, k))
            most = max(most, len(subsets))
            right = 0
            for subset in subsets:
                vote = majority_vote(answers[i] for i in subset)
                if vote.answer is not None and vote.winner_index is not None:
                    right += correct[subset[vote.winner_index]]
            accuracies.append(right / len(subsets))
            tokens.append(statistics.fmean(sum(spent[i] for i in subset) for subset in subsets))
        points.append(
            SCPoint(
                k=k,
                accuracy=statistics.fmean(accuracies),
                mean_ttc_tokens=statistics.fmean(tokens),
                problems=len(chosen),
                subsets=most,
            )
        )
    return points


def sc_table(points: Sequence[SCPoint]) -> str:
    """The SC@k curve as a markdown table."""
    lines = [
        "| SC@k (round-1 pool) | accuracy % | mean TTC tokens | problems | subsets per problem |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| SC@{p.k} | {100 * p.accuracy:.1f} | {p.mean_ttc_tokens:,.0f} | {p.problems} | {p.subsets} |" for p in points
    ]
    return "\n".join(lines) + "\n"
