"""Prefix-aware routing: ``BalancedBackend(prefix_affinity=True)`` over two simulators with prefix caches."""

import asyncio
import json
import re

from pacore_graph import BalancedBackend, PaCoReConfig, SamplingParams, VLLMClient, build_pacore_graph
from pacore_graph.testing import FakeOpenAIServer, FakeReply
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer

PROBLEM = re.compile(r"Problem (\d+):")


def problem_text(i: int) -> str:
    """A problem of ~400 words, so its prefill is worth saving."""
    return f"Problem {i}: " + " ".join(f"fact{i}_{j}" for j in range(400)) + " What is the answer?"


async def _run(prefix_affinity: bool) -> tuple[list[SimulatorServer], dict[int, set[int]]]:
    config = SimulatorConfig(time_scale=0, max_num_seqs=64)
    async with SimulatorServer(config) as one, SimulatorServer(config) as two:
        clients = [VLLMClient(s.base_url, max_concurrency=64, adaptive_concurrency=False) for s in (one, two)]
        async with BalancedBackend(clients, prefix_affinity=prefix_affinity) as backend:
            params = SamplingParams(max_tokens=32, seed=1)
            graph = build_pacore_graph(backend, config=PaCoReConfig(schedule=[8, 2], params=params))
            await asyncio.gather(*(graph.ainvoke({"problem": problem_text(i)}) for i in range(4)))
        where: dict[int, set[int]] = {}
        for index, server in enumerate((one, two)):
            for request in server.requests:
                problem = int(PROBLEM.search(json.dumps(request.messages)).group(1))  # type: ignore[union-attr]
                where.setdefault(problem, set()).add(index)
        return [one, two], where


async def test_each_problem_stays_on_one_server_and_is_prefilled_there_once() -> None:
    (one, two), where = await _run(prefix_affinity=True)
    assert all(len(servers) == 1 for servers in where.values())  # every request of a problem on one server
    assert {next(iter(s)) for s in where.values()} == {0, 1}  # and the problems spread over both
    affine = one.stats.prefill_tokens + two.stats.prefill_tokens
    (one, two), where = await _run(prefix_affinity=False)
    assert any(len(servers) == 2 for servers in where.values())  # least outstanding splits problems
    spread = one.stats.prefill_tokens + two.stats.prefill_tokens
    assert affine < spread * 0.75


async def test_a_full_home_sends_the_rest_to_the_least_loaded_backend() -> None:
    def script(request):
        return FakeReply(content="<think>t</think>ok", delay=0.05)

    async with FakeOpenAIServer(script) as one, FakeOpenAIServer(script) as two:
        clients = [VLLMClient(s.base_url, max_concurrency=3, adaptive_concurrency=False) for s in (one, two)]
        async with BalancedBackend(clients, prefix_affinity=True) as backend:
            messages = [{"role": "user", "content": "the same prompt"}]
            await asyncio.gather(*(backend.chat(messages, SamplingParams()) for _ in range(5)))
            # Outside a run the key is the prompt: 3 fill its home's window, the other 2 go to the other server.
            assert sorted([len(one.requests), len(two.requests)]) == [2, 3]
            await asyncio.gather(*(backend.chat(messages, SamplingParams()) for _ in range(3)))
        # Its home had room again: the next three all went there.
        assert sorted([len(one.requests), len(two.requests)]) == [2, 6]
