"""A fake OpenAI-compatible chat completions server for tests: real HTTP on 127.0.0.1, scripted replies.

:class:`FakeOpenAIServer` is a real ``aiohttp.web`` server on a free port, so it exercises an HTTP client
end to end (connection pooling, timeouts, SSE parsing, retries). A *script* decides what each request gets:
a function of the :class:`FakeRequest` returning a :class:`FakeReply` (or one per choice, or an awaitable of
either). A reply can carry a :class:`Fault` to inject failures: HTTP errors, rate limits, connection resets,
malformed bodies, truncated or slow streams. Example::

    from pacore_graph.testing.fake_server import FakeOpenAIServer, FakeReply, FakeRequest, Fault, fail_first

    def script(request: FakeRequest) -> FakeReply:
        return FakeReply(content=f"echo: {request.last_user_content}", reasoning="let me think")

    async with FakeOpenAIServer(script, model="fake-model") as server:
        client = MyClient(base_url=server.base_url)       # "http://127.0.0.1:PORT/v1"
        await client.chat([{"role": "user", "content": "hi"}])
        assert server.requests[0].last_user_content == "hi"
        assert server.total_usage.completion_tokens == 5

    # A retry test: the first two requests get a 503, the third "ok".
    async with FakeOpenAIServer(fail_first(2, Fault.http_error(503))) as server:
        ...

    # From synchronous code (e.g. a CLI test that calls asyncio.run itself): the server runs on its own
    # event loop in a daemon thread until the block exits.
    with FakeOpenAIServer(script).in_thread() as server:
        run_cli(["--base-url", server.base_url])

If the script raises (or returns the wrong number of replies), the request gets a 500 and the exception is
re-raised, wrapped in a ``RuntimeError``, when the server's context exits, so a broken script fails the test
instead of looking like a flaky server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http
import inspect
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

from aiohttp import web

from pacore_graph.clients.base import TokenUsage
from pacore_graph.errors import ConfigError, PaCoReError
from pacore_graph.messages import last_user_text, non_text_parts, text_of

__all__ = [
    "FakeOpenAIServer",
    "FakeReply",
    "FakeRequest",
    "FakeServerError",
    "Fault",
    "FaultKind",
    "Script",
    "ScriptResult",
    "fail_first",
    "reply_sequence",
]

_HOST = "127.0.0.1"
#: Upper bound on a request body; vLLM has none, so keep it far above any test prompt.
_MAX_BODY_BYTES = 64 * 1024 * 1024
#: How long aiohttp waits for a handler on shutdown before cancelling it. Delays and drips end at once
#: on shutdown (see ``_pause``), so this only bounds a slow *async script*.
_SHUTDOWN_GRACE_SECONDS = 1.0
#: A slow-drip non-streaming body is sent in this many pieces, with the drip delay before each.
_DRIP_PIECES = 8
#: How long ``in_thread`` waits for the server thread to start and to stop.
_THREAD_TIMEOUT_SECONDS = 10.0

FaultKind = Literal[
    "http_error", "reset", "malformed_json", "html_error", "no_choices", "truncated_stream", "slow_drip"
]


class FakeServerError(PaCoReError, RuntimeError):
    """The fake server was misused (not started, started twice) or its script failed while serving."""


@dataclass(frozen=True)
class Fault:
    """A failure to inject instead of (or into) a normal response. Build one with the classmethods.

    Kinds:

    * ``http_error``: an HTTP error status with an OpenAI-style error JSON body, optionally a
      ``Retry-After`` header (:meth:`http_error`, :meth:`rate_limited`).
    * ``reset``: the connection is reset (TCP RST) without any response (:meth:`reset`).
    * ``malformed_json``: status 200 with a body that is not JSON; for a streaming request, an SSE event
      whose data is not JSON (:meth:`malformed_json`).
    * ``html_error``: an HTML error page, as a proxy in front of the server sends (:meth:`html_error`).
    * ``no_choices``: status 200 with ``"choices": []``; for a streaming request, a stream holding only
      ``[DONE]`` (:meth:`no_choices`).
    * ``truncated_stream``: the response stops early: a stream sends ``after_chunks`` chunks and never
      ``[DONE]``; a JSON body is cut in half (:meth:`truncated_stream`).
    * ``slow_drip``: a normal, complete response with ``chunk_delay`` seconds before every SSE chunk (or
      before each of a few pieces of a JSON body), for read-timeout tests (:meth:`slow_drip`).

    ``content: null`` needs no fault: use ``FakeReply(content=None)``.
    """

    kind: FaultKind
    status: int = 500
    message: str = "Internal Server Error"
    error_type: str = "server_error"
    code: str | int | None = None
    retry_after: float | None = None
    after_chunks: int = 2
    abort: bool = False
    chunk_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind in ("http_error", "html_error") and not 400 <= self.status <= 599:
            raise ConfigError(f"Fault status must be an HTTP error (400-599), got {self.status}")
        if self.after_chunks < 0 or self.chunk_delay < 0 or (self.retry_after or 0) < 0:
            raise ConfigError("Fault after_chunks, chunk_delay and retry_after must not be negative")

    @classmethod
    def http_error(
        cls,
        status: int = 500,
        message: str | None = None,
        *,
        error_type: str | None = None,
        code: str | int | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """An HTTP error with body ``{"error": {"message", "type", "param", "code"}}``.

        ``message`` defaults to the status phrase; ``error_type`` to ``invalid_request_error`` for 4xx and
        ``server_error`` for 5xx. ``retry_after`` (seconds) adds a ``Retry-After`` header.
        """
        return cls(
            "http_error",
            status=status,
            message=message if message is not None else _status_phrase(status),
            error_type=error_type or ("server_error" if status >= 500 else "invalid_request_error"),
            code=code,
            retry_after=retry_after,
        )

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1, message: str = "Rate limit reached") -> Fault:
        """A 429 with ``Retry-After: <retry_after>`` (omitted if None) and code ``rate_limit_exceeded``."""
        return cls.http_error(
            429, message, error_type="rate_limit_error", code="rate_limit_exceeded", retry_after=retry_after
        )

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection without a response; clients see a connection error."""
        return cls("reset")

    @classmethod
    def malformed_json(cls) -> Fault:
        """Status 200 whose body (or first SSE event) is not valid JSON."""
        return cls("malformed_json")

    @classmethod
    def html_error(cls, status: int = 502) -> Fault:
        """An HTML error page (``text/html``) with this status, like a reverse proxy's."""
        return cls("html_error", status=status, message=_status_phrase(status))

    @classmethod
    def no_choices(cls) -> Fault:
        """Status 200 with ``"choices": []`` (a stream: only ``[DONE]``)."""
        return cls("no_choices")

    @classmethod
    def truncated_stream(cls, after_chunks: int = 2, *, abort: bool = False) -> Fault:
        """Stop a stream after ``after_chunks`` SSE chunks, without ``[DONE]``.

        By default the HTTP body ends cleanly (the client just sees no ``[DONE]``); with ``abort=True`` the
        connection is closed mid-body, so the client's read fails. A non-streaming body is always cut in
        half and the connection closed.
        """
        return cls("truncated_stream", after_chunks=after_chunks, abort=abort)

    @classmethod
    def slow_drip(cls, chunk_delay: float = 0.05) -> Fault:
        """Send a complete response slowly: ``chunk_delay`` seconds before every chunk."""
        return cls("slow_drip", chunk_delay=chunk_delay)


