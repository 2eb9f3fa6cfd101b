"""The step-counting lower bound (testing.bound) and the seeded output lengths (testing.lengths).

The bound is checked against the true optimum of tiny instances, found by exhaustive search over every schedule
of the simulator's step model (even preemptive ones, which only makes the optimum smaller), against the older
token-cost bound, and against real runs of the graph on the simulator with varied lengths.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import re
import statistics
from collections import defaultdict

import pytest

from pacore_graph import PaCoReConfig, build_pacore_graph
from pacore_graph.clients import VLLMClient
from pacore_graph.clients.base import SamplingParams
from pacore_graph.testing.bound import step_lower_bound
from pacore_graph.testing.lengths import LengthDistribution, ScriptedLengths
from pacore_graph.testing.simulator import SimRequest, SimulatorConfig, SimulatorServer, Stage, lower_bound

STEPS_ONLY = SimulatorConfig(
    max_num_seqs=2, prefill_seconds_per_token=0.0, decode_step_base=1.0, decode_step_per_seq=0.0
)


def optimal_steps(chains: list[list[tuple[int, ...]]], width: int) -> int:
    """The fewest steps of any schedule: each step decodes at most ``width`` unfinished sequences of the chains'
    current stages (any of them: preemption allowed); a chain's next stage is available from the next step."""
    start = tuple((0, tuple(sorted(chain[0]))) if chain else (0, ()) for chain in chains)

    def advance(state: tuple[tuple[int, tuple[int, ...]], ...]) -> tuple[tuple[int, tuple[int, ...]], ...]:
        out = []
        for c, (stage, remaining) in enumerate(state):
            if remaining or stage + 1 >= len(chains[c]):
                out.append((stage, remaining))
            else:
                out.append((stage + 1, tuple(sorted(chains[c][stage + 1]))))
        return tuple(out)

    @functools.cache
    def best(state: tuple[tuple[int, tuple[int, ...]], ...]) -> int:
        active = [(c, i) for c, (_, remaining) in enumerate(state) for i in range(len(remaining))]
        if not active:
            return 0
        result = 10**9
        for size in range(1, min(width, len(active)) + 1):
            for chosen in itertools.combinations(active, size):
                new = [list(remaining) for _, remaining in state]
                for c, i in chosen:
                    new[c][i] -= 1
                state2 = tuple((stage, tuple(sorted(x for x in new[c] if x > 0))) for c, (stage, _) in enumerate(state))
                result = min(result, 1 + best(advance(state2)))
        return result

    return best(start)


def _stages(chain: list[tuple[int, ...]]) -> list[Stage]:
    return [Stage(0, len(lengths), 0, lengths=lengths) for lengths in chain]


def test_the_bound_never_exceeds_the_optimum_of_tiny_instances_and_often_meets_it() -> None:
    rng = random.Random(5)
    met = 0
    trials = 120
    for _ in range(trials):
        width = rng.randint(1, 3)
        chains = [
            [tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 2))]
            for _ in range(rng.randint(1, 3))
        ]
        config = STEPS_ONLY.model_copy(update={"max_num_seqs": width})
        bound = step_lower_bound(config, [_stages(chain) for chain in chains])
        best = optimal_steps(chains, width)
        assert bound.steps <= best, (chains, width)
        met += bound.steps == best
    assert met >= trials * 0.8  # and it is tight on most of them


def test_on_a_hand_checked_workload_a_round_waits_for_its_longest_trajectory() -> None:
    config = STEPS_ONLY.model_copy(update={"max_num_seqs": 4})
    # One problem: 4 samples of lengths 1, 1, 1, 9, then a synthesis of 2.
    bound = step_lower_bound(config, [[Stage(0, 4, 0, lengths=(1, 1, 1, 9)), Stage(0, 1, 2)]])
    assert (bound.capacity_steps, bound.path_steps) == (4, 11)
    assert bound.steps == 11 and bound.seconds == pytest.approx(11.0)
    # The token-cost bound only sees 12 tokens at 4 per step, then 2 alone: 5 steps.
    assert lower_bound(config, [[Stage(0, 4, 0, lengths=(1, 1, 1, 9)), Stage(0, 1, 2)]]).seconds == pytest.approx(5)


def test_the_window_term_counts_a_barrier_then_the_shortest_tail() -> None:
    config = STEPS_ONLY.model_copy(update={"max_num_seqs": 4})
    # Two problems: 4 × 3 tokens, then a synthesis of 5 (or 6). Both first rounds need 24 / 4 = 6 steps, and
    # whichever problem finishes its round last still has its synthesis: 6 + 5 = 11, more than the capacity
    # (35 / 4 → 9) or either path (3 + 6 = 9). The best schedule takes 12 (a synthesis that starts early shares
    # the steps with the other round's 4 explorers: 5 sequences for 4 slots).
    chains = [[Stage(0, 4, 3), Stage(0, 1, tail)] for tail in (5, 6)]
    bound = step_lower_bound(config, chains)
    assert (bound.capacity_steps, bound.path_steps, bound.window_steps) == (9, 9, 11)
    assert bound.steps == 11 and optimal_steps([[(3, 3, 3, 3), (t,)] for t in (5, 6)], 4) == 12


