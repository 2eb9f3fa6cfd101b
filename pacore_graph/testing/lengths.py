"""Seeded output-length scripts for the simulator: real models write lengths that vary widely.

A :class:`LengthDistribution` draws a length from a key, so the same key always gets the same length whatever the
order of arrival. :class:`ScriptedLengths` is a ``completion_tokens`` script for
:class:`~pacore_graph.testing.simulator.SimulatorServer`: the j-th sequence asked for under one key (by default the
prompt itself) gets ``distribution.sample(key, j)``, so two clients sending the same workload in different orders
get the same multiset of lengths per prompt. Example::

    lengths = ScriptedLengths(LengthDistribution(kind="uniform", low=128, high=896, seed=1))
    async with SimulatorServer(config, completion_tokens=lengths) as server:
        ...
"""

from __future__ import annotations

import collections
import json
import math
import random
from collections.abc import Callable, Hashable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.testing.simulator import SimRequest

__all__ = ["LengthDistribution", "ScriptedLengths"]


class LengthDistribution(BaseModel):
    """Output lengths in tokens: ``fixed`` (``high``), ``uniform`` in [``low``, ``high``], or ``lognormal``.

    ``lognormal`` is long-tailed: ``median × exp(sigma × N(0, 1))``, clipped to [``low``, ``high``] (most outputs
    are short, a few are many times longer, as reasoning models' are). Draws are seeded by ``seed`` and the key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fixed", "uniform", "lognormal"] = "uniform"
    low: int = Field(128, ge=1)
    high: int = Field(896, ge=1)
    median: float = Field(320.0, gt=0)
    sigma: float = Field(0.75, ge=0)
    seed: int = 0

    def sample(self, *key: Hashable) -> int:
        """The length for ``key`` (the same key gives the same length)."""
        if self.kind == "fixed":
            return self.high
        rng = random.Random(f"{self.seed}|{key!r}")  # str seeds hash with SHA-512: stable across processes
        if self.kind == "uniform":
            return rng.randint(self.low, self.high)
        value = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return max(self.low, min(self.high, round(value)))

    @property
    def label(self) -> str:
        """A short description, for benchmark output."""
        if self.kind == "fixed":
            return f"fixed {self.high}"
        if self.kind == "uniform":
            return f"uniform [{self.low}, {self.high}]"
        return f"lognormal (median {self.median:g}, sigma {self.sigma:g}, clipped to [{self.low}, {self.high}])"


def _prompt_key(request: SimRequest) -> Hashable:
    return json.dumps(request.messages, sort_keys=True)


class ScriptedLengths:
    """A ``completion_tokens`` script: the j-th sequence under ``key(request)`` gets ``distribution.sample(key, j)``.

    ``key`` defaults to the prompt (its messages), so every explorer of one round draws from one stream.
    """

    def __init__(self, distribution: LengthDistribution, key: Callable[[SimRequest], Hashable] | None = None) -> None:
        self.distribution = distribution
        self.key = key or _prompt_key
        self._drawn: collections.Counter[Hashable] = collections.Counter()

    def __call__(self, request: SimRequest, index: int) -> int:
        """The length of choice ``index`` of ``request`` (the simulator asks once per choice, in order)."""
        key = self.key(request)
        j = self._drawn[key]
        self._drawn[key] += 1
        return self.distribution.sample(key, j)