@dataclass(frozen=True)
class FakeReply:
    """What the server answers for one choice.

    ``prompt_tokens``/``completion_tokens`` left as None are computed: the prompt counts whitespace-separated
    words across all message contents, the completion counts words of ``content`` plus ``reasoning`` (at
    least 1). ``reasoning`` goes under ``reasoning_key``: ``"reasoning"`` (current vLLM) or
    ``"reasoning_content"`` (older vLLM). ``delay`` is waited before anything is sent. ``tool_calls`` are the
    reply's tool calls, each ``{"name": ..., "arguments": {...} or "JSON text"}`` (an ``"id"`` is made up when
    left out), sent in OpenAI's form (``message.tool_calls``, or a stream's ``delta.tool_calls`` with the
    arguments in pieces); set ``finish_reason="tool_calls"`` with them, as a server does.
    """

    content: str | None = "ok"
    reasoning: str | None = None
    reasoning_key: str = "reasoning"
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay: float = 0.0
    fault: Fault | None = None
    tool_calls: Sequence[dict[str, Any]] = ()

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ConfigError(f"FakeReply delay must not be negative, got {self.delay}")
        if any(not isinstance(call, dict) or not isinstance(call.get("name"), str) for call in self.tool_calls):
            raise ConfigError("FakeReply tool_calls must be dicts with a 'name' and 'arguments'")

    def openai_tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls in OpenAI's ``message.tool_calls`` form."""
        return [
            {
                "id": call.get("id") or f"call_{i}_{call['name']}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call["arguments"]
                    if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments") or {}),
                },
            }
            for i, call in enumerate(self.tool_calls)
        ]