def test_never_below_the_token_cost_bound_and_equal_on_one_round_of_equal_lengths() -> None:
    config = SimulatorConfig(max_num_seqs=8, prefill_seconds_per_token=1e-4, decode_step_base=0.02)
    rng = random.Random(9)
    for _ in range(50):
        chains = [
            [Stage(rng.randint(0, 500), k, 0, lengths=tuple(rng.randint(1, 60) for _ in range(k))) for k in (6, 3, 1)]
            for _ in range(rng.randint(1, 5))
        ]
        assert step_lower_bound(config, chains).seconds >= lower_bound(config, chains).seconds * (1 - 1e-12)
    for sequences in (1, 5, 8, 16):
        chains = [[Stage(300, sequences, 40)]]
        assert step_lower_bound(config, chains).seconds == pytest.approx(lower_bound(config, chains).seconds)


def test_lengths_are_seeded_per_key_and_independent_of_arrival_order() -> None:
    uniform = LengthDistribution(kind="uniform", low=128, high=896, seed=3)
    draws = [uniform.sample("p", j) for j in range(2000)]
    assert draws == [uniform.sample("p", j) for j in range(2000)]
    assert min(draws) >= 128 and max(draws) <= 896 and 480 < statistics.mean(draws) < 544
    assert [LengthDistribution(kind="uniform", seed=4).sample("p", j) for j in range(20)] != draws[:20]
    tail = LengthDistribution(kind="lognormal", median=320, sigma=0.75, low=16, high=4096, seed=3)
    long = [tail.sample("p", j) for j in range(2000)]
    assert 290 < statistics.median(long) < 350 and max(long) > 5 * statistics.median(long) and max(long) <= 4096
    assert LengthDistribution(kind="fixed", high=77).sample("anything") == 77

    script = ScriptedLengths(uniform, key=lambda request: request.messages[0]["content"])

    def request(content: str, n: int = 1) -> SimRequest:
        return SimRequest(0, [{"role": "user", "content": content}], n, None, 1, 0.0)

    first = [script(request("a"), 0) for _ in range(3)] + [script(request("b"), 0)]
    other = ScriptedLengths(uniform, key=lambda request: request.messages[0]["content"])
    second = [other(request("b"), 0)] + [other(request("a"), i) for i in range(3)]  # b first, a as one n=3 request
    assert sorted(first[:3]) == sorted(second[1:]) and first[3] == second[0]


async def test_no_client_beats_the_step_bound_with_varied_lengths() -> None:
    # 6 problems × [8] with long-tailed lengths on a 16-slot simulator, on its virtual clock.
    config = SimulatorConfig(time_scale=0, max_num_seqs=16)
    lengths = ScriptedLengths(LengthDistribution(kind="lognormal", median=30, sigma=0.8, low=2, high=400, seed=2))
    params = SamplingParams(max_tokens=400, seed=1)
    async with (
        SimulatorServer(config, completion_tokens=lengths) as server,
        VLLMClient(server.base_url, max_concurrency=64) as client,
    ):
        graph = build_pacore_graph(client, config=PaCoReConfig(schedule=[8], params=params))
        start = server.sim_now()
        await asyncio.gather(*(graph.ainvoke({"problem": f"Problem {i}: what is {i} + {i}?"}) for i in range(6)))
        elapsed = server.sim_now() - start
    by_problem: dict[int, dict[str, list[int]]] = defaultdict(dict)
    log = {request.id: request for request in server.requests}
    for request in log.values():
        text = json.dumps(request.messages)
        problem = int(re.search(r"Problem (\d+):", text).group(1))  # type: ignore[union-attr]
        by_problem[problem].setdefault(text, [])
    # The lengths each prompt got, replayed from the same seeded script in arrival order.
    replay = ScriptedLengths(lengths.distribution)
    for request in server.requests:
        text = json.dumps(request.messages)
        problem = int(re.search(r"Problem (\d+):", text).group(1))  # type: ignore[union-attr]
        by_problem[problem][text].extend(min(400, replay(request, i)) for i in range(request.n))
    chains = [[Stage(0, len(ls), 0, lengths=tuple(ls)) for ls in prompts.values()] for prompts in by_problem.values()]
    assert [[s.sequences for s in c] for c in chains] == [[8, 1]] * 6
    bound = step_lower_bound(config, chains)
    assert bound.path_steps > bound.capacity_steps  # long tails: the bound is set by the longest trajectories
    assert elapsed >= bound.seconds * 0.999


def test_over_two_servers_the_bound_is_half_the_work_or_the_longest_chain() -> None:
    config = SimulatorConfig(
        max_num_seqs=4, prefill_seconds_per_token=0.0, decode_step_base=1.0, decode_step_per_seq=0.0
    )
    wide = [[Stage(0, 8, 10)]] * 4  # 320 tokens: 80 steps on one server, 40 each on two
    assert step_lower_bound(config, wide).seconds == 80
    assert step_lower_bound(config, wide, servers=2).seconds == 40
    narrow = [[Stage(0, 1, 30), Stage(0, 1, 30)]]  # one chain: two servers do not shorten it
    assert step_lower_bound(config, narrow, servers=2).seconds == 60 == step_lower_bound(config, narrow).seconds
