"""The client's window: priority queueing (SequenceLimiter), vLLM's /metrics, and adaptive concurrency over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pacore_graph import BalancedBackend, PaCoReConfig, build_pacore_graph
from pacore_graph.clients import SequenceLimiter, VLLMClient, request_priority
from pacore_graph.clients.base import SamplingParams
from pacore_graph.clients.limiter import ADMISSIONS_PER_TURN
from pacore_graph.clients.server_load import AdaptiveWindow, ServerLoad, parse_server_load
from pacore_graph.testing import FakeOpenAIServer, FakeReply
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer

# The gauges as a vLLM 0.11+ server prints them (captured from the embedded engine), with a histogram around.
VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 2.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="smollm2",reason="capacity"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.25
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="smollm2"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="smollm2"} 7.0
"""

PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]


# --- SequenceLimiter ----------------------------------------------------------------------------------------


async def _admission_order(limiter: SequenceLimiter, jobs: list[tuple[str, int, int]]) -> list[str]:
    """Fill the limiter, queue ``(name, sequences, priority)`` jobs in order, then free it: who got in, in order."""
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, sequences: int, priority: int) -> None:
        async with limiter.hold(sequences, priority):
            order.append(name)
            await asyncio.sleep(0)

    async def blocker() -> None:
        async with limiter.hold(limiter.limit):
            await gate.wait()

    first = asyncio.create_task(blocker())
    await asyncio.sleep(0)
    tasks = []
    for name, sequences, priority in jobs:
        tasks.append(asyncio.create_task(job(name, sequences, priority)))
        await asyncio.sleep(0)  # queued in this order
    assert order == [] and limiter.queued == sum(s for _, s, _ in jobs)
    gate.set()
    await asyncio.gather(first, *tasks)
    assert limiter.in_flight == 0
    return order


async def test_waiting_requests_go_in_by_priority_then_arrival() -> None:
    order = await _admission_order(
        SequenceLimiter(1), [("low", 1, 0), ("high", 1, 2), ("mid-a", 1, 1), ("mid-b", 1, 1), ("low-b", 1, 0)]
    )
    assert order == ["high", "mid-a", "mid-b", "low", "low-b"]


async def test_ambient_priority_comes_from_request_priority() -> None:
    limiter = SequenceLimiter(1)
    order: list[int] = []
    gate = asyncio.Event()

    async def blocker() -> None:
        async with limiter.hold():
            await gate.wait()

    async def job(priority: int) -> None:
        with request_priority(priority):
            async with limiter.hold():
                order.append(priority)

    tasks = [asyncio.create_task(blocker())]
    for priority in (1, 3, 2):
        tasks.append(asyncio.create_task(job(priority)))
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [3, 2, 1]


async def test_a_request_counts_its_sequences() -> None:
    limiter = SequenceLimiter(4)
    async with limiter.hold(3):
        assert limiter.in_flight == 3
        waiting = asyncio.create_task(_hold_briefly(limiter, 2))
        await asyncio.sleep(0.01)
        assert not waiting.done() and limiter.queued == 2  # 3 + 2 > 4
        small = asyncio.create_task(_hold_briefly(limiter, 1))
        await asyncio.sleep(0.01)
        assert not small.done()  # it would fit, but it queues behind the bigger request: no overtaking
    await asyncio.gather(waiting, small)
    assert limiter.in_flight == 0


async def _hold_briefly(limiter: SequenceLimiter, sequences: int, priority: int | None = None) -> None:
    async with limiter.hold(sequences, priority):
        await asyncio.sleep(0)


async def test_a_new_request_that_outranks_a_stuck_head_and_fits_goes_in_at_once() -> None:
    limiter = SequenceLimiter(4)
    async with limiter.hold(3):
        big = asyncio.create_task(_hold_briefly(limiter, 2, priority=0))  # 3 + 2 > 4: waits
        await asyncio.sleep(0.01)
        urgent = asyncio.create_task(_hold_briefly(limiter, 1, priority=5))  # 3 + 1 fits, and outranks it
        await asyncio.wait_for(urgent, 1)
        assert not big.done()
    await big


async def test_a_hold_of_no_sequences_never_waits_and_is_not_in_flight() -> None:
    limiter = SequenceLimiter(4)

    async def lookup() -> tuple[int, int]:  # a model lookup: neither behind the queue nor counted
        async with limiter.hold(0):
            return limiter.in_flight, limiter.queued

    async with limiter.hold(3):
        waiting = asyncio.create_task(_hold_briefly(limiter, 2))  # 3 + 2 > 4: queues
        await asyncio.sleep(0.01)
        assert await asyncio.wait_for(lookup(), 1) == (3, 2)
    await waiting
    assert await asyncio.wait_for(lookup(), 1) == (0, 0)


