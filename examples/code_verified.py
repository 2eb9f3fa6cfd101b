"""A code task solved with the code-verified PaCoRe graph (``pacore-code-verified``).

Each explorer writes a program; before its conclusion is passed on, the program is run in the sandbox on the
sample tests and the evidence ("passed 1/2 sample tests; failed on input ...") is appended, so the synthesizer
reasons over verified facts. The final program is verified too, and here also run on a new input::

    PACORE_BASE_URL=http://127.0.0.1:8000/v1 python examples/code_verified.py
"""

from __future__ import annotations

import asyncio
import os

from pacore_graph import ChatBackend, VLLMClient, run_graph
from pacore_graph.graphs import load_graph, load_spec
from pacore_graph.progress import RunProgress
from pacore_graph.tools import arun_python

PROBLEM = """Read two integers a and b (one line, separated by a space) and print their product.
Answer with a complete Python 3 program in a ```python code block.

Sample Input 1
17 23
Sample Output 1
391

Sample Input 2
2 3
Sample Output 2
6
"""


async def solve(backend: ChatBackend) -> str:
    """Run the graph (tests are read from the problem's samples) and report the verified program."""
    # 3 explorers, then the synthesis; 512 tokens each keeps a small CPU model quick (drop it on a real server),
    # and a small model may ramble past them: keep what it cut off rather than fail the round
    spec = load_spec("pacore-code-verified").with_overrides(schedule=[3], max_tokens=512, truncated="keep")
    graph = load_graph(spec, backend)
    # RunProgress: a plain line on stderr per round, so a slow model is never silent
    result = await run_graph(graph, {"problem": PROBLEM}, progress=RunProgress(rounds=1))
    verification, program = result.extra["verification"], result.extra["program"]
    lines = [f"final program: {verification['evidence']}"]
    if program is not None:
        run = await arun_python(program, "17 23\n")
        lines.append(f"17 23 -> {run.stdout.strip()} ({run.describe()})")
    return "\n".join(lines)


async def main(backend: ChatBackend | None = None) -> str:
    """Solve the task; without a backend, use the server at ``PACORE_BASE_URL``."""
    if backend is not None:
        return await solve(backend)
    async with VLLMClient(os.environ.get("PACORE_BASE_URL", "http://127.0.0.1:8000/v1")) as client:
        return await solve(client)


if __name__ == "__main__":
    print(asyncio.run(main()))
