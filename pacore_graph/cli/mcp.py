"""``pacore mcp``: serve PaCoRe as the MCP tool ``deep_reason``, over stdio (default) or streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, endpoints, open_backend, split_base_urls
from pacore_graph.cli.options import ApiKeyOption, BaseUrlOption, ConcurrencyOption, EngineModelOption, ModelOption
from pacore_graph.cli.process import run_command
from pacore_graph.cli.render import error_exit
from pacore_graph.errors import ConfigError, PaCoReError

# The MCP SDK, the graphs and the clients load when the command runs, not at `pacore --help`.
if TYPE_CHECKING:
    import uvicorn

    from pacore_graph.server.mcp import MCPSettings

__all__ = ["mcp_command"]


class Transport(StrEnum):
    """How MCP clients reach the server."""

    stdio = "stdio"
    http = "http"


def mcp_command(
    ctx: typer.Context,
    transport: Annotated[
        Transport,
        typer.Option(help="stdio: the client spawns `pacore mcp` (default); http: streamable HTTP on --host:--port."),
    ] = Transport.stdio,
    graph: Annotated[
        str | None,
        typer.Option("--graph", "-g", help="The graph a call without `graph` runs (a name or a spec .yaml)."),
    ] = None,
    engine_model: EngineModelOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    concurrency: ConcurrencyOption = None,
    host: Annotated[
        str, typer.Option(help="With --transport http: the address to listen on; loopback unless you mean otherwise.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="With --transport http: the port (0 picks a free one).")
    ] = 8090,
    http_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PACORE_MCP_API_KEY",
            help="With --transport http: require this bearer key from clients, 401 otherwise (never printed).",
        ),
    ] = None,
    max_trajectories: Annotated[
        int, typer.Option(min=1, help="Most trajectories (K summed over rounds, synthesis included) per call.")
    ] = 256,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Serve PaCoRe as an MCP server with one tool, deep_reason(problem, graph?, schedule?)."""
    from pacore_graph.graphs import DEFAULT_GRAPH, load_spec

    err = Console(stderr=True, soft_wrap=True)  # stdout carries the protocol over stdio: everything else goes to stderr
    try:
        server_module = _import_server()
        if transport is Transport.stdio and http_api_key is not None:
            raise ConfigError(
                "--http-api-key (or PACORE_MCP_API_KEY) protects the HTTP transport; add --transport http, or drop "
                "the key"
            )
        load_spec(graph or DEFAULT_GRAPH)  # a bad --graph fails before an engine starts
        settings = server_module.MCPSettings(
            default_graph=graph or DEFAULT_GRAPH, max_trajectories=max_trajectories, api_key=http_api_key
        )
        server = ServerOptions(split_base_urls(base_url), model, api_key, concurrency, engine_model)
        sock = None
        if transport is Transport.http:
            sock = _bind(host, port)  # before the backend: a taken port fails before an engine starts
            if not _is_loopback(host) and http_api_key is None:
                err.print(
                    f"[yellow]warning:[/] listening on {host} without --http-api-key: anyone who can reach it can "
                    "spend your model server's compute"
                )
        run_command(ctx, _serve(server, settings, err, sock))
    except PaCoReError as exc:
        if debug:
            raise
        raise error_exit(err, exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _import_server() -> ModuleType:
    """``pacore_graph.server.mcp`` (uvicorn too), or a ``ConfigError`` saying how to install the ``mcp`` extra."""
    try:
        import uvicorn  # noqa: F401  (checked here, used by _serve)

        from pacore_graph.server import mcp
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("mcp", "mcp_types", "uvicorn", "starlette"):
            raise
        raise ConfigError(
            f"`pacore mcp` needs the MCP SDK ({exc.name} is missing): pip install 'pacore-graph[mcp]'"
        ) from exc
    return mcp


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 for an IPv6 address); ``ConfigError`` if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port"
        ) from exc
    return sock


async def _serve(server: ServerOptions, settings: MCPSettings, console: Console, sock: socket.socket | None) -> None:
    """Open the backend, then serve stdio (until the client closes it) or HTTP, until SIGINT/SIGTERM.

    A signal stops the serving, not the process, so the backend closes (and an embedded engine stops) after it.
    """
    import uvicorn

    from pacore_graph.server.mcp import HTTP_PATH, PaCoReMCP

    async with open_backend(server, console) as client:
        mcp = PaCoReMCP(client, settings)
        upstream = ", ".join(endpoints(client))
        if sock is None:
            stdio = asyncio.create_task(mcp.run_stdio())
            with _on_signals(stdio.cancel):
                console.print(f"PaCoRe MCP server on stdio → {upstream}", highlight=False, soft_wrap=True)
                await asyncio.wait([stdio])
            if not stdio.cancelled():
                stdio.result()  # its exception, if any
            return
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}{HTTP_PATH}" if ":" in host else f"http://{host}:{port}{HTTP_PATH}"
        http = _uvicorn_server(uvicorn.Config(mcp.http_app(host), log_level="warning", lifespan="on"))
        with _on_signals(lambda: setattr(http, "should_exit", True)):  # uvicorn's graceful shutdown
            console.print(f"PaCoRe MCP server on {url} → {upstream} (Ctrl-C to stop)", highlight=False, soft_wrap=True)
            await http.serve(sockets=[sock])


def _uvicorn_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server without its own signal handling: it re-raises the signal after shutting down, which would
    end the process before the backend closes. :func:`_on_signals` handles the signals instead."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


@contextlib.contextmanager
def _on_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``stop`` (on the running loop) instead of ending the process."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
