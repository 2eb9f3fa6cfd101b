"""``pacore serve``: run the OpenAI-compatible PaCoRe proxy in front of a model server or the embedded engine."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, endpoints, open_backend, split_base_urls
from pacore_graph.cli.options import ConcurrencyOption
from pacore_graph.cli.process import run_command
from pacore_graph.cli.render import error_exit, print_error
from pacore_graph.errors import PaCoReError

# The proxy (aiohttp, the graphs) loads when the command runs, not at `pacore --help`.
if TYPE_CHECKING:
    from pacore_graph.server import ProxySettings

__all__ = ["serve_command"]


def serve_command(
    ctx: typer.Context,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PACORE_BASE_URL",
            metavar="URL",
            help=(
                "The model server's API root, e.g. http://127.0.0.1:8000/v1; repeat it (or give the variable several "
                "URLs separated by commas or spaces) to balance over several servers; default: the embedded engine."
            ),
        ),
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(envvar="PACORE_MODEL", help="The upstream model name (default: the server's first).")
    ] = None,
    upstream_api_key: Annotated[
        str | None, typer.Option(envvar="PACORE_API_KEY", help="Bearer key for the upstream server.")
    ] = None,
    engine_model: Annotated[
        str | None, typer.Option(help="With no --upstream: the model the embedded engine serves (GPU machines).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="PACORE_PROXY_API_KEY", help="Require this bearer key from clients (never printed)."),
    ] = None,
    graphs: Annotated[
        str | None, typer.Option(help="Comma-separated graph names to serve (default: every graph).")
    ] = None,
    max_trajectories: Annotated[
        int, typer.Option(min=1, help="Most trajectories (K summed over rounds, synthesis included) per request.")
    ] = 256,
    max_concurrent_runs: Annotated[
        int, typer.Option(min=1, help="Requests run at once; more get 429 with Retry-After.")
    ] = 32,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body; larger get 413.")] = 4194304,
    concurrency: ConcurrencyOption = None,
    shutdown_grace: Annotated[
        float, typer.Option(min=0.0, help="Seconds in-flight requests get to finish on shutdown.")
    ] = 30.0,
    allow_code_execution: Annotated[
        bool,
        typer.Option(help="Serve graphs that run model-written code (pacore-code-verified); off by default."),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="A Host name to answer (repeatable; '*' for any); default without --api-key: loopback names only.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(metavar="ORIGIN", help="A web origin (https://app.example) allowed to call from a browser."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Serve PaCoRe as an OpenAI-compatible API: the request's model names the graph (see /v1/models)."""
    from pacore_graph.server import ProxySettings

    err = Console(stderr=True, soft_wrap=True)
    try:
        settings = ProxySettings(
            host=host,
            port=port,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            max_trajectories=max_trajectories,
            max_concurrent_runs=max_concurrent_runs,
            graphs=tuple(name.strip() for name in graphs.split(",") if name.strip()) if graphs else None,
            shutdown_grace=shutdown_grace,
            allow_code_execution=allow_code_execution,
            allowed_hosts=tuple(allowed_host) if allowed_host else None,
            cors_origins=tuple(cors_origin or ()),
        )
        if not _is_loopback(host) and api_key is None:
            err.print(
                f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach it can spend "
                "your model server's compute"
            )
        server = ServerOptions(split_base_urls(upstream), upstream_model, upstream_api_key, concurrency, engine_model)
        run_command(ctx, _serve(server, settings, err))
    except PaCoReError as exc:
        if debug:
            raise
        raise error_exit(err, exc) from None
    except OSError as exc:
        if debug:
            raise
        print_error(err, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _serve(server: ServerOptions, settings: ProxySettings, console: Console) -> None:
    """Serve until SIGINT/SIGTERM, then drain: new requests get 503 while in-flight ones finish."""
    from pacore_graph.server import PaCoReProxy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with open_backend(server, console) as client:
        proxy = PaCoReProxy(client, settings)
        await proxy.start()
        upstream = ", ".join(endpoints(client))
        console.print(
            f"PaCoRe proxy on {proxy.base_url} → {upstream}; models: {', '.join(proxy.specs)} (Ctrl-C to stop)",
            highlight=False,
            soft_wrap=True,
        )
        if proxy.disabled:
            console.print(
                f"not served: {', '.join(proxy.disabled)} (they execute model-written code; --allow-code-execution)",
                highlight=False,
                soft_wrap=True,
            )
        try:
            await stop.wait()
        finally:
            console.print(f"draining: waiting up to {settings.shutdown_grace:g} s for {proxy.in_flight} request(s)")
            await proxy.shutdown()
