"""Pool building for `pacore train build` beside `pacore eval` on the same problems, against the simulator.

Not a test (timings vary by machine): run it by hand::

    .venv/bin/python tests/benchmarks/bench_train_build.py                     # 16 problems × 24, ~1 min
    .venv/bin/python tests/benchmarks/bench_train_build.py --problems 32 --max-tokens 512

Both sides generate the same work: ``pool_size`` round-1 trajectories of each of P problems, through a
:class:`~pacore_graph.clients.vllm.VLLMClient` with the adaptive window (following the simulator's /metrics),
each on a fresh simulator:

* **train build**: :func:`pacore_graph.training.pool.build_pools`, what ``pacore train build`` runs to fill the
  pool (``--parallel`` problems at once, each with all its slots in flight);
* **eval**: :func:`pacore_graph.eval.runner.run_eval` with ``self-consistency:POOL_SIZE``, one run, the round-1 pool
  on: what ``pacore eval --graph self-consistency:24 --runs 1`` runs (``--parallel`` runs at once).

Printed per side: trajectories per simulated second and per real second, the simulator's lower bound for the same
requests (:func:`~pacore_graph.testing.simulator.lower_bound`), and the window the client ended with.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_pacore import problem_text, stages_from_log

from pacore_graph.clients.base import SamplingParams
from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.eval.datasets import Problem
from pacore_graph.eval.grading import MathVerifyGrader
from pacore_graph.eval.pool import TrajectoryPool
from pacore_graph.eval.runner import ResultsLog, resolve_eval_graphs, run_eval
from pacore_graph.testing.simulator import SimulatorConfig, SimulatorServer, lower_bound
from pacore_graph.training.pool import build_pools


def problems_of(count: int) -> list[Problem]:
    return [
        Problem(id=f"bench-{i}", messages=[{"role": "user", "content": problem_text(i)}], answer="1")
        for i in range(count)
    ]


async def side(name: str, config: SimulatorConfig, args: argparse.Namespace, out: Path) -> None:
    problems = problems_of(args.problems)
    async with (
        SimulatorServer(config) as server,
        VLLMClient(server.base_url, max_concurrency=64, adaptive_concurrency=True, metrics_interval=0.1) as client,
    ):
        model = await client.resolve_model()
        start_real, start_sim = time.perf_counter(), server.sim_now()
        if name == "train build":
            pools = await build_pools(
                problems,
                client,
                TrajectoryPool(),
                pool_size=args.pool_size,
                params=SamplingParams(max_tokens=args.max_tokens, seed=0),
                policy=CompactionPolicy(),
                model=model,
                parallel=args.parallel,
            )
            trajectories = sum(len(p.entries) for p in pools)
        else:
            graphs = resolve_eval_graphs(
                [f"self-consistency:{args.pool_size}"], {"max_tokens": args.max_tokens, "seed": 0}
            )
            records = await run_eval(
                problems,
                graphs,
                client,
                MathVerifyGrader(),
                runs=1,
                log=ResultsLog(out),
                pool=TrajectoryPool(),
                pool_size=args.pool_size,
                parallel=args.parallel,
                model=model,
            )
            trajectories = sum(r.pool_served for r in records)
        real = time.perf_counter() - start_real
        sim = server.sim_now() - start_sim
        bound = lower_bound(config, stages_from_log(server))
        print(
            f"{name:12s}: {trajectories} trajectories in {sim:6.2f} simulated s ({trajectories / sim:6.1f}/s) and "
            f"{real:5.2f} real s ({trajectories / real:6.1f}/s); bound {bound.seconds:6.2f} s, wall/bound "
            f"{sim / bound.seconds:.3f}; {server.stats.requests} requests; window 64 -> {client.limiter.limit}",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--parallel", type=int, default=8, help="problems (train build) / runs (eval) at once")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    args = parser.parse_args()
    config = SimulatorConfig(time_scale=args.time_scale, max_num_seqs=args.max_num_seqs)
    print(
        f"# {args.problems} problems × {args.pool_size} round-1 trajectories, max_tokens {args.max_tokens}, "
        f"--parallel {args.parallel}; simulator max_num_seqs {config.max_num_seqs}, time_scale {config.time_scale}"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for name in ("train build", "eval"):
            await side(name, config, args, Path(folder) / name.replace(" ", "-"))


if __name__ == "__main__":
    asyncio.run(main())
