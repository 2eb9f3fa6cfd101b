"""The proxy's request defences: who may call it, what a body may be, and which graphs it serves.

* **Host allow-list** (against DNS rebinding): with no API key, only requests whose ``Host`` names this
  machine's loopback (``localhost``, ``127.0.0.1``, ``::1``) or the listen address are answered; others get 403.
  ``allowed_hosts`` replaces the list (``*``: any host). With an API key a rebound page cannot authenticate, so
  the list applies only if given.
* **Origins**: a request whose ``Origin`` is neither the proxy's own nor one of ``cors_origins`` gets 403, so a
  web page of another site cannot drive the proxy from a visitor's browser (a plain ``fetch`` POST needs no
  preflight). No CORS headers are sent unless ``cors_origins`` lists the origin; those origins get
  ``Access-Control-Allow-Origin`` and their preflights (``OPTIONS``) are answered.
* **Bodies** (:func:`read_json_body`): read within ``body_timeout`` seconds (else 408), JSON nested at most
  ``max_json_depth`` deep (else 400, never a ``RecursionError``). Request heads get the server's
  ``keepalive_timeout`` (:data:`HEADER_TIMEOUT` by default), after which an incomplete head is dropped.
* **Graphs that execute code** (:func:`split_code_graphs`): a graph whose type sets
  ``GraphType.executes_code`` (the code-verified graph runs model-written programs) is served only when the
  operator allows it; otherwise it is listed as disabled, with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from pacore_graph.errors import ConfigError
from pacore_graph.graphs import GraphSpec
from pacore_graph.graphs.kinds import graph_types
from pacore_graph.server.protocol import error_body

__all__ = [
    "BODY_TIMEOUT",
    "CODE_EXECUTION_DISABLED",
    "HEADER_TIMEOUT",
    "LOOPBACK_HOSTS",
    "MAX_JSON_DEPTH",
    "GuardError",
    "RequestGuard",
    "default_allowed_hosts",
    "executes_code",
    "json_depth_exceeds",
    "read_json_body",
    "split_code_graphs",
]

#: Host names answered by default when the proxy has no API key.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Seconds a client gets to send a request head (and to stay idle between requests on a kept-alive connection).
HEADER_TIMEOUT = 15.0
#: Seconds a client gets to send a request body once its head has arrived.
BODY_TIMEOUT = 30.0
#: The deepest JSON nesting a request body may have (OpenAI's requests need fewer than ten levels).
MAX_JSON_DEPTH = 64
#: Why a graph that runs model-written code is not served (shown in ``/v1/models`` and in a refused request).
CODE_EXECUTION_DISABLED = (
    "executes model-written code, which this proxy does not allow; start it with --allow-code-execution to serve it"
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CORS_ORIGIN = web.RequestKey("pacore_cors_origin", str)


class GuardError(Exception):
    """A request refused by a defence; answered as OpenAI-style JSON with ``status``."""

    def __init__(self, status: int, message: str, error_type: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code

    def response(self) -> web.Response:
        """The OpenAI-style JSON error response."""
        return web.json_response(error_body(str(self), self.error_type, self.code), status=self.status)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port or IPv6 brackets, lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # a bare IPv6 address (not valid in Host, but compared as is) or a name without port


def default_allowed_hosts(listen_host: str) -> frozenset[str]:
    """The loopback names, plus the listen address when it is a specific one (not 0.0.0.0 or ::)."""
    hosts = set(LOOPBACK_HOSTS)
    try:
        unspecified = ipaddress.ip_address(listen_host).is_unspecified
    except ValueError:
        unspecified = False
    if listen_host and not unspecified:
        hosts.add(_host_name(listen_host))
    return frozenset(hosts)


class RequestGuard:
    """The Host and Origin checks and CORS, as one aiohttp middleware plus a response-prepare hook.

    ``allowed_hosts`` ``None`` turns the Host check off; a set containing ``*`` allows any host. ``cors_origins``
    are full origins (``https://app.example``), compared exactly.
    """

    def __init__(self, allowed_hosts: Iterable[str] | None, cors_origins: Iterable[str] = ()) -> None:
        hosts = None if allowed_hosts is None else frozenset(_host_name(h) for h in allowed_hosts)
        self.allowed_hosts = None if hosts is None or "*" in hosts else hosts
        self.cors_origins = frozenset(origin.rstrip("/") for origin in cors_origins)

    def install(self, app: web.Application) -> None:
        """Run the checks before every other middleware of ``app`` and add CORS headers to allowed origins."""
        app.middlewares.insert(0, self.middleware)
        app.on_response_prepare.append(self._add_cors_headers)

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Refuse other hosts and foreign origins; answer CORS preflights of the configured origins."""
        try:
            self._check_host(request)
            origin = self._check_origin(request)
        except GuardError as exc:
            return exc.response()
        if origin is not None and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            requested = request.headers.get("Access-Control-Request-Headers", "Authorization, Content-Type")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": requested,
                    "Access-Control-Max-Age": "600",
                },
            )
        response = await handler(request)
        if response.status == 408:  # the rest of a body that timed out is not waited for
            response.force_close()
        return response

    def _check_host(self, request: web.Request) -> None:
        if self.allowed_hosts is None:
            return
        name = _host_name(request.host)
        if name not in self.allowed_hosts:
            raise GuardError(
                403,
                f"host {name!r} is not served: without --api-key this proxy answers only requests for "
                f"{', '.join(sorted(self.allowed_hosts))}; add the name with --allowed-host, or set --api-key",
                "permission_error",
                "host_not_allowed",
            )

    def _check_origin(self, request: web.Request) -> str | None:
        """The request's CORS origin when it is an allowed foreign one; None for no or the same origin."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        origin = origin.rstrip("/")
        if origin in self.cors_origins:
            request[_CORS_ORIGIN] = origin
            return origin
        if origin.lower() == f"{request.scheme}://{request.host}".lower():
            return None
        raise GuardError(
            403,
            f"requests from web pages of other origins ({origin}) are refused; the operator can allow one with "
            "--cors-origin",
            "permission_error",
            "origin_not_allowed",
        )

    @staticmethod
    async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.get(_CORS_ORIGIN)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and objects more than ``limit`` deep; iterative, no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def read_json_body(request: web.Request, *, body_timeout: float, max_depth: int) -> Any:
    """The request's JSON body, read within ``body_timeout`` seconds; raises :class:`GuardError` (408 or 400).

    A body over the app's ``client_max_size`` raises aiohttp's 413 as before.
    """
    try:
        async with asyncio.timeout(body_timeout):
            raw = await request.read()
    except TimeoutError:
        message = f"the request body did not arrive within {body_timeout:g} s"
        raise GuardError(408, message, "invalid_request_error", "request_timeout") from None
    too_deep = GuardError(
        400, f"the request body nests JSON more than {max_depth} levels deep", "invalid_request_error", "invalid_json"
    )
    try:
        data = json.loads(raw)
    except RecursionError:  # the C parser's own guard: far deeper than max_depth
        raise too_deep from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise GuardError(400, "the request body is not valid JSON", "invalid_request_error", "invalid_json") from None
    if json_depth_exceeds(data, max_depth):
        raise too_deep
    return data


def executes_code(spec: GraphSpec) -> bool:
    """Whether ``spec``'s graph type runs model-written code (``GraphType.executes_code``)."""
    kind = graph_types().get(spec.type)
    return kind is not None and kind.executes_code


def split_code_graphs(
    specs: Mapping[str, GraphSpec], *, allow_code_execution: bool, explicit: bool
) -> tuple[dict[str, GraphSpec], dict[str, str]]:
    """The graphs to serve and the disabled ones (name → reason).

    ``explicit``: the operator named the graphs (``--graphs``); naming one that executes code without allowing it
    is a :class:`~pacore_graph.ConfigError` rather than a silent omission.
    """
    if allow_code_execution:
        return dict(specs), {}
    served: dict[str, GraphSpec] = {}
    disabled: dict[str, str] = {}
    for name, spec in specs.items():
        if executes_code(spec):
            disabled[name] = CODE_EXECUTION_DISABLED
        else:
            served[name] = spec
    if explicit and disabled:
        raise ConfigError(
            f"graph(s) {sorted(disabled)} execute model-written code; pass --allow-code-execution to serve them"
        )
    return served, disabled
