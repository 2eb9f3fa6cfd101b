"""A lower bound on the simulator's wall time counted in decode steps: tight when output lengths vary.

:func:`~pacore_graph.testing.simulator.lower_bound` charges each set of sequences its tokens at the best
per-token cost its width allows, which is tight when every sample has the same length. When lengths vary, the
time goes to steps that hold few sequences: a round waits for its longest trajectory, and the next round cannot
start before. :func:`step_lower_bound` counts that.

**The argument.** The simulator is busy for exactly ``Σ_t (prefill_t + base + per_seq × b_t)`` over its steps
``t``, where ``b_t`` sequences get a token in step ``t`` (``SimulatorConfig.step_seconds``; an admission step
adds its uncached prompt tokens × ``prefill_seconds_per_token``). Every running sequence gets one token per
step and stops at its length, so ``Σ_t b_t = N``, the workload's output tokens, whatever the schedule; every
prompt is computed at least once, beyond what an unbounded prefix cache fed the prompts in arrival order still
holds (the stages' ``prompt_tokens``), so ``Σ_t prefill_t ≥ P``. Hence, for any client::

    wall ≥ busy = P + per_seq × N + base × steps

and only ``steps``, the number of decode steps, depends on the schedule. Any schedule is a unit-time schedule
where a step decodes at most ``W = max(max_num_seqs, the largest request's n)`` sequences (a larger request runs
alone), a sequence of length ``L`` takes ``L`` distinct steps, and no sequence of a chain's stage ``r + 1`` gets a
token before the step after the last token of its stage ``r`` (the next round's requests are sent when the
round's last answer arrives, and join at a step boundary). So ``steps`` is at least each of:

* **capacity**: ``ceil(N / W)``;
* **path**: for each chain, the sum over its stages of what a stage needs even alone, ``max(its longest
  sequence, ceil(its tokens / W))``: a stage takes at least as many steps as its longest member, and the stages
  of a chain follow each other;
* **window**: for stage indices ``a ≤ b`` and a set ``C`` of chains, let ``X`` be the stages ``a..b`` of the
  chains in ``C``, ``h`` the least head over ``C`` (what a chain's stages before ``a`` need alone, as above)
  and ``t`` the least tail (likewise for its stages after ``b``). No token of ``X`` comes before step
  ``h + 1`` (each chain first runs its earlier stages, one after another); ``X`` then needs at least
  ``max(ceil(tokens(X) / W), the longest path of one chain within X)`` steps; and the chain of the last stage
  of ``X`` to finish still runs its later stages, at least ``t`` steps. So ``steps ≥ h + steps(X) + t``. This
  holds for every ``C``; the bound takes the best over ``C = {c : head(c) ≥ h, tail(c) ≥ t}`` for every pair of
  thresholds. With ``a = 0`` it is the barrier of ``lower_bound`` (every chain's stages up to ``b``, then the
  shortest remaining path), in steps.

Every term is a valid lower bound on ``steps``, so their maximum is one, and ``seconds`` is a lower bound on the
wall time. Client time is not counted (it only adds idle time). It is never below ``lower_bound``: that one
charges a set of ``S`` sequences ``P + per_seq × N + base × N / min(S, W)``, a chain's critical path only its own
prefill and tokens, and ``N / S`` (the mean length) is at most the longest; the two agree on a single round of
equal lengths, where both are exact.

**Several servers** (``servers=S``, identical, each with its own prefix cache): the busiest server is busy at
least the average, ``(P + per_seq × N + base × ceil(N / W)) / S`` (each prompt computed at least once somewhere);
and a chain's stage still waits for its longest sequence, decoded on one server in steps that each cost at least
``base + per_seq`` (that sequence's own token), after its prompt was prefilled there. The bound is the larger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pacore_graph.testing.simulator import SimulatorConfig, Stage

__all__ = ["StepBound", "step_lower_bound"]


@dataclass(frozen=True)
class StepBound:
    """``seconds = prefill + token_seconds + decode_step_base × steps`` (see the module docstring)."""

    prefill: float  # P × prefill_seconds_per_token
    token_seconds: float  # N × decode_step_per_seq: every schedule pays it
    step_base: float  # decode_step_base
    capacity_steps: int
    path_steps: int
    window_steps: int
    decode_tokens: int
    servers: int = 1
    path_seconds: float = 0.0  # servers > 1: the longest chain, each stage's longest sequence on one server

    @property
    def steps(self) -> int:
        """The fewest decode steps any schedule needs on one server: the largest of the three terms."""
        return max(self.capacity_steps, self.path_steps, self.window_steps)

    @property
    def seconds(self) -> float:
        """The bound on the wall time, in simulated seconds."""
        if self.servers > 1:
            work = self.prefill + self.token_seconds + self.step_base * self.capacity_steps
            return max(work / self.servers, self.path_seconds)
        return self.prefill + self.token_seconds + self.step_base * self.steps

    def seconds_at(self, steps: int) -> float:
        """What the wall time would be with ``steps`` decode steps and no idle time (to express a gap in steps)."""
        return self.prefill + self.token_seconds + self.step_base * steps


def step_lower_bound(config: SimulatorConfig, chains: Sequence[Sequence[Stage]], servers: int = 1) -> StepBound:
    """The lower bound on the simulated time to run ``chains`` (one chain of stages per problem), in steps.

    A stage's ``lengths`` (or ``output_tokens`` for all its samples) give the steps it needs; ``servers``
    identical servers share the work. See the module docstring for why every term is a bound.
    """
    stages = [stage for chain in chains for stage in chain]
    width = max([config.max_num_seqs, *(s.request_n for s in stages)])
    tokens = sum(s.tokens for s in stages)
    path = max((sum(_alone(s, width) for s in chain) for chain in chains), default=0)
    one_sequence = config.step_seconds(1)
    path_seconds = max(
        (
            sum(s.prompt_tokens * config.prefill_seconds_per_token + s.longest * one_sequence for s in chain)
            for chain in chains
        ),
        default=0.0,
    )
    return StepBound(
        servers=max(1, servers),
        path_seconds=path_seconds,
        prefill=sum(s.prompt_tokens for s in stages) * config.prefill_seconds_per_token,
        token_seconds=tokens * config.decode_step_per_seq,
        step_base=config.decode_step_base,
        capacity_steps=math.ceil(tokens / width),
        path_steps=path,
        window_steps=_window_steps(chains, width),
        decode_tokens=tokens,
    )


def _alone(stage: Stage, width: int) -> int:
    """The steps one stage needs even alone: its longest sequence, and its tokens at ``width`` per step."""
    return max(stage.longest, math.ceil(stage.tokens / width))


def _window_steps(chains: Sequence[Sequence[Stage]], width: int) -> int:
    """The best window term: over stage ranges [a, b] and chain sets chosen by head and tail thresholds."""
    depth = max((len(chain) for chain in chains), default=0)
    best = 0
    for a in range(depth):
        for b in range(a, depth):
            # Per chain that has stage a: (head steps, tail steps, tokens in a..b, its own path in a..b).
            rows = [
                (
                    sum(_alone(s, width) for s in chain[:a]),
                    sum(_alone(s, width) for s in chain[b + 1 :]),
                    sum(s.tokens for s in chain[a : b + 1]),
                    sum(_alone(s, width) for s in chain[a : b + 1]),
                )
                for chain in chains
                if len(chain) > a
            ]
            for head in sorted({row[0] for row in rows}):
                chosen = sorted((row for row in rows if row[0] >= head), key=lambda row: -row[1])
                total, own = 0, 0
                for i, (_, tail, row_tokens, row_path) in enumerate(chosen):
                    total += row_tokens
                    own = max(own, row_path)
                    if i + 1 < len(chosen) and chosen[i + 1][1] == tail:
                        continue  # take every chain with this tail before counting
                    best = max(best, head + max(math.ceil(total / width), own) + tail)
    return best
