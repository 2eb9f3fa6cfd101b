"""Start-up cost of one sandboxed run, old sandbox against new, side by side (median of N).

    .venv/bin/python tests/benchmarks/bench_sandbox_startup.py [--old-rev 5fa0bfa] [--runs 20]

The old implementation (``tools/sandbox.py`` and ``tools/_sandbox_init.py`` at ``--old-rev``) is loaded from
git into a temporary package; the new one is the installed ``pacore_graph.tools.sandbox``. Each round runs the
trivial program ``print(1)`` once with each, alternating, so both see the same machine load. Set
``PACORE_SANDBOX_NO_CGROUP=1`` to measure the new sandbox without its per-run cgroup.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_old(rev: str, into: Path) -> ModuleType:
    """Import the sandbox as it was at ``rev``."""
    package = into / "old_sandbox"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("sandbox.py", "_sandbox_init.py"):
        source = subprocess.run(
            ["git", "show", f"{rev}:tools/{name}"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        (package / name).write_text(source)
    spec = importlib.util.spec_from_file_location("old_sandbox.sandbox", package / "sandbox.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


def timed(run: object) -> float:
    started = time.perf_counter()
    result = run("print(1)")  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    assert result.stdout == "1\n", result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="5fa0bfa", help="git revision of the old sandbox")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from pacore_graph.tools import sandbox as new

    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old_rev, Path(tmp))
        print(f"old: {old.sandbox_capabilities().reason}")
        caps = new.sandbox_capabilities()
        print(f"new: {caps.reason}; cgroup {caps.cgroup} ({caps.cgroup_reason})")
        timed(old.run_python), timed(new.run_python)  # warm-up: probes, caches, page cache
        old_times, new_times = [], []
        for _ in range(args.runs):
            old_times.append(timed(old.run_python))
            new_times.append(timed(new.run_python))
    print(f"{'':8}{'median ms':>12}{'min ms':>10}{'max ms':>10}   (print(1), {args.runs} runs each, alternating)")
    for name, times in (("old", old_times), ("new", new_times)):
        ms = [t * 1000 for t in times]
        print(f"{name:8}{statistics.median(ms):12.1f}{min(ms):10.1f}{max(ms):10.1f}")
    print(f"new/old median: {statistics.median(new_times) / statistics.median(old_times):.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
