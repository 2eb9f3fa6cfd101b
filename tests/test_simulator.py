"""The vLLM-like simulator: prefix cache, continuous batching, queueing and the lower bound, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from polling import until

from pacore_graph import PaCoReConfig, build_pacore_graph
from pacore_graph.clients.base import SamplingParams
from pacore_graph.clients.server_load import ServerLoad, parse_server_load
from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.testing.simulator import (
    SimulatorConfig,
    SimulatorServer,
    Stage,
    _PrefixCache,
    lower_bound,
    tokenize,
)

PROMPT = [{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}]  # 201 tokens with the role token


def test_prefix_cache_hits_only_a_shared_prefix_of_full_blocks() -> None:
    cache = _PrefixCache(block_size=4, capacity=100)
    tokens = [str(i) for i in range(10)]  # two full blocks and a partial one
    assert cache.admit(tokens) == 0
    assert cache.admit(tokens) == 8  # the partial last block is never cached
    assert cache.admit(["x", *tokens[1:]]) == 0  # hash chains: a changed first token misses everything after it
    assert cache.admit([*tokens[:4], "y", *tokens[5:]]) == 4


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = _PrefixCache(block_size=2, capacity=2)
    cache.admit(["a", "b", "c", "d"])  # 2 blocks: full
    cache.admit(["e", "f"])  # evicts the oldest block (a b)
    assert cache.admit(["a", "b", "c", "d"]) == 0


def test_tokenize_counts_words_and_role_tokens() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two words"}]
    assert tokenize(messages) == ["<|system|>", "be", "brief", "<|user|>", "two", "words"]
    assert len(tokenize([{"role": "user", "content": "abcdefgh"}], "chars4")) == 3


async def test_repeated_prompt_prefill_is_almost_free() -> None:
    config = SimulatorConfig(time_scale=0)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        await client.chat(PROMPT, SamplingParams(max_tokens=4))
        first = server.stats.prefill_tokens
        await client.chat(PROMPT, SamplingParams(max_tokens=4))
        assert first == 201
        assert server.stats.prefill_tokens - first == 201 % 16  # only the partial last block
        assert server.stats.cached_tokens == 192


async def test_n_choices_share_one_prefill_and_return_n_completions() -> None:
    config = SimulatorConfig(time_scale=0, prefix_caching=False)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        result = await client.chat(PROMPT, SamplingParams(max_tokens=10), n=4)
        assert len(result.completions) == 4
        assert result.usage.completion_tokens == 40
        assert server.stats.prefill_tokens == 201
        assert len({c.content for c in result.completions}) == 4
        assert all(len(c.content.split()) == 10 for c in result.completions)


async def test_batching_beats_sequential_and_matches_the_step_model() -> None:
    # A wide settle window: the 4 requests must join one batch even on a loaded machine.
    config = SimulatorConfig(
        time_scale=0, virtual_settle=0.05, prefill_seconds_per_token=0, decode_step_base=0.01, decode_step_per_seq=0.001
    )
    params = SamplingParams(max_tokens=100)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        await asyncio.gather(*(client.chat(PROMPT, params) for _ in range(4)))
        batched = server.sim_now()
        for _ in range(4):
            await client.chat(PROMPT, params)
        sequential = server.sim_now() - batched
    assert batched == pytest.approx(100 * (0.01 + 4 * 0.001))  # 100 steps of a batch of 4
    assert sequential == pytest.approx(4 * 100 * 0.011)
    assert batched < sequential / 3


async def test_requests_beyond_capacity_queue() -> None:
    config = SimulatorConfig(
        time_scale=0,
        virtual_settle=0.05,
        max_num_seqs=2,
        prefill_seconds_per_token=0,
        decode_step_base=0.01,
        decode_step_per_seq=0,
    )
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        await asyncio.gather(*(client.chat(PROMPT, SamplingParams(max_tokens=50)) for _ in range(4)))
        assert server.stats.max_running == 2
        assert server.sim_now() == pytest.approx(2 * 50 * 0.01)  # two waves


async def test_metrics_gauges_are_published_per_step_as_vllm_does() -> None:
    # vLLM sets its gauges after each step: a request that arrives during a step is queued when the next one
    # begins, so a full batch shows it waiting only once that next step has ended. A step is 0.2 s here.
    config = SimulatorConfig(
        time_scale=1, max_num_seqs=2, prefill_seconds_per_token=0, decode_step_base=0.2, decode_step_per_seq=0
    )
    params = SamplingParams(max_tokens=10)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        metrics = server.base_url.removesuffix("/v1") + "/metrics"

        async def gauges() -> ServerLoad | None:
            async with aiohttp.ClientSession() as session, session.get(metrics) as response:
                return parse_server_load(await response.text())

        async def batch_running() -> bool:
            return await gauges() == ServerLoad(running=2, waiting=0)

        async def late_arrived() -> bool:
            return server.stats.requests == 3

        await client.resolve_model()
        assert await gauges() == ServerLoad(running=0, waiting=0)
        batch = [asyncio.create_task(client.chat(PROMPT, params)) for _ in range(2)]
        await until(batch_running)  # polled, not slept: a loaded machine must not make the test miss a step
        late = asyncio.create_task(client.chat(PROMPT, params))
        await until(late_arrived)
        assert await gauges() == ServerLoad(running=2, waiting=0)  # at most one step has ended since it arrived
        await asyncio.sleep(0.5)  # two more steps: the second one began with it in the queue
        assert await gauges() == ServerLoad(running=2, waiting=1)
        await asyncio.gather(*batch, late)
        assert await gauges() == ServerLoad(running=0, waiting=0)


async def test_scripted_lengths_are_clipped_to_max_tokens_and_time_scale_runs_in_real_time() -> None:
    config = SimulatorConfig(time_scale=0.01, prefill_seconds_per_token=0, decode_step_base=0.01, decode_step_per_seq=0)
    async with SimulatorServer(config, completion_tokens=lambda request, i: 1000) as server:
        async with VLLMClient(server.base_url) as client:
            result = await client.chat(PROMPT, SamplingParams(max_tokens=30))
        assert result.usage.completion_tokens == 30
        assert server.stats.busy_seconds == pytest.approx(0.3)
        assert 0.3 <= server.sim_now() < 30  # generous: the real clock drives it, 100× faster


async def test_streaming_sends_content_usage_and_done() -> None:
    async with SimulatorServer(SimulatorConfig(time_scale=0)) as server, VLLMClient(server.base_url) as client:
        chunks = [chunk async for chunk in client.stream_chat(PROMPT, SamplingParams(max_tokens=8))]
    assert "\\boxed{42}." in "".join(c.content for c in chunks)
    assert any(c.usage is not None and c.usage.completion_tokens == 8 for c in chunks)


def test_lower_bound_on_a_hand_checked_workload() -> None:
    config = SimulatorConfig(
        max_num_seqs=4, prefill_seconds_per_token=0.001, decode_step_base=0.01, decode_step_per_seq=0.01
    )
    # One problem: 8 samples of a 100-token prompt × 10 tokens, then 1 of a 200-token prompt × 10 tokens.
    chains = [[Stage(100, 8, 10), Stage(200, 1, 10)]]
    bound = lower_bound(config, chains)
    # step(4) = 0.05 for 4 tokens: 0.0125 s/token; step(1) = 0.02 s/token.
    assert bound.work == pytest.approx(300 * 0.001 + 90 * 0.0125)
    assert bound.critical_path == pytest.approx((0.1 + 80 * 0.0125) + (0.2 + 10 * 0.02))
    assert bound.seconds == bound.critical_path
    # Two such problems: the work term grows, the critical path does not.
    double = lower_bound(config, chains * 2)
    assert double.work == pytest.approx(2 * bound.work)
    assert double.critical_path == pytest.approx(bound.critical_path)
    assert double.seconds == double.work


def test_lower_bound_barrier_term_on_a_hand_checked_workload() -> None:
    # A step costs 0.04 s whatever its width: 0.01 s per token at a batch of 4, 0.04 s for one sequence alone.
    config = SimulatorConfig(
        max_num_seqs=4, prefill_seconds_per_token=0.0, decode_step_base=0.04, decode_step_per_seq=0.0
    )
    # Two problems, each 8 samples × 10 tokens, then 1 × 10 tokens.
    bound = lower_bound(config, [[Stage(0, 8, 10), Stage(0, 1, 10)]] * 2)
    assert bound.work == pytest.approx(180 * 0.01)
    assert bound.critical_path == pytest.approx(80 * 0.01 + 10 * 0.04)
    # Both first stages (160 tokens at 4 per step) must finish before the later problem's last stage (10 steps
    # alone) can start: 1.6 + 0.4 s, more than either other bound.
    assert bound.barrier == pytest.approx(160 * 0.01 + 10 * 0.04)
    assert bound.seconds == bound.barrier


def test_lower_bound_charges_a_narrow_workload_its_own_batch_width() -> None:
    # 4 sequences can never fill a batch of 256: their tokens cost step(4) / 4, not step(256) / 256.
    config = SimulatorConfig(max_num_seqs=256, prefill_seconds_per_token=0.0, decode_step_base=0.02)
    bound = lower_bound(config, [[Stage(0, 4, 100)]])
    assert bound.work == pytest.approx(100 * config.step_seconds(4))
    assert bound.seconds == pytest.approx(100 * config.step_seconds(4))


async def test_no_client_beats_the_lower_bound() -> None:
    # The bound must hold for a real run: 3 problems × [8, 1] against the simulator on its virtual clock.
    config = SimulatorConfig(time_scale=0, max_num_seqs=16)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url, max_concurrency=64) as client:
        graph = build_pacore_graph(client, config=PaCoReConfig(schedule=[8], params=SamplingParams(max_tokens=40)))
        start = server.sim_now()
        await asyncio.gather(*(graph.ainvoke({"problem": f"Problem {i}: what is {i} + {i}?"}) for i in range(3)))
        elapsed = server.sim_now() - start
        stages: dict[int, dict[str, list[int]]] = {0: {}, 1: {}, 2: {}}
        for request in server.requests:
            text = json.dumps(request.messages)
            problem = int(re.search(r"Problem (\d+):", text).group(1))  # type: ignore[union-attr]
            stages[problem].setdefault(text, [request.prompt_tokens, 0])[1] += request.n
    chains = [[Stage(p, k, 40) for p, k in prompts.values()] for prompts in stages.values()]
    assert [[s.sequences for s in c] for c in chains] == [[8, 1]] * 3
    assert elapsed >= lower_bound(config, chains).seconds * 0.999
