"""vLLM's own router (``vllm-router`` on PyPI, a Rust binary) in front of servers, for tests and benchmarks.

It is the engine a user would put in front of a cluster of vLLM servers; PaCoRe talks to it as to one server.
It serves no vLLM load gauges, so the client in front of it needs a fixed window (``adaptive_concurrency=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import shutil
from collections.abc import AsyncIterator, Sequence

import aiohttp

from pacore_graph.engine.process import free_port


class RouterUnavailable(RuntimeError):
    """``vllm-router`` is not installed, or it did not start."""


def router_binary() -> str:
    """The ``vllm-router`` executable of the installed package; :class:`RouterUnavailable` if there is none."""
    try:
        dist = importlib.metadata.distribution("vllm-router")
    except importlib.metadata.PackageNotFoundError:
        raise RouterUnavailable("vllm-router is not installed: pip install 'pacore-graph[bench]'") from None
    for file in dist.files or []:
        if str(file).endswith("bin/vllm-router"):
            return str(dist.locate_file(file))
    found = shutil.which("vllm-router")
    if found is None:
        raise RouterUnavailable("the vllm-router package is installed but its executable was not found")
    return found


@contextlib.asynccontextmanager
async def vllm_router(
    workers: Sequence[str], policy: str = "cache_aware", start_timeout: float = 10.0
) -> AsyncIterator[str]:
    """Run ``vllm-router`` on 127.0.0.1 in front of ``workers`` (server roots, no ``/v1``); yields its ``/v1`` URL.

    ``policy`` is the router's (``cache_aware``, ``round_robin``, ``random``, ``power_of_two``, ...).
    """
    command = [router_binary(), "--host", "127.0.0.1", "--port", str(port := free_port()), "--policy", policy]
    command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()), "--log-level", "warning"]
    command += ["--worker-urls", *workers]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(process, url, start_timeout)
        yield url + "/v1"
    finally:
        if process.returncode is None:
            process.terminate()
        with contextlib.suppress(ProcessLookupError, asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), 5)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_ready(process: asyncio.subprocess.Process, url: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if process.returncode is not None:
                err = (await process.stderr.read()).decode(errors="replace") if process.stderr else ""
                raise RouterUnavailable(f"vllm-router exited with {process.returncode}: {err[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/v1/models") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RouterUnavailable(f"vllm-router did not answer {url}/v1/models within {seconds:g} s")
