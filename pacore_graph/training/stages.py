"""The curriculum's filters (paper §2.2): which problems each training stage keeps.

* **Stage 1** keeps a problem when 0 < message accuracy < 9/24 (math) or < 15/24 (code): most of its messages are
  wrong, so a vote over them is no shortcut, yet some are right. The bounds are fractions of the pool, compared
  exactly, whatever the pool size.
* **Stage 2** keeps a problem when 0 < synthesis accuracy < 1 under the current policy: S syntheses are sampled on
  episodes of the problem (:func:`sample_syntheses`) and graded; a problem the policy always or never solves teaches
  nothing.

Syntheses are sampled as the graph samples its final round: the synthesis sampling params, under
:func:`~pacore_graph.clients.limiter.request_priority` ``2`` (after round 1). Each one is stored in a
:class:`~pacore_graph.eval.pool.TrajectoryPool` (its own JSONL file) keyed by its prompt, so a rerun after a kill
asks only for the syntheses it does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from fractions import Fraction

from pacore_graph.clients.base import ChatBackend, SamplingParams
from pacore_graph.clients.limiter import request_priority
from pacore_graph.eval.grading import Grader
from pacore_graph.eval.pool import TrajectoryPool, pool_key
from pacore_graph.training.accuracy import grade_text
from pacore_graph.training.episode import Domain, Episode
from pacore_graph.training.pool import ProblemPool

__all__ = ["STAGE1_BOUND_TEXT", "STAGE1_UPPER", "keeps_stage1", "keeps_stage2", "sample_syntheses"]

#: Stage 1's upper bound on message accuracy, by domain (the paper's 9/24 for math, 15/24 for code).
STAGE1_UPPER: dict[Domain, Fraction] = {"math": Fraction(9, 24), "code": Fraction(15, 24)}
#: The same bounds as the paper writes them (a Fraction prints 9/24 as 3/8).
STAGE1_BOUND_TEXT: dict[Domain, str] = {"math": "9/24", "code": "15/24"}

#: The round a synthesis request belongs to: after round 1, so the client lets it in first.
SYNTHESIS_ROUND = 2


def keeps_stage1(accuracy: Fraction, domain: Domain) -> bool:
    """Whether stage 1 keeps a problem with this message accuracy."""
    return 0 < accuracy < STAGE1_UPPER[domain]


def keeps_stage2(accuracy: Fraction) -> bool:
    """Whether stage 2 keeps a problem with this synthesis accuracy."""
    return 0 < accuracy < 1


async def sample_syntheses(
    pool: ProblemPool,
    episodes: Sequence[Episode],
    backend: ChatBackend,
    store: TrajectoryPool,
    grader: Grader,
    *,
    params: SamplingParams,
    model: str | None = None,
    on_done: Callable[[bool], None] | None = None,
) -> list[bool]:
    """One synthesis per episode with the current policy, graded after its last ``</think>``; True where right.

    ``on_done`` hears after each synthesis is stored and graded (True when it was generated, not reused).
    """

    async def one(episode: Episode) -> bool:
        key = pool_key(episode.prompt, params, model)
        generated = False
        if store.has(key, 0):
            entry, _ = await store.get(key, 0, backend, episode.prompt, params)
        else:
            with request_priority(SYNTHESIS_ROUND):
                entry, generated = await store.get(
                    key, 0, backend, episode.prompt, params.with_seed_offset(episode.index)
                )
        right = await grade_text(grader, pool, entry.content)
        if on_done is not None:
            on_done(generated)
        return right

    return list(await asyncio.gather(*(one(e) for e in episodes)))
