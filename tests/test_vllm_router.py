"""PaCoRe over vLLM's own router (``vllm-router`` from PyPI) in front of two servers, through real HTTP."""

import asyncio
import json
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import PaCoReConfig, SamplingParams, VLLMClient, build_pacore_graph
from pacore_graph.testing.router import RouterUnavailable, vllm_router
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer

SCHEDULE = [4, 2]
PROBLEMS = [f"Problem {i}: what is {i} + {i}?" for i in range(4)]


async def _run_through_router(policy: str) -> tuple[list[SimulatorServer], list[dict[str, Any]]]:
    simulated = SimulatorConfig(time_scale=0, max_num_seqs=16)
    async with SimulatorServer(simulated) as one, SimulatorServer(simulated) as two:
        roots = [server.base_url.removesuffix("/v1") for server in (one, two)]
        async with vllm_router(roots, policy) as url:
            # The router serves no vLLM gauges: a fixed window of both servers' batches together.
            async with VLLMClient(url, max_concurrency=32, adaptive_concurrency=False) as client:
                params = SamplingParams(max_tokens=24, seed=3)
                config = PaCoReConfig(schedule=SCHEDULE, params=params)
                graph = build_pacore_graph(client, config=config, checkpointer=InMemorySaver())
                threads = [{"configurable": {"thread_id": problem}} for problem in PROBLEMS]
                runs = [graph.ainvoke({"problem": p}, t) for p, t in zip(PROBLEMS, threads, strict=True)]
                await asyncio.gather(*runs)
                states = [(await graph.aget_state(thread)).values for thread in threads]
        return [one, two], states


@pytest.mark.parametrize("policy", ["round_robin", "cache_aware"])
async def test_every_round_goes_through_the_router_to_both_servers(policy: str) -> None:
    servers, states = await _run_through_router(policy)
    assert all(state["answer"] for state in states)  # every problem reached its synthesis
    sequences = sum(server.stats.sequences for server in servers)
    assert sequences == len(PROBLEMS) * (sum(SCHEDULE) + 1)  # nothing lost or doubled on the way
    if policy == "round_robin":
        assert all(server.stats.requests > 0 for server in servers)
    # The router passes bodies through unchanged: each synthesis prompt the graph built reached a server as is.
    received = [request.messages for server in servers for request in server.requests]
    for state in states:
        assert "Reference Responses:" in json.dumps(state["prompt"])
        assert received.count(state["prompt"]) == 1


def test_a_missing_router_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from pacore_graph.testing import router

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RouterUnavailable, match="pip install"):
        router.router_binary()
