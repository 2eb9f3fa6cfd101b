"""Where the CLI's model comes from: server URLs, a running `pacore engine up`, or a fresh embedded engine."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from rich.console import Console

from pacore_graph.engine.errors import INSTALL_HINT, EngineNotInstalledError

# The clients (aiohttp) and the engine launcher load when a backend is opened, not at `pacore --help`.
if TYPE_CHECKING:
    from pacore_graph.clients.balanced import BalancedBackend
    from pacore_graph.clients.vllm import VLLMClient

__all__ = ["CliBackend", "ServerOptions", "endpoints", "open_backend", "split_base_urls"]

CliBackend: TypeAlias = "VLLMClient | BalancedBackend"
"""What :func:`open_backend` yields: one server's client, or a balancer over one client per server."""

#: The first window of an adaptive client, and the connection count a server without /metrics gets.
DEFAULT_WINDOW = 64

NO_SERVER_HINT = (
    "no model server configured and the embedded engine is not installed: pass --base-url http://HOST:PORT/v1 "
    f"(or set PACORE_BASE_URL), or install the embedded engine with: {INSTALL_HINT}"
)


@dataclass(frozen=True)
class ServerOptions:
    """The CLI options that choose and configure the model server(s).

    ``base_urls`` empty means no server was given; ``model``, ``api_key`` and ``concurrency`` apply to each server.
    """

    base_urls: tuple[str, ...] = ()
    model: str | None = None
    api_key: str | None = None
    concurrency: int | None = None  # None: adaptive (start at 64, follow the server's /metrics)
    engine_model: str | None = None

    def client_options(self) -> dict[str, Any]:
        """The :class:`VLLMClient` keyword arguments for each server: model, key and the concurrency window."""
        return {
            "model": self.model,
            "api_key": self.api_key,
            "max_concurrency": self.concurrency or DEFAULT_WINDOW,
            "adaptive_concurrency": self.concurrency is None,
        }


def split_base_urls(values: str | Sequence[str] | None) -> tuple[str, ...]:
    """The API roots in ``values`` (repeated ``--base-url`` options, or ``PACORE_BASE_URL``), in order.

    Each value may hold several URLs separated by commas or whitespace; a URL given twice counts once (a trailing
    ``/`` aside), so it is not sent a double share of the requests. URLs are validated by :class:`VLLMClient`.
    """
    if values is None:
        return ()
    seen: dict[str, str] = {}
    for value in [values] if isinstance(values, str) else values:
        for url in re.split(r"[,\s]+", value):
            if url:
                seen.setdefault(url.rstrip("/"), url)
    return tuple(seen.values())


def endpoints(backend: CliBackend) -> list[str]:
    """The server URLs behind ``backend``, for messages."""
    from pacore_graph.clients.balanced import BalancedBackend

    clients = backend.backends if isinstance(backend, BalancedBackend) else [backend]
    return [str(getattr(client, "base_url", client)) for client in clients]


@asynccontextmanager
async def open_backend(
    options: ServerOptions, console: Console, on_phase: Callable[[str], None] = lambda phase: None
) -> AsyncIterator[CliBackend]:
    """Yield a backend: for the ``--base-url`` servers if any, else a running shared engine, else a new embedded one.

    One URL gives a plain :class:`VLLMClient`; several give a :class:`BalancedBackend` over one client per URL
    (each with the same model, key and concurrency cap). Every URL is checked before any client is used.
    A new embedded engine lives exactly as long as the block: it is stopped on every exit path.
    ``on_phase`` hears when engine start-up begins, so an interruption can be reported precisely.
    """
    from pacore_graph.clients.balanced import BalancedBackend
    from pacore_graph.clients.vllm import VLLMClient
    from pacore_graph.engine import LocalEngine, find_running_engine

    if options.base_urls:
        clients = [VLLMClient(url, **options.client_options()) for url in options.base_urls]
        if len(clients) == 1:
            async with clients[0] as url_client:
                yield url_client
            return
        async with BalancedBackend(clients) as balanced:
            yield balanced
        return
    running = find_running_engine()
    if running is not None and options.engine_model in (None, running.model_path):
        console.print(f"[dim]using the engine started by `pacore engine up` at {running.base_url}[/]")
        async with running.client(**options.client_options()) as client:
            yield client
        return
    started = time.monotonic()
    on_phase("embedded engine start-up")
    try:
        if console.is_terminal:
            with console.status("starting the embedded vLLM engine…") as status:

                def progress(phase: str, elapsed: float) -> None:
                    status.update(f"{phase} ({elapsed:.0f} s)")

                engine = LocalEngine(options.engine_model, progress=progress)
                await engine.start()
        else:  # no spinner off a terminal: a line as each phase starts, then one every 5 s (pacore_graph.progress)
            from pacore_graph.progress import ProgressLines

            lines = ProgressLines("pacore engine", stream=console.file)
            engine = LocalEngine(options.engine_model, progress=lines.phases())
            await engine.start()
    except EngineNotInstalledError as exc:
        raise EngineNotInstalledError(NO_SERVER_HINT) from exc
    try:
        console.print(
            f"[dim]embedded engine ready in {time.monotonic() - started:.0f} s "
            f"(model {engine.model}, log {engine.log_path}); `pacore engine up` keeps one running between runs[/]"
        )
        async with engine.client(**options.client_options()) as client:
            yield client
    finally:
        await engine.stop()
