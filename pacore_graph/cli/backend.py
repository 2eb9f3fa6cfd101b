"""Where the CLI's model comes from: a server URL, a running `pacore engine up`, or a fresh embedded engine."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from rich.console import Console

from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.engine import EngineNotInstalledError, LocalEngine, find_running_engine
from pacore_graph.engine.errors import INSTALL_HINT

__all__ = ["ServerOptions", "open_backend"]

NO_SERVER_HINT = (
    "no model server configured and the embedded engine is not installed: pass --base-url http://HOST:PORT/v1 "
    f"(or set PACORE_BASE_URL), or install the embedded engine with: {INSTALL_HINT}"
)


@dataclass(frozen=True)
class ServerOptions:
    """The CLI options that choose and configure the model server."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 64
    engine_model: str | None = None


@asynccontextmanager
async def open_backend(
    options: ServerOptions, console: Console, on_phase: Callable[[str], None] = lambda phase: None
) -> AsyncIterator[VLLMClient]:
    """Yield a client: for ``--base-url`` if given, else a running shared engine, else a new embedded one.

    A new embedded engine lives exactly as long as the block: it is stopped on every exit path.
    ``on_phase`` hears when engine start-up begins, so an interruption can be reported precisely.
    """
    if options.base_url:
        url_client = VLLMClient(
            options.base_url, model=options.model, api_key=options.api_key, max_concurrency=options.concurrency
        )
        async with url_client:
            yield url_client
        return
    running = find_running_engine()
    if running is not None and options.engine_model in (None, running.model_path):
        console.print(f"[dim]using the engine started by `pacore engine up` at {running.base_url}[/]")
        async with running.client(model=options.model, max_concurrency=options.concurrency) as client:
            yield client
        return
    started = time.monotonic()
    on_phase("embedded engine start-up")
    try:
        with console.status("starting the embedded vLLM engine…") as status:

            def progress(phase: str, elapsed: float) -> None:
                status.update(f"{phase} ({elapsed:.0f} s)")

            engine = LocalEngine(options.engine_model, progress=progress)
            await engine.start()
    except EngineNotInstalledError as exc:
        raise EngineNotInstalledError(NO_SERVER_HINT) from exc
    try:
        console.print(
            f"[dim]embedded engine ready in {time.monotonic() - started:.0f} s "
            f"(model {engine.model}, log {engine.log_path}); `pacore engine up` keeps one running between runs[/]"
        )
        async with engine.client(model=options.model, max_concurrency=options.concurrency) as client:
            yield client
    finally:
        await engine.stop()