@dataclass(frozen=True)
class FakeRequest:
    """One chat request as the server received it.

    ``headers`` has lower-case names. ``index`` is the 0-based arrival order among recorded requests
    (requests rejected with 400/401 are not recorded).
    """

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    index: int
    peer: tuple[str, int] | None = None  # the client's (host, port): equal ports mean a reused connection

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages``."""
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages

    @property
    def n(self) -> int:
        """How many choices were asked for (``n``, default 1)."""
        n = self.body.get("n")
        return 1 if n is None else int(n)

    @property
    def stream(self) -> bool:
        """Whether the client asked for an SSE stream."""
        return bool(self.body.get("stream", False))

    @property
    def include_usage(self) -> bool:
        """Whether a stream should end with a usage chunk (``stream_options.include_usage``)."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @property
    def last_user_content(self) -> str | None:
        """Text of the last ``user`` message (text parts joined by newlines), or None if there is none."""
        return last_user_text(self.messages)


#: What a script returns: one reply (copied to every choice) or exactly one reply per choice.
ScriptResult: TypeAlias = FakeReply | Sequence[FakeReply]
#: Decides the answer to each request; may be a plain or an async function.
Script: TypeAlias = Callable[[FakeRequest], ScriptResult | Awaitable[ScriptResult]]


def reply_sequence(replies: Sequence[ScriptResult], *, then: ScriptResult | None = None) -> Script:
    """A script answering the i-th request (in arrival order) with ``replies[i]``.

    Later requests get ``then``; if ``then`` is None they are a script error (500, re-raised on exit).
    """
    replies = list(replies)

    def script(request: FakeRequest) -> ScriptResult:
        if request.index < len(replies):
            return replies[request.index]
        if then is None:
            raise IndexError(f"reply_sequence has {len(replies)} replies, but request #{request.index} came")
        return then

    return script


def fail_first(count: int, fault: Fault | None = None, *, then: ScriptResult | None = None) -> Script:
    """A script failing the first ``count`` requests with ``fault`` (default: a 503), then answering ``then``
    (default: ``FakeReply()``, content "ok")."""
    failing = FakeReply(fault=fault or Fault.http_error(503))
    return reply_sequence([failing] * count, then=then if then is not None else FakeReply())


def _default_script(request: FakeRequest) -> FakeReply:
    return FakeReply()


class _ShuttingDown(Exception):
    """Raised inside a handler when the server closes during a delay, to drop the connection at once."""


