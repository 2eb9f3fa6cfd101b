"""Multi-endpoint balancing: ``BalancedBackend`` over two real fake servers, least outstanding requests first."""

import asyncio

import pytest

from pacore_graph import (
    BalancedBackend,
    ConfigError,
    PaCoReConfig,
    SamplingParams,
    Schedule,
    VLLMClient,
    build_pacore_graph,
)
from pacore_graph.clients import request_priority
from pacore_graph.testing import FakeOpenAIServer, FakeReply
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer

MESSAGES = [{"role": "user", "content": "Q"}]


def fixed_windows(size: int, *servers: FakeOpenAIServer) -> list[VLLMClient]:
    """One client per server, each with a fixed window of ``size`` sequences."""
    return [VLLMClient(s.base_url, max_concurrency=size, adaptive_concurrency=False) for s in servers]


def delayed(seconds: float):
    def script(request):
        return FakeReply(content=f"<think>t</think>conclusion {request.index}", delay=seconds)

    return script


async def test_the_fast_server_takes_more_requests_and_both_are_used():
    async with FakeOpenAIServer(delayed(0.005)) as fast, FakeOpenAIServer(delayed(0.2)) as slow:
        async with BalancedBackend([VLLMClient(slow.base_url), VLLMClient(fast.base_url)]) as backend:

            async def worker() -> None:
                for _ in range(10):
                    await backend.chat(MESSAGES, SamplingParams())

            await asyncio.gather(*(worker() for _ in range(4)))
            assert backend.outstanding == [0, 0]
            assert backend.requests == [len(slow.requests), len(fast.requests)]
    assert len(fast.requests) + len(slow.requests) == 40
    assert len(slow.requests) >= 1
    assert len(fast.requests) > 3 * len(slow.requests)


async def test_a_burst_waits_at_the_balancer_so_the_fast_server_pulls_most_of_it():
    # 24 requests at once over two windows of 2: routed on arrival they would split 12/12; pulled by free room,
    # the fast server (10× faster) takes most of them while the slow one works through a few.
    async with FakeOpenAIServer(delayed(0.02)) as fast, FakeOpenAIServer(delayed(0.2)) as slow:
        clients = fixed_windows(2, slow, fast)
        async with BalancedBackend(clients) as backend:
            await asyncio.gather(*(backend.chat(MESSAGES, SamplingParams()) for _ in range(24)))
            assert backend.outstanding == [0, 0]
            assert all(client.limiter.in_flight == 0 for client in clients)
    assert len(fast.requests) + len(slow.requests) == 24
    assert len(fast.requests) >= 16


async def test_requests_waiting_at_the_balancer_go_by_priority():
    order: list[int] = []

    def script(request):
        order.append(int(request.body["messages"][0]["content"]))
        return FakeReply(content="ok", delay=0.02)

    async with FakeOpenAIServer(script) as one, FakeOpenAIServer(script) as two:
        clients = fixed_windows(1, one, two)
        async with BalancedBackend(clients) as backend:

            async def ask(priority: int) -> None:
                with request_priority(priority):
                    await backend.chat([{"role": "user", "content": str(priority)}], SamplingParams())

            tasks = []
            for priority in (0, 0, 1, 5, 3):  # the first two fill both windows; the rest wait at the balancer
                tasks.append(asyncio.create_task(ask(priority)))
                await asyncio.sleep(0.001)
            await asyncio.gather(*tasks)
    assert order[2:] == [5, 3, 1]


async def test_a_pacore_run_over_two_servers_streams_the_synthesis_and_weighs_n():
    async with FakeOpenAIServer(delayed(0.0)) as one, FakeOpenAIServer(delayed(0.0)) as two:
        async with BalancedBackend([VLLMClient(one.base_url), VLLMClient(two.base_url)]) as backend:
            config = PaCoReConfig(schedule=Schedule.parse("8"), n_batch=4)
            state = await build_pacore_graph(backend, config=config).ainvoke({"problem": "Q"})
    # The two n=4 requests go one to each server (the first is still in flight when the second is sent).
    assert sorted(r.n for r in one.requests + two.requests if not r.stream) == [4, 4]
    assert len([r for r in one.requests if not r.stream]) == 1
    assert [r.stream for r in one.requests + two.requests].count(True) == 1
    assert state["usage"]["rounds"][0]["returned"] == 8


