"""Checkpoint size of a durable `pacore run` against K: the bytes of the SQLite file for a 40 KB problem.

    .venv/bin/python tests/benchmarks/bench_checkpoint_size.py [--ks 4,16,64] [--problem-kb 40]

Runs the real CLI (`pacore run --run-id ... --checkpoint-db FILE`) against the fake OpenAI server and prints
the size of the checkpoint file (with its WAL) after the run, per K, and the ratio to the smallest K.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pacore_graph.testing import FakeOpenAIServer, FakeReply


def _size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="4,16,64")
    parser.add_argument("--problem-kb", type=int, default=40)
    args = parser.parse_args()
    problem = ("word " * (args.problem_kb * 1024 // 5))[: args.problem_kb * 1024]
    sizes: dict[int, int] = {}
    with FakeOpenAIServer(lambda request: FakeReply(content="<think>t</think>conclusion 42")).in_thread() as server:
        for k in (int(x) for x in args.ks.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "runs.sqlite"
                env = {key: value for key, value in os.environ.items() if not key.startswith("PACORE_")}
                command = [sys.executable, "-m", "pacore_graph.cli", "run", "-", "--schedule", str(k), "--quiet"]
                durable = ["--run-id", f"k{k}", "--checkpoint-db", str(db)]
                result = subprocess.run(
                    [*command, "--base-url", server.base_url, *durable],
                    input=problem.encode(),
                    capture_output=True,
                    env=env | {"PACORE_CACHE_DIR": tmp},
                    check=False,
                )
                if result.returncode != 0:
                    sys.exit(result.stderr.decode())
                sizes[k] = _size(db)
    smallest = min(sizes)
    for k, size in sizes.items():
        print(f"K={k:<4} {size / 1e6:6.3f} MB  {size / sizes[smallest]:5.2f}x K={smallest}")


if __name__ == "__main__":
    main()