class FakeOpenAIServer:
    """An OpenAI-compatible chat completions server on ``127.0.0.1`` and a free port.

    Routes: ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``, ``GET /health``; with
    ``tokenize=True`` also vLLM's ``POST /tokenize`` (the prompt's whitespace words, as the usage counts them,
    plus ``media_tokens`` for each non-text part, as a vision model's processor counts an image; each body is
    kept in :attr:`tokenize_requests`). Without it, ``/tokenize`` is a 404, as on a server that is
    not vLLM. With ``api_key`` set, the ``/v1`` routes require ``Authorization: Bearer <api_key>`` (else 401).

    Use ``async with FakeOpenAIServer(...) as server`` on the current event loop, or
    ``with FakeOpenAIServer(...).in_thread() as server`` from synchronous code.

    Attributes:
        requests: every recorded chat request in arrival order, faulted ones included.
        tokenize_requests: the body of every ``/tokenize`` request, in arrival order.
        script_errors: exceptions the script raised; the first is re-raised when the context exits.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        model: str = "fake-model",
        max_model_len: int = 8192,
        api_key: str | None = None,
        tokenize: bool = False,
        media_tokens: int = 0,
    ) -> None:
        self.script: Script = script if script is not None else _default_script
        self.model = model
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.tokenize = tokenize
        self.media_tokens = media_tokens
        self.requests: list[FakeRequest] = []
        self.tokenize_requests: list[dict[str, Any]] = []
        self.script_errors: list[Exception] = []
        self._usage = TokenUsage()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; raises RuntimeError before :meth:`start`."""
        if self._port is None:
            raise FakeServerError("FakeOpenAIServer is not running; use `async with` or `in_thread()` first")
        return f"http://{_HOST}:{self._port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the OpenAI client's ``base_url``."""
        return f"{self.url}/v1"

    @property
    def total_usage(self) -> TokenUsage:
        """Sum of the usage the server reported in complete, successful responses.

        A stream reports usage only with ``stream_options.include_usage``; faulted responses report none
        (except ``slow_drip``, which is a complete response).
        """
        return self._usage

    async def start(self) -> None:
        """Bind a free port on 127.0.0.1 and start serving on the running event loop."""
        if self._runner is not None:
            raise FakeServerError("FakeOpenAIServer is already running")
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/health", self._handle_health)
        if self.tokenize:
            app.router.add_post("/tokenize", self._handle_tokenize)  # at the root, as vLLM serves it
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, _HOST, 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving: in-flight delays and drips end at once and their connections are dropped."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._closing is not None:
            self._closing.set()
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
        if exc_type is None:
            self._raise_script_error()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Run the server on its own event loop in a daemon thread for the duration of the block.

        On exit the server closes, the loop stops and the thread is joined.
        """
        started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
        started = concurrent.futures.Future()
        errors: list[Exception] = []
        thread = threading.Thread(
            target=self._thread_main, args=(started, errors), name="FakeOpenAIServer", daemon=True
        )
        thread.start()
        loop, stop = started.result(timeout=_THREAD_TIMEOUT_SECONDS)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=_THREAD_TIMEOUT_SECONDS)
            if thread.is_alive():
                raise FakeServerError("FakeOpenAIServer thread did not stop in time")
        if errors:
            raise errors[0]
        self._raise_script_error()

    def _thread_main(
        self,
        started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]],
        errors: list[Exception],
    ) -> None:
        # Errors are handed to the caller's thread rather than left to the thread excepthook.
        try:
            asyncio.run(self._serve_until_stopped(started))
        except Exception as exc:
            if started.done():
                errors.append(exc)
            else:
                started.set_exception(exc)

    async def _serve_until_stopped(
        self, started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    ) -> None:
        stop = asyncio.Event()
        await self.start()
        try:
            started.set_result((asyncio.get_running_loop(), stop))
            await stop.wait()
        finally:
            await self.close()

    def _raise_script_error(self) -> None:
        if self.script_errors:
            first = self.script_errors[0]
            raise FakeServerError(
                f"the FakeOpenAIServer script failed {len(self.script_errors)} time(s) (each such request "
                f"got a 500); first error: {first!r}"
            ) from first

    # -- handlers ----------------------------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _handle_models(self, request: web.Request) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        model = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "pacore-fake",
            "max_model_len": self.max_model_len,
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _handle_tokenize(self, request: web.Request) -> web.Response:
        body = await _read_chat_body(request)
        if isinstance(body, str):
            return _error_response(400, body, "invalid_request_error")
        self.tokenize_requests.append(body)
        count = sum(
            _words(text_of(message.get("content"))) + self.media_tokens * len(non_text_parts(message.get("content")))
            for message in body["messages"]
        )
        return web.json_response({"count": count, "max_model_len": self.max_model_len, "tokens": []})

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        body = await _read_chat_body(request)
        if isinstance(body, str):
            return _error_response(400, body, "invalid_request_error")
        headers = {name.lower(): value for name, value in request.headers.items()}
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = (str(peername[0]), int(peername[1])) if peername else None
        fake = FakeRequest(path=request.path, headers=headers, body=body, index=len(self.requests), peer=peer)
        self.requests.append(fake)
        try:
            replies = await self._run_script(fake)
        except Exception as exc:
            self.script_errors.append(exc)
            return _error_response(500, f"fake server script raised {exc!r}", "server_error")
        try:
            return await self._respond(request, fake, replies)
        except (_ShuttingDown, ConnectionError):
            # Server closing, or the client hung up mid-response (e.g. its read timeout): not a server error.
            _drop_connection(request, reset=True)
            return web.Response()  # never reaches the client: the connection is gone

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error_response(401, "Invalid or missing API key", "invalid_request_error", code="invalid_api_key")

    async def _run_script(self, fake: FakeRequest) -> list[FakeReply]:
        result: object = self.script(fake)
        if inspect.isawaitable(result):
            result = await result
        replies: list[Any] = [result] if isinstance(result, FakeReply) else []
        if isinstance(result, Sequence) and not isinstance(result, str):
            replies = list(result)
        if not replies or not all(isinstance(reply, FakeReply) for reply in replies):
            raise ConfigError(f"script must return a FakeReply or a list of them, got {result!r}")
        if len(replies) == 1:
            return replies * fake.n
        if len(replies) != fake.n:
            raise ConfigError(f"script returned {len(replies)} replies for a request with n={fake.n}")
        return replies

    async def _respond(self, request: web.Request, fake: FakeRequest, replies: list[FakeReply]) -> web.StreamResponse:
        await self._pause(max(reply.delay for reply in replies))
        fault = next((reply.fault for reply in replies if reply.fault is not None), None)
        if fault is None or fault.kind == "slow_drip":
            drip = fault.chunk_delay if fault is not None else 0.0
            if fake.stream:
                return await self._send_stream(request, fake, replies, drip=drip)
            return await self._send_json(request, fake, replies, drip=drip)
        return await self._send_fault(request, fake, replies, fault)

    async def _send_fault(
        self, request: web.Request, fake: FakeRequest, replies: list[FakeReply], fault: Fault
    ) -> web.StreamResponse:
        if fault.kind == "http_error":
            return _error_response(fault.status, fault.message, fault.error_type, fault.code, fault.retry_after)
        if fault.kind == "html_error":
            title = f"{fault.status} {fault.message}"
            page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><hr>nginx</body></html>\n"
            return web.Response(status=fault.status, text=page, content_type="text/html")
        if fault.kind == "reset":
            _drop_connection(request, reset=True)
            return web.Response()  # never reaches the client: the connection is gone
        if fault.kind == "malformed_json":
            broken = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess'
            if fake.stream:
                return await self._send_events(request, [broken, "[DONE]"])
            return web.Response(status=200, text=broken, content_type="application/json")
        if fault.kind == "no_choices":
            if fake.stream:
                return await self._send_events(request, ["[DONE]"])
            return web.json_response({**self._envelope(fake, "chat.completion"), "choices": []})
        if fault.kind == "truncated_stream":
            if fake.stream:
                return await self._send_stream(request, fake, replies, cut_after=fault.after_chunks, abort=fault.abort)
            return await self._send_json(request, fake, replies, truncate=True)
        raise AssertionError(f"unhandled fault kind {fault.kind!r}")  # slow_drip is handled by the caller

    # -- response bodies ---------------------------------------------------------------------------

    async def _send_json(
        self,
        request: web.Request,
        fake: FakeRequest,
        replies: list[FakeReply],
        *,
        drip: float = 0.0,
        truncate: bool = False,
    ) -> web.StreamResponse:
        usage = _usage(fake, replies)
        choices = [
            {"index": i, "message": _message(reply), "finish_reason": reply.finish_reason}
            for i, reply in enumerate(replies)
        ]
        payload = {**self._envelope(fake, "chat.completion"), "choices": choices, "usage": _usage_json(usage)}
        body = json.dumps(payload).encode()
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        if truncate:
            await self._write_pieces(response, [body[: len(body) // 2]], finish=False)
            _drop_connection(request, reset=False)
        else:
            pieces = _split_bytes(body, _DRIP_PIECES if drip > 0 else 1)
            await self._write_pieces(response, pieces, drip=drip, usage=usage)
        return response

    async def _send_stream(
        self,
        request: web.Request,
        fake: FakeRequest,
        replies: list[FakeReply],
        *,
        drip: float = 0.0,
        cut_after: int | None = None,
        abort: bool = False,
    ) -> web.StreamResponse:
        usage = _usage(fake, replies)
        chunks = self._stream_chunks(fake, replies, usage)
        if cut_after is None:
            reported = usage if fake.include_usage else None
            return await self._send_events(request, [*chunks, "[DONE]"], drip=drip, usage=reported)
        response = await self._send_events(request, chunks[:cut_after], drip=drip, finish=not abort)
        if abort:
            _drop_connection(request, reset=False)
        return response

    async def _send_events(
        self,
        request: web.Request,
        events: Sequence[dict[str, Any] | str],
        *,
        drip: float = 0.0,
        finish: bool = True,
        usage: TokenUsage | None = None,
    ) -> web.StreamResponse:
        """Write ``events`` as SSE ``data:`` lines (dicts as JSON, strings verbatim)."""
        response = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        pieces = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]
        await self._write_pieces(response, pieces, drip=drip, finish=finish, usage=usage)
        return response

    async def _write_pieces(
        self,
        response: web.StreamResponse,
        pieces: Sequence[bytes],
        *,
        drip: float = 0.0,
        finish: bool = True,
        usage: TokenUsage | None = None,
    ) -> None:
        """Write the body pieces (``drip`` seconds before each), adding ``usage`` to the total on the way."""
        for i, piece in enumerate(pieces):
            await self._pause(drip)
            if usage is not None and i == len(pieces) - 1:
                # Counted before the last write, not after: once it is out, the client may check the total
                # before this coroutine runs again.
                self._usage += usage
            await response.write(piece)
        if finish:
            await response.write_eof()

    def _stream_chunks(self, fake: FakeRequest, replies: list[FakeReply], usage: TokenUsage) -> list[dict[str, Any]]:
        # Choices are interleaved round-robin, one choice per chunk, as vLLM does for n > 1.
        per_choice = [_deltas(reply) for reply in replies]
        envelope = self._envelope(fake, "chat.completion.chunk")
        extra: dict[str, Any] = {"usage": None} if fake.include_usage else {}
        chunks: list[dict[str, Any]] = []
        for step in zip_longest(*per_choice):
            for i, item in enumerate(step):
                if item is not None:
                    delta, finish = item
                    choice = {"index": i, "delta": delta, "finish_reason": finish}
                    chunks.append({**envelope, "choices": [choice], **extra})
        if fake.include_usage:
            chunks.append({**envelope, "choices": [], "usage": _usage_json(usage)})
        return chunks

    def _envelope(self, fake: FakeRequest, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{fake.index}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
        }

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise ``_ShuttingDown`` at once if the server closes meanwhile."""
        if seconds <= 0 or self._closing is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        if self._closing.is_set():
            raise _ShuttingDown