def test_needs_a_backend():
    with pytest.raises(ConfigError, match="at least one backend"):
        BalancedBackend([])


async def test_a_backend_that_cannot_stream_answers_the_stream_with_one_chunk():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from pacore_graph import LangChainBackend

    backend = BalancedBackend([LangChainBackend(FakeListChatModel(responses=["<think>t</think>the answer"]))])
    chunks = [chunk async for chunk in backend.stream_chat(MESSAGES, SamplingParams())]
    assert [c.content for c in chunks] == ["<think>t</think>the answer"]
    assert backend.outstanding == [0] and backend.requests == [1]
    assert await backend.count_tokens(MESSAGES) is None


async def test_resolve_model_asks_the_first_backend_that_can_name_one():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from pacore_graph import LangChainBackend

    cannot = LangChainBackend(FakeListChatModel(responses=["x"]))
    async with FakeOpenAIServer(delayed(0.0), model="alpha") as a, FakeOpenAIServer(delayed(0.0), model="beta") as b:
        async with BalancedBackend([cannot, VLLMClient(a.base_url), VLLMClient(b.base_url)]) as backend:
            assert await backend.resolve_model() == "alpha"
            # The others keep their own: each names its server's model when it first sends a request.
            await asyncio.gather(*(backend.chat(MESSAGES, SamplingParams()) for _ in range(3)))
        assert {r.body["model"] for r in a.requests} == {"alpha"}
        assert {r.body["model"] for r in b.requests} == {"beta"}
    with pytest.raises(ConfigError, match="can name its model"):
        await BalancedBackend([cannot]).resolve_model()


async def test_each_window_sees_the_backlog_waiting_at_the_balancer():
    # Adaptive windows grow only for demand they can see: the balancer's queue is reported to each of them.
    async with FakeOpenAIServer(delayed(0.1)) as one, FakeOpenAIServer(delayed(0.1)) as two:
        clients = fixed_windows(1, one, two)
        async with BalancedBackend(clients) as backend:
            burst = asyncio.gather(*(backend.chat(MESSAGES, SamplingParams()) for _ in range(5)))
            await asyncio.sleep(0.05)
            assert [c.limiter.backlog for c in clients] == [3, 3]
            await burst
            assert [c.limiter.backlog for c in clients] == [0, 0]


async def test_a_window_that_grows_admits_requests_waiting_at_the_balancer_at_once():
    async with FakeOpenAIServer(delayed(0.3)) as one, FakeOpenAIServer(delayed(0.3)) as two:
        clients = fixed_windows(1, one, two)
        async with BalancedBackend(clients) as backend:
            burst = asyncio.gather(*(backend.chat(MESSAGES, SamplingParams()) for _ in range(4)))
            await asyncio.sleep(0.05)
            assert len(one.requests) + len(two.requests) == 2  # two windows of one
            clients[0].limiter.limit = 3  # as an adaptive window does when its server has room
            await asyncio.sleep(0.05)
            assert len(one.requests) + len(two.requests) == 4  # no need to wait for a request to finish
            await burst


async def test_clients_that_looked_up_their_model_before_the_balancer_still_share_a_burst():
    # A model lookup takes no room in the window and is not load: before, the window of the client whose lookup
    # a /metrics reading caught opened to its ceiling (it was alone then), and the balancer sent it nearly all.
    config = SimulatorConfig(time_scale=0.02, max_num_seqs=64)
    async with SimulatorServer(config) as one, SimulatorServer(config) as two:
        clients = [VLLMClient(s.base_url, metrics_interval=0.1) for s in (one, two)]
        for client in clients:
            await client.resolve_model()
        assert [client.limiter.limit for client in clients] == [64, 64]
        async with BalancedBackend(clients) as backend:
            graph = build_pacore_graph(
                backend, config=PaCoReConfig(schedule=[32], params=SamplingParams(max_tokens=64))
            )
            await asyncio.gather(*(graph.ainvoke({"problem": f"Problem {i}: 1 + {i}?"}) for i in range(4)))
    sequences = [one.stats.sequences, two.stats.sequences]
    assert sum(sequences) == 4 * 33
    assert min(sequences) >= 0.35 * sum(sequences)  # both servers take a fair share (before: 266 of 296 on one)
