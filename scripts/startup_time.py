"""Measure `pacore --help` start-up against importing typer and rich (issue 14, item 8).

    .venv/bin/python scripts/startup_time.py [--runs 5] [--bin .venv/bin]

Runs the baseline (`python -c "import typer, rich.console"`) and each pacore command alternately, `--runs` times
each, so that load on a shared machine hits both alike, and prints the medians and the ratio to the baseline.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _elapsed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent, help="venv bin with python, pacore")
    args = parser.parse_args()
    python, pacore = str(args.bin / "python"), str(args.bin / "pacore")
    commands = {
        "baseline: python -c 'import typer, rich.console'": [python, "-c", "import typer, rich.console"],
        "pacore --help": [pacore, "--help"],
        "pacore run --help": [pacore, "run", "--help"],
    }
    for argv in commands.values():  # warm the file cache and the bytecode once
        _elapsed(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            times[name].append(_elapsed(argv))
    baseline = statistics.median(next(iter(times.values())))
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:52s} median {median * 1000:7.1f} ms  ({median / baseline:4.1f}x baseline)")


if __name__ == "__main__":
    main()