async def test_a_request_bigger_than_the_window_runs_alone() -> None:
    limiter = SequenceLimiter(2)
    async with limiter.hold(16):
        assert limiter.in_flight == 16
    assert limiter.in_flight == 0


async def _fill(limiter: SequenceLimiter) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Hold the whole window until the returned event is set."""
    gate = asyncio.Event()

    async def blocker() -> None:
        async with limiter.hold(limiter.limit):
            await gate.wait()

    task = asyncio.create_task(blocker())
    await asyncio.sleep(0)
    return task, gate


async def test_cancelled_waiters_give_their_place_back() -> None:
    limiter = SequenceLimiter(1)
    first, gate = await _fill(limiter)
    doomed = asyncio.create_task(_hold_briefly(limiter, 1))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert limiter.queued == 0
    gate.set()
    await first
    async with limiter.hold():  # nothing leaked: the window is free again
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0


async def test_raising_the_limit_admits_waiters_at_once() -> None:
    limiter = SequenceLimiter(1)
    first, gate = await _fill(limiter)
    second = asyncio.create_task(_hold_briefly(limiter, 1))
    await asyncio.sleep(0.01)
    assert not second.done()
    limiter.limit = 2
    await asyncio.wait_for(second, 1)
    gate.set()
    await first


async def test_a_window_that_opens_wide_admits_its_waiters_a_wave_per_turn_in_rank_order() -> None:
    # Freed all at once, a thousand admitted requests would set up their connections interleaved, and none would
    # reach the server before all were set up: the limiter admits ADMISSIONS_PER_TURN per turn of the loop.
    limiter = SequenceLimiter(1)
    first, gate = await _fill(limiter)
    waves = 3
    admitted: list[int] = []
    release = asyncio.Event()

    async def job(order: int) -> None:
        with request_priority(0, order=order):
            async with limiter.hold():
                admitted.append(order)
                await release.wait()

    count = waves * ADMISSIONS_PER_TURN + 1
    jobs = [asyncio.create_task(job(order)) for order in reversed(range(count))]  # queued in reverse rank order
    await asyncio.sleep(0.01)
    assert limiter.queued == count
    limiter.limit = 10 * count  # room for all of them at once
    assert limiter.in_flight == 1 + ADMISSIONS_PER_TURN  # the first wave only, in this turn
    seen = []
    while len(admitted) < count:
        await asyncio.sleep(0)
        seen.append(len(admitted))
    assert seen[:waves] == [ADMISSIONS_PER_TURN * (wave + 1) for wave in range(waves)]  # a wave per turn
    assert admitted == sorted(admitted)  # waves go in rank order
    assert limiter.queued == 0 and limiter.in_flight == count + 1
    release.set()
    gate.set()
    await asyncio.gather(first, *jobs)
    assert limiter.in_flight == 0


# --- /metrics and the window policy -------------------------------------------------------------------------


def test_parse_server_load_reads_vllm_gauges() -> None:
    assert parse_server_load(VLLM_PAGE) == ServerLoad(running=3, waiting=2, kv_usage=0.25)


def test_parse_server_load_sums_engines_and_reads_the_old_kv_name() -> None:
    page = (
        'vllm:num_requests_running{engine="0"} 2\nvllm:num_requests_running{engine="1"} 5\n'
        'vllm:num_requests_waiting{engine="0"} 1\nvllm:num_requests_waiting{engine="1"} 0\n'
        'vllm:gpu_cache_usage_perc{engine="0"} 0.5\nvllm:gpu_cache_usage_perc{engine="1"} 0.9\n'
    )
    assert parse_server_load(page) == ServerLoad(running=7, waiting=1, kv_usage=0.9)


@pytest.mark.parametrize("page", ["", "<html>Not Found</html>", "process_cpu_seconds_total 1.5\n", "vllm:x{ 1\n"])
def test_parse_server_load_is_none_without_vllm_gauges(page: str) -> None:
    assert parse_server_load(page) is None


def test_window_doubles_while_the_server_has_room_then_grows_by_an_eighth() -> None:
    window = AdaptiveWindow(8, ceiling=100)
    idle = ServerLoad(running=8, waiting=0, kv_usage=0.1)
    assert window.update(idle, in_flight=8, queued=50) == 16
    assert window.update(idle, in_flight=16, queued=40) == 32
    assert window.update(idle, in_flight=32, queued=0) == 32  # a full window, but nothing waits: no growth
    queueing = ServerLoad(running=24, waiting=8)
    assert window.update(queueing, in_flight=32, queued=10) == 32  # one reading may be a request between steps
    assert window.update(queueing, in_flight=32, queued=10) == 24  # twice: shrink to what the server runs
    assert window.update(idle, in_flight=24, queued=10) == 27  # after queueing once: + 24 // 8
    assert window.update(ServerLoad(running=27, waiting=0, kv_usage=0.97), 27, 10) == 27  # KV nearly full: hold
    for _ in range(40):
        window.update(idle, in_flight=window.limit, queued=10)
    assert window.limit == 100  # the ceiling


def test_window_never_shrinks_below_its_floor() -> None:
    window = AdaptiveWindow(4, floor=2)
    busy = ServerLoad(running=100, waiting=50)  # another client fills the server
    window.update(busy, in_flight=4, queued=0)
    assert window.update(busy, in_flight=4, queued=0) == 2


def test_a_co_tenants_queue_shrinks_the_window_by_our_share_and_at_most_by_half() -> None:
    window = AdaptiveWindow(64, floor=8)
    flooded = ServerLoad(running=256, waiting=512)  # mostly someone else's requests
    window.update(flooded, in_flight=64, queued=10)
    assert window.update(flooded, in_flight=64, queued=10) == 32  # our share (64 × 256/768 = 21), but half at most
    assert window.update(flooded, in_flight=32, queued=10) == 16
    alone = AdaptiveWindow(300)
    mine = ServerLoad(running=256, waiting=44)  # all ours: shrink to what the server runs
    alone.update(mine, in_flight=300, queued=0)
    assert alone.update(mine, in_flight=300, queued=0) == 256


def test_parse_server_load_ignores_non_finite_gauges() -> None:
    page = "vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\n"
    assert parse_server_load(page) is None
    assert parse_server_load(page + "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\n") == ServerLoad(2, 1)


# --- VLLMClient over real HTTP ------------------------------------------------------------------------------


async def _flood(client: VLLMClient, requests: int, max_tokens: int) -> None:
    params = SamplingParams(max_tokens=max_tokens)
    await asyncio.gather(*(client.chat(PROMPT, params) for _ in range(requests)))


async def test_adaptive_window_grows_to_fill_a_server_with_room() -> None:
    config = SimulatorConfig(max_num_seqs=64, time_scale=0.02)
    async with SimulatorServer(config) as server:
        async with VLLMClient(server.base_url, max_concurrency=4, adaptive_concurrency=False) as fixed:
            await _flood(fixed, 64, 200)
        assert server.stats.max_running == 4  # a fixed window of 4 leaves 60 of 64 slots idle
        async with VLLMClient(server.base_url, max_concurrency=4, metrics_interval=0.02) as adaptive:
            await _flood(adaptive, 64, 200)
            assert adaptive.adaptive and adaptive.limiter.limit > 4
        assert server.stats.max_running > 4


async def test_adaptive_window_shrinks_when_the_server_queues() -> None:
    config = SimulatorConfig(max_num_seqs=8, time_scale=0.02)
    async with (
        SimulatorServer(config) as server,
        VLLMClient(server.base_url, max_concurrency=64, metrics_interval=0.02) as client,
    ):
        await _flood(client, 128, 200)
        assert server.stats.max_waiting > 0
        assert client.limiter.limit < 64


async def test_a_server_without_metrics_keeps_the_fixed_window() -> None:
    slow = FakeOpenAIServer(lambda request: FakeReply(content="4", delay=0.05))
    async with slow as server, VLLMClient(server.base_url, max_concurrency=3, metrics_interval=0.01) as c:
        await _flood(c, 12, 8)
        await asyncio.sleep(0.05)
        assert c.limiter.limit == 3
        assert not c.adaptive  # it asked for /metrics once, got a 404, and stopped asking
        assert all(r.path == "/v1/chat/completions" for r in server.requests)


class _MetricsServer:
    """A minimal OpenAI server whose /metrics answers with scripted statuses, then vLLM's gauges (queueing)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.metrics_calls = 0

    async def metrics(self, request: web.Request) -> web.Response:
        self.metrics_calls += 1
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), text="unavailable")
        return web.Response(text=VLLM_PAGE)  # 3 running, 2 waiting

    async def chat(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        choice = {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
        return web.json_response({"choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})


async def test_a_failed_metrics_reading_is_skipped_not_taken_for_a_server_without_metrics() -> None:
    server = _MetricsServer([503, 502])
    app = web.Application()
    app.router.add_get("/metrics", server.metrics)
    app.router.add_post("/v1/chat/completions", server.chat)
    async with TestServer(app, host="127.0.0.1") as http:
        url = str(http.make_url("/v1"))
        async with VLLMClient(url, model="m", max_concurrency=16, metrics_interval=0.01) as client:
            await _flood(client, 32, 1)
            assert server.metrics_calls > 2  # it kept reading after the two failures...
            assert client.adaptive
            assert client.limiter.limit < 16  # ...and then followed the queue the gauges show


async def test_later_rounds_overtake_first_rounds_in_a_full_client() -> None:
    # Two problems share a client that holds one request: once problem 0's round 1 is done, its synthesis
    # (round 2) must go before problem 1's remaining round-1 explorers.
    # A request of 100 tokens takes ~80 ms: longer than the first synthesis takes to be sent (~30 ms, cold).
    config = SimulatorConfig(max_num_seqs=64, time_scale=0.04)
    async with (
        SimulatorServer(config) as server,
        VLLMClient(server.base_url, max_concurrency=1, adaptive_concurrency=False) as client,
    ):
        graph = build_pacore_graph(client, config=PaCoReConfig(schedule=[3], params=SamplingParams(max_tokens=100)))
        await client.resolve_model()

        async def problem_b_a_moment_later() -> object:
            await asyncio.sleep(0.005)  # A's three explorers are queued first
            return await graph.ainvoke({"problem": "Problem B: 2 + 2?"})

        await asyncio.gather(graph.ainvoke({"problem": "Problem A: 1 + 1?"}), problem_b_a_moment_later())
        sequence = [
            "synthesis" if "Reference Responses" in r.last_user_content else r.last_user_content[8]
            for r in server.requests
        ]
    first_synthesis = sequence.index("synthesis")
    assert sequence[:first_synthesis].count("A") == 3
    assert "B" in sequence[first_synthesis + 1 :]  # B's explorers waited behind A's synthesis


# --- filling the batch (issue 20) ----------------------------------------------------------------------------


async def test_equal_priorities_go_in_by_order_before_arrival() -> None:
    limiter = SequenceLimiter(1)
    order: list[str] = []
    first, gate = await _fill(limiter)

    async def job(name: str, priority: int, run_order: int) -> None:
        with request_priority(priority, run_order):
            async with limiter.hold():
                order.append(name)

    tasks = []
    for name, priority, run_order in (("late run", 1, 20), ("early run", 1, 10), ("later round", 2, 30)):
        tasks.append(asyncio.create_task(job(name, priority, run_order)))
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *tasks)
    assert order == ["later round", "early run", "late run"]


def test_jump_start_grows_straight_to_the_demand_until_the_server_first_queues() -> None:
    window = AdaptiveWindow(64, ceiling=1024, jump_start=True)
    idle = ServerLoad(running=64, waiting=0)
    behind_a_balancer = AdaptiveWindow(64, ceiling=1024, jump_start=True)
    assert behind_a_balancer.update(idle, in_flight=64, queued=448, alone=False) == 128  # doubling, as its peers
    assert window.update(idle, in_flight=64, queued=448) == 512  # the demand, not 128
    assert window.update(idle, in_flight=512, queued=4000) == 1024  # never past the ceiling
    queueing = ServerLoad(running=256, waiting=768)
    window.update(queueing, in_flight=1024, queued=100)
    assert window.update(queueing, in_flight=1024, queued=100) == 512  # halved at most, as before
    assert not window.slow_start
    assert window.update(ServerLoad(running=256, waiting=0), in_flight=512, queued=600) == 576  # then + 1/8
    plain = AdaptiveWindow(64, ceiling=1024)
    assert plain.update(idle, in_flight=64, queued=448) == 128  # without it: doubling


async def test_the_window_reaches_the_servers_batch_size_before_the_first_request_ends() -> None:
    # The default client (window 64) on a server of 256 slots, 256 requests at once: a request that has to wait
    # brings a reading forward, which grows the window to the demand at once. Had the window stayed at 64 (or
    # doubled on the reading interval), the last requests could only go once the first had ended. The test
    # checks that order of events, not a wall time, so a busy machine does not change its verdict.
    config = SimulatorConfig(max_num_seqs=256, time_scale=0.01)
    async with SimulatorServer(config) as server, VLLMClient(server.base_url) as client:
        await client.resolve_model()
        params = SamplingParams(max_tokens=20_000)  # ~14 s each at full batch at this time scale
        requests = [asyncio.create_task(client.chat(PROMPT, params)) for _ in range(256)]
        try:
            for _ in range(6000):  # up to ~60 s for a very busy machine; the verdict does not depend on it
                if server.stats.requests == 256 or any(r.done() for r in requests):
                    break
                await asyncio.sleep(0.01)
            assert client.limiter.limit >= 256
            assert not any(r.done() for r in requests)  # (a failed request would also end early: say so)
            assert server.stats.requests == 256  # all sent while the first ones still run
            for _ in range(6000):
                if server.stats.max_running > 128:
                    break
                await asyncio.sleep(0.01)
            assert server.stats.max_running > 128  # in one batch (not all 256 if some arrived after a step)
        finally:
            for request in requests:
                request.cancel()
            await asyncio.gather(*requests, return_exceptions=True)


async def test_a_run_records_when_it_started_so_older_runs_go_first() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    config = PaCoReConfig(schedule=[2], params=SamplingParams(max_tokens=8))
    async with SimulatorServer(SimulatorConfig(time_scale=0)) as server, VLLMClient(server.base_url) as client:
        graph = build_pacore_graph(client, config=config, checkpointer=InMemorySaver())
        orders = []
        for thread in ("a", "b"):
            run = {"configurable": {"thread_id": thread}}
            await graph.ainvoke({"problem": f"Problem {thread}: 1 + 1?"}, run)
            orders.append((await graph.aget_state(run)).values["run_order"])
    assert 0 < orders[0] < orders[1]


def test_a_window_alone_on_its_server_does_not_shrink_below_the_batch_size_it_saw() -> None:
    window = AdaptiveWindow(288)
    full = ServerLoad(running=256, waiting=32)  # everything on the server is ours: 256 is its batch size
    window.update(full, in_flight=288, queued=50)
    assert window.update(full, in_flight=288, queued=50) == 256 and window.capacity == 256
    # A reading between steps: finished sequences' slots not yet refilled, the newcomers waiting for the step.
    between = ServerLoad(running=233, waiting=23)
    window.update(between, in_flight=256, queued=50)
    assert window.update(between, in_flight=256, queued=50) == 256  # not 233: the server did not get smaller


def test_a_later_round_gets_a_head_start_but_older_requests_still_go_first() -> None:
    from pacore_graph.clients.limiter import LATER_ROUND_HEAD_START
    from pacore_graph.nodes import queue_order

    head_start = int(LATER_ROUND_HEAD_START * 1e9)
    explorers_made_just_now = queue_order(1)
    assert queue_order(2) < explorers_made_just_now  # a synthesis overtakes explorers made just before it
    explorers_made_long_ago = explorers_made_just_now - 3 * head_start
    assert explorers_made_long_ago < queue_order(2) and explorers_made_long_ago < queue_order(3)


def test_headroom_keeps_a_short_queue_on_a_server_the_window_has_alone() -> None:
    window = AdaptiveWindow(512, headroom=0.25)
    full = ServerLoad(running=256, waiting=256)
    window.update(full, in_flight=512, queued=0)
    assert window.update(full, in_flight=512, queued=0) == 320  # 256 + 64 queued there, not 256


def test_a_window_no_balancer_routes_by_opens_on_an_idle_server_at_its_first_reading() -> None:
    window = AdaptiveWindow(64, ceiling=1024, jump_start=True)
    assert window.update(ServerLoad(running=0, waiting=0), in_flight=0, queued=0, alone=True) == 1024
    later = AdaptiveWindow(64, ceiling=1024, jump_start=True)
    later.update(ServerLoad(running=3, waiting=0), in_flight=0, queued=0, alone=True)  # someone else's
    assert later.update(ServerLoad(running=0, waiting=0), in_flight=0, queued=0, alone=True) == 64
    assert AdaptiveWindow(64).update(ServerLoad(running=0, waiting=0), in_flight=0, queued=0) == 64
    balanced = AdaptiveWindow(64, ceiling=1024, jump_start=True)
    assert balanced.update(ServerLoad(running=0, waiting=0), in_flight=0, queued=0, alone=False) == 64


async def test_behind_a_balancer_the_windows_do_not_open_so_both_servers_are_used() -> None:
    config = SimulatorConfig(max_num_seqs=32, time_scale=0.01)
    async with SimulatorServer(config) as one, SimulatorServer(config) as two:
        clients = [VLLMClient(s.base_url, metrics_interval=0.02) for s in (one, two)]
        async with BalancedBackend(clients) as backend:
            await asyncio.gather(*(backend.chat(PROMPT, SamplingParams(max_tokens=100)) for _ in range(64)))
        assert all(c.limiter.limit < 1024 for c in clients)
    assert abs(one.stats.sequences - two.stats.sequences) <= 16  # both windows grew alike