# -- helpers -----------------------------------------------------------------------------------------


async def _read_chat_body(request: web.Request) -> dict[str, Any] | str:
    """The parsed body, or an error message for a 400."""
    try:
        body = json.loads(await request.read())
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return "request body is not valid JSON"
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty list of message objects"
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        return "'n' must be a positive integer"
    return body


def _error_response(
    status: int,
    message: str,
    error_type: str,
    code: str | int | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    """Close the client connection now: a TCP reset (RST), or a plain close mid-response (FIN)."""
    transport = request.transport
    if transport is None:
        return
    if not reset:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout makes close() send RST; best effort where the struct differs.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _usage(fake: FakeRequest, replies: list[FakeReply]) -> TokenUsage:
    """Usage of one request: the prompt counted once, completions summed over choices."""
    prompt = next((reply.prompt_tokens for reply in replies if reply.prompt_tokens is not None), None)
    if prompt is None:
        prompt = sum(_words(text_of(message.get("content"))) for message in fake.messages)
    completion = sum(
        reply.completion_tokens
        if reply.completion_tokens is not None
        else max(1, _words(reply.content) + _words(reply.reasoning))
        for reply in replies
    )
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion)


def _usage_json(usage: TokenUsage) -> dict[str, int]:
    total = usage.prompt_tokens + usage.completion_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
    }


def _message(reply: FakeReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning is not None:
        message[reply.reasoning_key] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = reply.openai_tool_calls()
    return message


def _deltas(reply: FakeReply) -> list[tuple[dict[str, Any], str | None]]:
    """One choice's stream: role, reasoning pieces, content pieces, then an empty delta with finish_reason."""
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({reply.reasoning_key: piece}, None) for piece in _pieces(reply.reasoning)]
    deltas += [({"content": piece}, None) for piece in _pieces(reply.content)]
    for index, call in enumerate(reply.openai_tool_calls()):
        # As vLLM and OpenAI stream a call: id and name first, then the arguments in pieces.
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
        deltas.append(({"tool_calls": [head]}, None))
        for start in range(0, len(arguments), 8):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
            deltas.append(({"tool_calls": [piece]}, None))
    deltas.append(({}, reply.finish_reason))
    return deltas


def _pieces(text: str | None) -> list[str]:
    """Split text into word-sized pieces that keep their trailing whitespace, so they concatenate exactly."""
    if not text:
        return []
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def _split_bytes(data: bytes, parts: int) -> list[bytes]:
    size = max(1, -(-len(data) // parts))  # ceiling division
    return [data[start : start + size] for start in range(0, len(data), size)] or [data]


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
