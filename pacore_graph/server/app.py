"""``PaCoReProxy``: an OpenAI-compatible HTTP server that answers every chat completion with a PaCoRe run.

Routes: ``GET /health``, ``GET /v1/models`` (one model per graph), ``POST /v1/chat/completions`` (JSON or SSE),
``POST /v1/responses`` (the Responses API, JSON or SSE; converted to and from the chat path by
:mod:`pacore_graph.server.responses`).
The request's ``model`` names the graph; the upstream model server is fixed by configuration (the backend the
proxy was built with) and never taken from a request.

Failure and safety rules, all implemented in this module:

* a wrong or missing bearer key → 401 (compared in constant time); a body over ``max_body_bytes`` → 413;
* a bad request, graph, schedule or ``pacore`` option → 400, as is a schedule of more than ``max_trajectories``
  trajectories (the final synthesis included);
* ``max_concurrent_runs`` runs in flight → 429 with ``Retry-After``; while draining for shutdown → 503;
* upstream failures → 502 (504 for a timeout); an upstream 400/404/422 (the request's parameters) → 400;
* a client that disconnects cancels its run and so its in-flight upstream requests (``handler_cancellation``);
* Host and Origin checks, CORS, body timeouts and JSON depth, and which graphs execute code: see
  :mod:`pacore_graph.server.guard`. A run counts against ``max_concurrent_runs`` only once its body is read and valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from pacore_graph.clients.base import ChatBackend
from pacore_graph.compaction import ConclusionStream
from pacore_graph.errors import (
    BackendError,
    ConfigError,
    ContextBudgetError,
    GraphOutputError,
    PaCoReError,
    UpstreamError,
    UpstreamTimeoutError,
)
from pacore_graph.events import RoundCompacted, RoundStarted, SynthesisDelta
from pacore_graph.graphs import GraphSpec, build_graph, discover_graphs
from pacore_graph.graphs.kinds import CompiledGraph
from pacore_graph.prompts import normalize_problem
from pacore_graph.result import PaCoReResult
from pacore_graph.run import run_graph, stream_run
from pacore_graph.server.guard import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_JSON_DEPTH,
    GuardError,
    RequestGuard,
    default_allowed_hosts,
    executes_code,
    read_json_body,
    split_code_graphs,
)
from pacore_graph.server.protocol import (
    ChatCompletionRequest,
    chunk,
    completion_body,
    error_body,
    new_completion_id,
    parse_request,
    tool_call_delta,
)
from pacore_graph.server.responses import (
    ResponseEvents,
    chat_body,
    new_message_id,
    new_response_id,
    output_items,
    response_body,
)

__all__ = ["PaCoReProxy", "ProxySettings"]

log = logging.getLogger(__name__)

#: Compiled graphs kept per (model, overrides); compiling costs milliseconds, a hot proxy sees few variants.
_GRAPH_CACHE_SIZE = 64


@dataclass(frozen=True)
class ProxySettings:
    """How the proxy listens and what it allows.

    Attributes:
        host, port: where to listen; loopback by default (port 0 picks a free one).
        api_key: when set, clients must send ``Authorization: Bearer <api_key>``.
        max_body_bytes: request bodies over this are refused with 413.
        max_trajectories: the most trajectories (sum of K over the rounds, synthesis included) one request may run.
        max_concurrent_runs: runs in flight at most; more get 429 with ``Retry-After: retry_after``.
        heartbeat_seconds: a stream with nothing to send for this long gets an SSE comment, so proxies and
            clients do not time it out during long rounds.
        graphs: the graph names served (``None``: every discovered graph).
        shutdown_grace: seconds in-flight runs may take to finish on shutdown before they are cancelled.
        allow_code_execution: serve graphs that execute model-written code (off: they are listed as disabled).
        allowed_hosts: the ``Host`` names answered (``*``: any); ``None``: with no ``api_key``, the loopback names
            and ``host``; with one, any.
        cors_origins: web origins (``https://app.example``) allowed to call the proxy from a browser.
        header_timeout, body_timeout: seconds a client gets to send a request head, and then its body.
        max_json_depth: the deepest JSON nesting a request body may have.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_trajectories: int = 256
    max_concurrent_runs: int = 32
    retry_after: int = 1
    heartbeat_seconds: float = 10.0
    graphs: tuple[str, ...] | None = None
    shutdown_grace: float = 30.0
    allow_code_execution: bool = False
    allowed_hosts: tuple[str, ...] | None = None
    cors_origins: tuple[str, ...] = ()
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_json_depth: int = MAX_JSON_DEPTH


class _HTTPError(Exception):
    """An error answered as OpenAI-style JSON with this status."""

    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code


def _classify(exc: BaseException) -> _HTTPError:
    """The HTTP answer for an exception raised while serving a request (see the module docstring)."""
    if isinstance(exc, _HTTPError):
        return exc
    if isinstance(exc, ConfigError | ContextBudgetError):
        return _HTTPError(400, str(exc), "invalid_request_error", "invalid_request")
    if isinstance(exc, UpstreamTimeoutError):
        return _HTTPError(504, str(exc), "upstream_error", "upstream_timeout")
    if isinstance(exc, UpstreamError) and exc.status in (400, 404, 422):
        return _HTTPError(400, str(exc), "invalid_request_error", "upstream_rejected")
    if isinstance(exc, BackendError):
        return _HTTPError(502, str(exc), "upstream_error", "upstream_failed")
    if isinstance(exc, GraphOutputError):  # a graph wired without PaCoRe's output: the server's fault
        log.error("a graph ended without an answer: %s", exc)
        return _HTTPError(500, str(exc), "server_error", "graph_output")
    if isinstance(exc, PaCoReError):  # RoundError: the upstream's answers left nothing to go on
        return _HTTPError(502, str(exc), "upstream_error", "round_failed")
    log.exception("internal error in the PaCoRe proxy", exc_info=exc)
    return _HTTPError(500, f"internal error: {type(exc).__name__}; see the proxy's log", "server_error", "internal")


def _json_error(error: _HTTPError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(str(error), error.error_type, error.code), status=error.status, headers=headers)


class PaCoReProxy:
    """The OpenAI-compatible PaCoRe proxy over one backend (usually a pooled ``VLLMClient``).

    Use ``async with PaCoReProxy(backend, settings) as proxy:`` (``proxy.base_url`` is the ``/v1`` root), or
    :meth:`start` then :meth:`shutdown`. :attr:`app` is the ``aiohttp.web.Application`` itself.
    """

    def __init__(self, backend: ChatBackend, settings: ProxySettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or ProxySettings()
        #: the graphs served, and those not served (name → why)
        self.specs, self.disabled = split_code_graphs(
            self._load_specs(self.settings.graphs),
            allow_code_execution=self.settings.allow_code_execution,
            explicit=self.settings.graphs is not None,
        )
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._graphs: OrderedDict[str, tuple[CompiledGraph, GraphSpec]] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._middleware])
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/v1/models/{model}", self._model)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/responses", self._responses)
        hosts = self.settings.allowed_hosts
        if hosts is None and self.settings.api_key is None:
            hosts = tuple(default_allowed_hosts(self.settings.host))
        RequestGuard(hosts, self.settings.cors_origins).install(self.app)

    @staticmethod
    def _load_specs(names: tuple[str, ...] | None) -> dict[str, GraphSpec]:
        specs = {entry.name: entry.spec for entry in discover_graphs() if entry.spec is not None}
        if names is None:
            return specs
        unknown = [name for name in names if name not in specs]
        if unknown:
            raise ConfigError(f"unknown graph(s) {unknown}; available: {', '.join(specs)}")
        return {name: specs[name] for name in names}

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._port is None:
            raise RuntimeError("the proxy is not running; call start() first")
        host = self.settings.host
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: the ``base_url`` for OpenAI clients."""
        return f"{self.url}/v1"

    async def start(self) -> None:
        """Listen on ``settings.host:settings.port``."""
        # handler_cancellation: a client that disconnects cancels its handler, hence its run and upstream calls.
        # keepalive_timeout also bounds the wait for a request head: an incomplete head is dropped after it.
        self._runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self.settings.shutdown_grace,
            keepalive_timeout=self.settings.header_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: new requests get 503, in-flight runs get ``grace`` seconds to finish, then stop."""
        self.draining = True
        grace = self.settings.shutdown_grace if grace is None else grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    # -- middleware and small routes ---------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/health":
            if self.draining:
                return _json_error(
                    _HTTPError(503, "the proxy is shutting down; retry later", "server_error", "draining")
                )
            if self.settings.api_key is not None and not self._authorized(request):
                return _json_error(
                    _HTTPError(
                        401,
                        "invalid or missing API key (Authorization: Bearer ...)",
                        "invalid_request_error",
                        "invalid_api_key",
                    )
                )
        try:
            return await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413 from aiohttp itself: answered as OpenAI-style JSON
            code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}.get(exc.status)
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            message = (
                exc.reason if exc.status != 413 else f"the request body is over {self.settings.max_body_bytes} bytes"
            )
            return _json_error(_HTTPError(exc.status, message, kind, code))
        except _HTTPError as exc:
            return _json_error(exc)

    def _authorized(self, request: web.Request) -> bool:
        expected = f"Bearer {self.settings.api_key}".encode()
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, expected)  # constant time: no timing oracle on the key

    async def _health(self, request: web.Request) -> web.Response:
        status = 503 if self.draining else 200
        return web.json_response(
            {"status": "draining" if self.draining else "ok", "in_flight": self.in_flight}, status=status
        )

    def _model_entry(self, name: str, spec: GraphSpec) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "pacore-graph",
            "pacore": {
                "type": spec.type,
                "schedule": list(spec.schedule.rounds),
                "description": spec.description,
                "executes_code": executes_code(spec),
            },
        }

    async def _models(self, request: web.Request) -> web.Response:
        data = [self._model_entry(name, spec) for name, spec in self.specs.items()]
        disabled = [{"id": name, "object": "model", "reason": reason} for name, reason in self.disabled.items()]
        return web.json_response({"object": "list", "data": data, "disabled": disabled})

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        spec = self.specs.get(name)
        if spec is None:
            raise self._unknown_model(name)
        return web.json_response(self._model_entry(name, spec))

    def _unknown_model(self, name: str) -> _HTTPError:
        if name in self.disabled:
            return _HTTPError(403, f"model {name!r} {self.disabled[name]}", "permission_error", "model_disabled")
        return _HTTPError(
            404,
            f"unknown model {name!r}: the model names the PaCoRe graph; available: {', '.join(self.specs)}",
            "invalid_request_error",
            "model_not_found",
        )

    # -- chat completions --------------------------------------------------------------------------

    async def _read(
        self, request: web.Request, to_chat: Callable[[dict[str, Any]], Any] | None = None
    ) -> tuple[dict[str, Any], ChatCompletionRequest, CompiledGraph, GraphSpec]:
        """Read and validate a request body (the guard's timeouts and depth limit); bad input is a 400 here."""
        try:
            data = await read_json_body(
                request, body_timeout=self.settings.body_timeout, max_depth=self.settings.max_json_depth
            )
        except GuardError as exc:
            raise _HTTPError(exc.status, str(exc), exc.error_type, exc.code) from None
        try:
            parsed = parse_request(to_chat(data) if to_chat is not None else data)
            normalize_problem(parsed.messages)  # bad messages are a 400 before a stream starts
            graph, spec = self._graph_for(parsed)
        except PaCoReError as exc:
            raise _classify(exc) from None
        return data, parsed, graph, spec

    def _refusal(self) -> web.Response | None:
        """A 503 while draining or a 429 at the run limit; None when a run may start."""
        if self.draining:
            raise _HTTPError(503, "the proxy is shutting down; retry later", "server_error", "draining")
        if self.in_flight >= self.settings.max_concurrent_runs:
            error = _HTTPError(
                429,
                f"the proxy is running its limit of {self.settings.max_concurrent_runs} requests; retry later",
                "rate_limit_error",
                "rate_limit_exceeded",
            )
            return _json_error(error, headers={"Retry-After": str(self.settings.retry_after)})
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        _, parsed, graph, spec = await self._read(request)
        # Counted only now: a slow or invalid request never holds one of the runs' places.
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        with self._counted():
            inputs = {"messages": parsed.messages, **parsed.tool_inputs()}
            if parsed.stream:
                return await self._stream(request, parsed, graph, spec, inputs)
            try:
                result = await run_graph(graph, inputs)
            except Exception as exc:
                raise _classify(exc) from exc
            body = completion_body(
                new_completion_id(),
                parsed.model,
                result.answer,
                result.finish_reason,
                result.usage.model_dump(),
                _pacore_meta(spec, result),
                result.tool_calls,
            )
            return web.json_response(body)

    def _graph_for(self, request: ChatCompletionRequest) -> tuple[CompiledGraph, GraphSpec]:
        """The compiled graph for the request's model and overrides (cached); raises ``ConfigError``."""
        spec = self.specs.get(request.model)
        if spec is None:
            raise self._unknown_model(request.model)
        overrides = request.overrides()
        key = json.dumps([request.model, overrides.model_dump(mode="json", exclude_none=True)], sort_keys=True)
        cached = self._graphs.get(key)
        if cached is not None:
            self._graphs.move_to_end(key)
            return cached
        spec = spec.with_overrides(overrides)  # the one override path; a bad option is a ConfigError (a 400)
        total = spec.schedule.total_trajectories
        if total > self.settings.max_trajectories:
            raise ConfigError(
                f"schedule {spec.schedule.spec!r} runs {total} trajectories (K summed over the rounds, plus the "
                f"final synthesis), over this proxy's limit of {self.settings.max_trajectories} per request; ask "
                "for a smaller schedule, or start the proxy with a higher --max-trajectories"
            )
        built = (build_graph(spec, self.backend), spec)
        self._graphs[key] = built
        if len(self._graphs) > _GRAPH_CACHE_SIZE:
            self._graphs.popitem(last=False)
        return built

    async def _stream(
        self,
        request: web.Request,
        parsed: ChatCompletionRequest,
        graph: CompiledGraph,
        spec: GraphSpec,
        inputs: dict[str, Any],
    ) -> web.StreamResponse:
        """SSE: progress as comment lines while the rounds run, the synthesis as true deltas, then usage."""
        response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        completion_id, created, model = new_completion_id(), int(time.time()), parsed.model

        async def send(event: dict[str, Any] | str) -> None:
            await response.write(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode())

        def delta(text: str) -> dict[str, Any]:
            return chunk(completion_id, model, created, {"content": text}, include_usage=parsed.include_usage)

        await send(
            chunk(
                completion_id, model, created, {"role": "assistant", "content": ""}, include_usage=parsed.include_usage
            )
        )
        async with contextlib.aclosing(self._answer(response, graph, inputs)) as answer:
            async for kind, item in answer:
                if kind == "text":
                    await send(delta(item))
                    continue
                if isinstance(item, _HTTPError):
                    await send(error_body(str(item), item.error_type, item.code) | {"status": item.status})
                    return response
                result, rest = item
                if rest:
                    await send(delta(rest))
                finish_reason = result.finish_reason
                if result.tool_calls:  # sent whole once the synthesis is done: calls are decided, not streamed
                    calls = tool_call_delta(result.tool_calls)
                    await send(chunk(completion_id, model, created, calls, include_usage=parsed.include_usage))
                    finish_reason = "tool_calls"
                await send(chunk(completion_id, model, created, {}, finish_reason, include_usage=parsed.include_usage))
                if parsed.include_usage:
                    usage = result.usage.model_dump()
                    await send(chunk(completion_id, model, created, None, include_usage=True, usage=usage))
                await send("[DONE]")
                await response.write_eof()
        return response

    async def _answer(
        self, response: web.StreamResponse, graph: CompiledGraph, inputs: dict[str, Any]
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """Run the graph for an SSE response: ("text", a piece of the conclusion) as the synthesis streams, then
        ("done", (result, the rest of the conclusion not yet sent)) or ("error", the HTTP error).

        While the rounds run it writes their progress as SSE comment lines, and a keep-alive comment after every
        ``heartbeat_seconds`` of silence. Closing it (a client that left, a finished response) stops the run.
        """
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        runner = asyncio.create_task(_feed(graph, inputs, queue))
        conclusion = ConclusionStream()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.heartbeat_seconds):
                        kind, item = await queue.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if kind == "event":
                    if isinstance(item, SynthesisDelta):
                        text = conclusion.feed(item.content)
                        if text:
                            yield "text", text
                    elif isinstance(item, RoundStarted | RoundCompacted):
                        await response.write(f": pacore {_describe(item)}\n\n".encode())
                    continue
                if kind == "error":
                    yield "error", _classify(item)
                    return
                result: PaCoReResult = item
                yield "done", (result, conclusion.finish(result.answer))
                return
        finally:
            # On a client disconnect the handler is cancelled (or a write fails): stop the run with it.
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    # -- the Responses API (pacore_graph.server.responses: the conversion) ------------------------------

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Count one run in flight while the block lasts (shutdown waits for the count to reach 0)."""
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        data, parsed, graph, spec = await self._read(request, chat_body)
        refusal = self._refusal()  # counted once the body is read and valid, as chat completions are
        if refusal is not None:
            return refusal
        with self._counted():
            inputs = {"messages": parsed.messages, **parsed.tool_inputs()}
            if parsed.stream:
                return await self._responses_stream(request, data, graph, spec, inputs)
            try:
                result = await run_graph(graph, inputs)
            except Exception as exc:
                raise _classify(exc) from exc
            output = output_items(result, new_message_id())
            body = response_body(
                new_response_id(),
                data,
                int(time.time()),
                result=result,
                output=output,
                pacore=_pacore_meta(spec, result),
            )
            return web.json_response(body)

    async def _responses_stream(
        self,
        request: web.Request,
        data: dict[str, Any],
        graph: CompiledGraph,
        spec: GraphSpec,
        inputs: dict[str, Any],
    ) -> web.StreamResponse:
        """The Responses API's SSE events (see :class:`ResponseEvents`), with the chat stream's rules."""
        response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        events = ResponseEvents(data)

        async def send(batch: list[dict[str, Any]]) -> None:
            text = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in batch)
            await response.write(text.encode())

        await send(events.start())
        async with contextlib.aclosing(self._answer(response, graph, inputs)) as answer:
            async for kind, item in answer:
                if kind == "text":
                    await send(events.delta(item))
                elif isinstance(item, _HTTPError):
                    await send(events.fail(str(item), item.code))
                    return response
                else:
                    result, _ = item  # ResponseEvents keeps its own count of what was sent
                    await send(events.finish(result, _pacore_meta(spec, result)))
                    await response.write_eof()
        return response


async def _feed(graph: CompiledGraph, inputs: dict[str, Any], queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """Run ``graph``, putting its events, then ("output", PaCoReResult) or ("error", exception), on ``queue``."""
    try:
        async for item in stream_run(graph, inputs):
            queue.put_nowait(("output", item) if isinstance(item, PaCoReResult) else ("event", item))
    except Exception as exc:
        queue.put_nowait(("error", exc))


def _describe(event: RoundStarted | RoundCompacted) -> str:
    if isinstance(event, RoundStarted):
        what = "final synthesis" if event.final else f"round {event.round}"
        return f"{what} started: k={event.k} prompt_chars={event.prompt_chars}"
    return f"round {event.round} compacted: returned={event.returned} kept={event.kept}"


def _pacore_meta(spec: GraphSpec, result: PaCoReResult) -> dict[str, Any]:
    """The ``pacore`` field of a response: the graph, its schedule, the per-round rows (and votes)."""
    meta: dict[str, Any] = {
        "graph": spec.name,
        "schedule": list(spec.schedule.rounds),
        "rounds": [row.model_dump() for row in result.rounds],
    }
    if result.votes is not None:
        meta["votes"] = result.votes
    return meta
