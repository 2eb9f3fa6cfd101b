"""The retry policy of the HTTP client, on tenacity: what is retried, how long to wait, what is raised at the end.

* Retried: connection errors (any ``aiohttp.ClientError``), timeouts, and the statuses in :data:`RETRY_STATUSES`
  (429 and 5xx), which an attempt reports by raising :class:`RetryableStatus`. Anything else (a 4xx's
  ``UpstreamError``, a ``ProtocolError``, a cancellation) goes through at once.
* The wait (:class:`WaitRetryAfter`): a 429 or 503 with ``Retry-After`` waits that long, capped at
  ``backoff_max``; any other failure waits ``uniform(0, min(backoff_max, backoff_base * 2**retry))`` (full jitter).
* Giving up (after ``max_retries`` retries) raises the error the last failure stands for: ``ConnectError``,
  ``UpstreamTimeoutError`` (both naming the attempts made) or the status's ``UpstreamError``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_random_exponential

from pacore_graph.errors import ConnectError, UpstreamError, UpstreamTimeoutError

__all__ = [
    "RETRY_AFTER_STATUSES",
    "RETRY_STATUSES",
    "RetryableStatus",
    "WaitRetryAfter",
    "retry_after_seconds",
    "retrying",
]

#: HTTP statuses worth another attempt: rate limiting and server-side failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


#: Statuses whose ``Retry-After`` header is honoured (RFC 9110 gives it meaning on 503; RFC 6585 on 429).
RETRY_AFTER_STATUSES = frozenset({429, 503})


class RetryableStatus(Exception):
    """An attempt's HTTP answer in :data:`RETRY_STATUSES`: ``error`` is raised if it is the last attempt.

    ``retry_after`` is the answer's ``Retry-After`` in seconds, for the statuses in :data:`RETRY_AFTER_STATUSES`
    (else None). Internal to one request: never escapes the retry loop.
    """

    def __init__(self, error: UpstreamError, retry_after_header: str | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after_seconds(retry_after_header) if error.status in RETRY_AFTER_STATUSES else None


_RETRYABLE = (aiohttp.ClientError, TimeoutError, RetryableStatus)  # what another attempt may cure


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WaitRetryAfter(wait_base):
    """Wait what the server's ``Retry-After`` asked (capped at ``backoff_max``), else full-jitter backoff."""

    def __init__(self, backoff_base: float, backoff_max: float) -> None:
        self.backoff_max = backoff_max
        # tenacity's full jitter: uniform(0, min(max, multiplier * 2**(attempt_number - 1)))
        self.fallback = wait_random_exponential(multiplier=backoff_base, max=backoff_max)

    def __call__(self, retry_state: RetryCallState) -> float:
        """The seconds to sleep before the next attempt."""
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(failure, RetryableStatus) and failure.retry_after is not None:
            return min(failure.retry_after, self.backoff_max)
        return float(self.fallback(retry_state))


def _give_up(url: str, base_url: str) -> Callable[[RetryCallState], NoReturn]:
    """Raise the error the last failure stands for, once the attempts are used up."""

    def give_up(retry_state: RetryCallState) -> NoReturn:
        assert retry_state.outcome is not None  # tenacity gives up only after an attempt
        exc = retry_state.outcome.exception()
        attempts = retry_state.attempt_number
        if isinstance(exc, RetryableStatus):
            raise exc.error
        if isinstance(exc, TimeoutError):
            raise UpstreamTimeoutError(
                f"{url} did not answer in time after {attempts} attempts ({type(exc).__name__}); "
                "the server may be overloaded: raise the read timeout or lower the concurrency"
            ) from exc
        raise ConnectError(
            f"cannot reach the model server at {base_url} after {attempts} attempts "
            f"({type(exc).__name__}: {exc}); start one (e.g. `vllm serve MODEL`) and pass its URL "
            "with --base-url or PACORE_BASE_URL, or run `pacore engine up` for the embedded engine and leave "
            "--base-url out"
        ) from exc

    return give_up


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    url: str,
    base_url: str,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
) -> T:
    """Run ``attempt`` until it returns, retrying as the module docstring says; ``url`` names it in errors."""
    # The first attempt runs before tenacity is set up: nearly every request succeeds at once, and tenacity's
    # per-call setup (it inspects each strategy with inspect.iscoroutinefunction at every iteration) would sit
    # between a request's admission and its write. A failure is handed to tenacity as its first attempt, so the
    # attempts counted, the waits and the errors raised stay tenacity's.
    try:
        return await attempt()
    except _RETRYABLE as exc:
        first_failure: BaseException | None = exc

    async def replay_then_attempt() -> T:
        nonlocal first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        return await attempt()

    # A new AsyncRetrying per call: tenacity keeps a call's state on the object.
    policy = AsyncRetrying(
        retry=retry_if_exception_type(_RETRYABLE),
        stop=stop_after_attempt(max_retries + 1),
        wait=WaitRetryAfter(backoff_base, backoff_max),
        retry_error_callback=_give_up(url, base_url),
    )
    result: T = await policy(replay_then_attempt)
    return result
