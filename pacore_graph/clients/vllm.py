"""``VLLMClient``: an async client for vLLM's (or any) OpenAI-compatible chat completions API.

One pooled aiohttp ``ClientSession`` per client (keep-alive), a window of sequences in flight (adapted to the
server's load when it exports vLLM's ``/metrics``; see :mod:`pacore_graph.clients.server_load`), requests queued
by priority when the window is full (:mod:`pacore_graph.clients.limiter`), connect and read timeouts, and retries
(:mod:`pacore_graph.clients.retry`, on tenacity) on connection errors, timeouts, 429 and 5xx.

Failure rules; every request goes through :meth:`VLLMClient._attempt`, retried by
:func:`~pacore_graph.clients.retry.retrying`:

* connection errors, timeouts, 429, 500, 502, 503 and 504 are retried up to ``max_retries`` times;
  a 429 or 503 with ``Retry-After`` waits that long (capped at ``backoff_max``), otherwise the wait is
  ``uniform(0, min(backoff_max, backoff_base * 2**retry))``;
* any other HTTP error fails at once with :class:`~pacore_graph.errors.UpstreamError` (status and body);
* a 200 whose body is not a chat completion fails at once with :class:`~pacore_graph.errors.ProtocolError`.

:meth:`VLLMClient.stream_chat` (SSE) follows the same rules until the stream opens (a 200 arrived); from then on,
before any chunk can reach the caller, nothing is retried: a failure is raised at once (``ProtocolError`` for a cut
or malformed stream, ``UpstreamTimeoutError`` for a stall, ``UpstreamError`` for an error event), since text
already handed to the caller cannot be unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from pacore_graph.clients.base import ChatMessage, ChatResult, Completion, SamplingParams, TokenUsage, ToolCall
from pacore_graph.clients.limiter import SequenceLimiter
from pacore_graph.clients.retry import RETRY_STATUSES, RetryableStatus, retrying
from pacore_graph.clients.server_load import AdaptiveWindow, parse_server_load
from pacore_graph.clients.streaming import ChatChunk
from pacore_graph.errors import (
    BODY_PREVIEW_CHARS,
    ConfigError,
    ProtocolError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = ["VLLMClient"]

T = TypeVar("T")
_METRICS_MAX_BYTES = 4 << 20  # a vLLM /metrics page is ~50 KB; read no more than this of any page
_RAMP_INTERVAL = 0.05  # seconds between readings while the window is still doubling towards the server's size
_RAMP_READINGS = 8  # the first readings come at that pace too, while a burst of requests may still be arriving
_BURST_SETTLE = 0.01  # seconds from a request queueing in a growing window to the reading it brings forward
#: The longest line of an upstream SSE stream, and so the largest event, the client reads (aiohttp's own limit,
#: twice its read buffer, is 128 KiB); a longer one fails the stream with ``ProtocolError``.
MAX_SSE_LINE_BYTES = 16 << 20


class VLLMClient:
    """Async OpenAI-compatible chat client; implements :class:`~pacore_graph.clients.base.ChatBackend`.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name; when ``None`` the first model of ``GET /models`` is used.
        api_key: sent as a bearer token; never logged or shown in ``repr``.
        max_concurrency: at most this many sequences in flight (a request of ``n`` choices counts ``n``); with
            ``adaptive_concurrency``, the starting window instead.
        adaptive_concurrency: follow the server's load: when it serves vLLM's ``/metrics`` (polled every
            ``metrics_interval`` seconds while requests are in flight), the window grows while the server has
            room and shrinks when the server queues, up to ``max_adaptive_concurrency``. A server without those
            metrics keeps the window at ``max_concurrency``.
        connect_timeout, read_timeout: seconds to connect, and to wait between bytes of a response.
        max_retries: retries after the first attempt on retryable failures.
        backoff_base, backoff_max: the backoff schedule in seconds (see the module docstring).
        default_max_tokens: the cap a graph's requests get when their sampling sets no ``max_tokens``
            (:mod:`pacore_graph.budget`; the embedded engine's client sets it); None: what fits the context.

    Use it as ``async with VLLMClient(url) as client:`` or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 64,
        adaptive_concurrency: bool = True,
        max_adaptive_concurrency: int = 1024,
        metrics_interval: float = 0.5,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        default_max_tokens: int | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid base URL {base_url!r}: use http://HOST:PORT/v1")
        if max_concurrency < 1 or max_retries < 0:
            raise ConfigError("max_concurrency must be at least 1 and max_retries at least 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.max_concurrency = max_concurrency
        #: the window of sequences in flight; ``limiter.limit`` is its current size
        self.limiter = SequenceLimiter(max_concurrency)
        self._window = (
            AdaptiveWindow(
                max_concurrency,
                floor=min(max_concurrency, 8),  # a co-tenant's queue must not squeeze this client to nothing
                ceiling=max(max_concurrency, max_adaptive_concurrency),
                jump_start=True,
                headroom=0.25,
            )
            if adaptive_concurrency
            else None
        )
        self.metrics_interval = metrics_interval
        self._watcher: asyncio.Task[None] | None = None
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tokenize_missing = False  # the server has no /tokenize: do not ask again
        self.default_max_tokens = default_max_tokens
        self._context: int | None = None  # the server's max_model_len, once asked
        self._context_asked = False
        self._context_lookup: asyncio.Task[int | None] | None = None  # the one lookup concurrent first callers share

    def __repr__(self) -> str:
        return f"VLLMClient(base_url={self.base_url!r}, model={self.model!r})"

    async def __aenter__(self) -> VLLMClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def adaptive(self) -> bool:
        """Whether the window still follows the server's load (False once the server showed no vLLM metrics)."""
        return self._window is not None

    async def aclose(self) -> None:
        """Stop following the server's load and close the pooled connections."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher.get_loop() is asyncio.get_running_loop():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        elif watcher is not None:  # started on another loop (a sync bridge's): stop it there
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                watcher.get_loop().call_soon_threadsafe(watcher.cancel)
        if self._session is not None:
            await self._session.close()
        self._session = None

    def _metrics_session(self) -> aiohttp.ClientSession:
        """A session of its own for ``/metrics`` readings, so a reading never takes a request's pooled connection.

        The watcher owns it (``async with``) on the watcher's own loop, so it is closed whenever the watcher ends:
        cancelled by :meth:`aclose`, or by the end of a sync bridge's loop the client was used on.
        """
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=self._timeout, headers=headers)

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be made inside the running event loop.
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._session = aiohttp.ClientSession(
                # No pool cap of its own: the window bounds the requests, and a second, fixed cap would hide it.
                connector=aiohttp.TCPConnector(limit=0),
                timeout=self._timeout,
                headers=headers,
            )
        return self._session

    async def list_models(self) -> list[str]:
        """The model names the server serves (``GET /models``)."""
        data = await self._request("GET", "/models", None, sequences=0)  # no sequence: no room in the window
        try:
            return [str(item["id"]) for item in data["data"]]
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"{self.base_url}/models did not return a model list: {_preview(data)}") from exc

    async def resolve_model(self) -> str:
        """The model to use: the configured one, or the server's first."""
        if self.model is None:
            models = await self.list_models()
            if not models:
                raise ConfigError(f"the server at {self.base_url} serves no model; pass a model name (--model)")
            self.model = models[0]
        return self.model

    async def chat(self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1) -> ChatResult:
        """Sample ``n`` completions of ``messages`` with one request."""
        body = await self.request_body(messages, params, n=n)
        data = await self._request("POST", "/chat/completions", body, sequences=n)
        return parse_chat_completion(data, n=n)

    async def context_length(self) -> int | None:
        """The served model's context (``max_model_len`` of its ``GET /models`` entry, as vLLM reports), or None.

        Implements :class:`~pacore_graph.budget.ContextReportingBackend`. Asked once; a server that does not say,
        or any failure, gives None (the graph then does not fit to a context it does not know). Runs that start
        together share the one lookup: none goes on without the answer, and none waits behind the others.
        """
        if self._context_asked:
            return self._context
        lookup = self._context_lookup
        if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
            lookup = self._context_lookup = asyncio.ensure_future(self._ask_context())
        try:
            self._context = await asyncio.shield(lookup)  # a cancelled caller does not cancel the others' lookup
        except BaseException:
            if lookup.done():
                self._context_lookup = None  # it failed (the model could not be resolved): the next call asks again
            raise
        self._context_asked = True
        return self._context

    async def _ask_context(self) -> int | None:
        model = await self.resolve_model()
        try:  # one attempt, as for /tokenize: a failure here only means the context stays unknown
            async with self._get_session().get(self.base_url + "/models") as response:
                data = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            data = None
        entries = data.get("data") if isinstance(data, dict) else None
        for item in entries if isinstance(entries, list) else []:
            length = item.get("max_model_len") if isinstance(item, dict) else None
            if item.get("id") == model and isinstance(length, int) and not isinstance(length, bool) and length > 0:
                return length
        return None

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's token count from vLLM's ``POST /tokenize`` (chat template applied), or None.

        Implements :class:`~pacore_graph.budget.TokenCountingBackend`. None when the server cannot tell (no such
        endpoint, which is remembered, or any failure): the caller then estimates. One attempt, no retries.
        """
        if self._tokenize_missing:
            return None
        body = {
            "model": await self.resolve_model(),
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": True,
        }
        url = self.base_url.removesuffix("/v1") + "/tokenize"  # vLLM serves it at the root, not under /v1
        try:
            async with self._get_session().post(url, json=body) as response:
                if response.status != 200:
                    self._tokenize_missing = response.status in (404, 405, 501)
                    return None
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        count = data.get("count") if isinstance(data, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def stream_chat(self, messages: Sequence[ChatMessage], params: SamplingParams) -> AsyncIterator[ChatChunk]:
        """Stream one completion of ``messages`` (SSE, ``stream_options.include_usage``), chunk by chunk.

        Implements :class:`~pacore_graph.clients.streaming.StreamingChatBackend`. The last chunks carry the
        finish reason and the usage; a stream that ends without ``[DONE]`` raises ``ProtocolError``.
        """
        body = await self.request_body(messages, params)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        url = self.base_url + "/chat/completions"

        async def open_stream() -> tuple[AsyncExitStack, aiohttp.ClientResponse]:
            stack = AsyncExitStack()
            try:
                response = await stack.enter_async_context(self._attempt("POST", url, body, 1))
            except BaseException:
                await stack.aclose()
                raise
            return stack, response

        # Only the opening (up to the 200) is retried, so a stream is never retried once its first chunk may have
        # been yielded: text handed to the caller cannot be unsent. Every failure after the 200 is raised at once.
        stack, response = await self._retrying(url, open_stream)
        async with stack:
            try:
                async for chunk in _read_sse(response, url):
                    yield chunk
            except TimeoutError as exc:
                raise UpstreamTimeoutError(
                    f"the stream from {url} stalled ({type(exc).__name__}); raise the read timeout"
                ) from exc
            except aiohttp.ClientError as exc:
                raise ProtocolError(
                    f"the stream from {url} was cut off ({type(exc).__name__}: {exc}); see the server's logs"
                ) from exc

    async def request_body(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, n: int = 1
    ) -> dict[str, Any]:
        """The JSON body of a chat completions request (``extra`` fields merged last)."""
        body: dict[str, Any] = {
            "model": await self.resolve_model(),
            "messages": [dict(m) for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if n != 1:
            body["n"] = n
        for key in ("max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty"):
            value = getattr(params, key)
            if value is not None:
                body[key] = value
        body.update(params.extra)
        return body

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None, sequences: int = 1) -> Any:
        url = self.base_url + path

        async def send() -> Any:
            async with self._attempt(method, url, body, sequences) as response:
                text = await response.text(errors="replace")  # a body cut short is a ClientError: retried
            return _decode(text, url)

        return await self._retrying(url, send)

    async def _retrying(self, url: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` under this client's retry policy (:mod:`pacore_graph.clients.retry`)."""
        self._follow_load()
        return await retrying(
            attempt,
            url=url,
            base_url=self.base_url,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
        )

    @asynccontextmanager
    async def _attempt(
        self, method: str, url: str, body: Mapping[str, Any] | None, sequences: int
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One attempt: hold the window, send, and yield the response if it is a 200.

        Any other status raises: :class:`~pacore_graph.clients.retry.RetryableStatus` (with its ``Retry-After``)
        for a status worth retrying, else ``UpstreamError``. The window is held only while the attempt lasts,
        not during the wait before the next one.
        """
        async with self.limiter.hold(sequences), self._get_session().request(method, url, json=body) as response:
            if response.status != 200:
                text = await response.text(errors="replace")
                error = UpstreamError(_status_message(url, response.status, text), status=response.status, body=text)
                if response.status in RETRY_STATUSES:
                    raise RetryableStatus(error, response.headers.get("Retry-After"))
                raise error
            yield response

    def _follow_load(self) -> None:
        """Start polling the server's load, once, from inside the running loop."""
        if self._window is None:
            return
        if self._watcher is None or self._watcher.get_loop() is not asyncio.get_running_loop():
            self._watcher = asyncio.create_task(self._watch_load(self._window))

    async def _watch_load(self, window: AdaptiveWindow) -> None:
        """Resize the window from ``/metrics`` while there is work.

        Only a server that never showed vLLM's gauges (no such page, or a page without them) turns this off, and
        the window then goes back to ``max_concurrency``. Any other failure (a 5xx while a proxy restarts, a
        timeout, an odd page) is one missed reading.
        """
        url = self.base_url.removesuffix("/v1") + "/metrics"  # vLLM serves it at the root, not under /v1
        timeout = aiohttp.ClientTimeout(total=max(1.0, 4 * self.metrics_interval))
        demand = asyncio.Event()  # set when a request has to wait for room in the window
        self.limiter.on_queue.append(demand.set)
        try:
            async with self._metrics_session() as metrics:
                await self._follow_readings(window, url, timeout, demand, metrics)
        finally:
            self.limiter.on_queue.remove(demand.set)

    async def _follow_readings(
        self,
        window: AdaptiveWindow,
        url: str,
        page_timeout: aiohttp.ClientTimeout,
        demand: asyncio.Event,
        metrics: aiohttp.ClientSession,
    ) -> None:
        """``_watch_load``'s loop: read the load, resize the window, wait for the next reading."""
        seen_vllm = False
        interval = 0.0  # the first reading at once: the window should not wait to reach the server's size
        readings = 0
        while self._watcher is asyncio.current_task():  # a client reused on another loop has a new watcher
            if window.slow_start and interval > 0:
                # Still finding the server's size: a request that has to wait for room brings the next reading
                # forward (after a moment, so the rest of its burst has arrived).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(demand.wait(), interval)
                if demand.is_set():
                    await asyncio.sleep(_BURST_SETTLE)
            else:
                await asyncio.sleep(interval)
            demand.clear()
            if self._watcher is not asyncio.current_task():
                return  # closed (or reused on another loop) while this one slept
            interval = self.metrics_interval
            if self.limiter.in_flight == 0 and self.limiter.queued == 0:
                if not readings:
                    interval = _BURST_SETTLE  # the first request is on its way: read as soon as it is
                continue
            try:
                async with metrics.get(url, timeout=page_timeout) as response:
                    status = response.status
                    page = (await response.content.read(_METRICS_MAX_BYTES)).decode("utf-8", "replace")
            except (aiohttp.ClientError, TimeoutError):
                continue  # the requests themselves report connection trouble
            load = parse_server_load(page) if status == 200 else None
            if load is None:
                if not seen_vllm and (status in (404, 405) or status == 200):
                    self._window = None  # not a vLLM server: a fixed window
                    self.limiter.limit = self.max_concurrency
                    return
                continue
            seen_vllm = True
            waiting = self.limiter.queued + self.limiter.backlog
            before = self.limiter.limit
            # Behind a balancer (it follows this window's size) the window must show this server's own room.
            alone = not self.limiter.on_limit_change
            self.limiter.limit = window.update(load, self.limiter.in_flight, waiting, alone=alone)
            readings += 1
            if window.slow_start and (self.limiter.limit > before or readings < _RAMP_READINGS):
                # Still finding the server's size (and the demand may still be arriving): read again soon.
                interval = min(self.metrics_interval, _RAMP_INTERVAL)


def _preview(data: Any) -> str:
    return repr(data)[:BODY_PREVIEW_CHARS]


def _decode(text: str, url: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{url} answered 200 with a body that is not JSON: {text[:200]!r}") from exc


def _status_message(url: str, status: int, text: str) -> str:
    detail = text.strip()
    try:
        error = json.loads(text).get("error")
        detail = str(error.get("message", error)) if isinstance(error, dict) else str(error or detail)
    except (json.JSONDecodeError, AttributeError):
        pass
    hint = {
        400: "the request was rejected; check the model name, the parameters and the prompt length",
        401: "the server wants an API key: pass --api-key or set PACORE_API_KEY",
        403: "the API key was refused",
        404: "check the base URL (it usually ends in /v1) and the model name (--model)",
    }.get(status, "the server failed; see its logs")
    return f"{url} answered HTTP {status}: {detail[:300]} ({hint})"


async def _read_sse(
    response: aiohttp.ClientResponse, url: str, max_line: int = MAX_SSE_LINE_BYTES
) -> AsyncIterator[ChatChunk]:
    """Parse a server-sent event stream of chat completion chunks, up to ``data: [DONE]``."""
    data: list[str] = []
    while True:
        try:
            raw = await response.content.readline(max_line_length=max_line)
            if not raw:
                break
        except aiohttp.http_exceptions.HttpProcessingError as exc:  # e.g. LineTooLong: not a ClientError
            raise ProtocolError(
                f"the stream from {url} sent an unreadable event ({exc.message}); see the server"
            ) from exc
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:  # comments (":"), other fields, and blank lines between events
            continue
        payload, data = "\n".join(data), []
        if payload.strip() == "[DONE]":
            return
        chunk = _parse_chunk(payload, url)
        if chunk is not None:
            yield chunk
    raise ProtocolError(f"the stream from {url} ended before [DONE]; the server may have crashed mid-answer")


def _parse_chunk(payload: str, url: str) -> ChatChunk | None:
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{url} sent a stream event that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(event, dict):
        raise ProtocolError(f"{url} sent a stream event that is not an object: {payload[:200]!r}")
    if "error" in event:
        error = event["error"]
        detail = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        raise UpstreamError(
            f"{url} failed mid-stream: {detail[:300]}", status=code if isinstance(code, int) else 500, body=payload
        )
    usage_data = event.get("usage")
    usage = None
    if isinstance(usage_data, dict):
        usage = TokenUsage(
            prompt_tokens=int(usage_data.get("prompt_tokens") or 0),
            completion_tokens=int(usage_data.get("completion_tokens") or 0),
        )
    choices = event.get("choices") or []
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = {}
    content = delta.get("content")
    reasoning = delta.get("reasoning") or delta.get("reasoning_content")
    finish = choice.get("finish_reason")
    calls = delta.get("tool_calls")
    calls = [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    if not (content or reasoning or finish or usage or calls):
        return None
    return ChatChunk(
        content=content if isinstance(content, str) else "",
        reasoning=reasoning if isinstance(reasoning, str) else "",
        finish_reason=finish if isinstance(finish, str) else None,
        usage=usage,
        tool_calls=calls,
    )


def _tool_calls(calls: Any, choice: Any) -> list[ToolCall]:
    """A message's ``tool_calls`` (OpenAI form), or ``ProtocolError`` when they are not in that form."""
    if not calls:
        return []
    try:
        return [ToolCall.from_openai(call) for call in calls]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ProtocolError(f"a choice's tool_calls are not in OpenAI's form: {_preview(choice)}") from exc


def parse_chat_completion(data: Any, *, n: int = 1) -> ChatResult:
    """Read an OpenAI chat completion body into a :class:`ChatResult`, or raise ``ProtocolError``."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ProtocolError(f"the server's answer is not a chat completion: {_preview(data)}")
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    if len(choices) != n:
        raise ProtocolError(f"asked for {n} completion(s) but the server returned {len(choices)}: {_preview(data)}")
    completions = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise ProtocolError(f"a choice has no message: {_preview(choice)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ProtocolError(f"a choice's content is not text: {_preview(choice)}")
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        completions.append(
            Completion(
                content=content or "",
                reasoning=reasoning if isinstance(reasoning, str) else None,
                finish_reason=choice.get("finish_reason") or "unknown",
                tool_calls=_tool_calls(message.get("tool_calls"), choice),
            )
        )
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return ChatResult(
        completions=completions,
        usage=TokenUsage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
        model=data.get("model"),
    )
