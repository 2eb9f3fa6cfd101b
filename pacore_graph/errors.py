"""The exceptions pacore-graph raises.

Every exception derives from one root, so callers can catch the whole family::

    PaCoReError                  root of everything this package raises
    ├── ConfigError              misuse: a bad schedule, problem, parameter or spec (fix the input)
    │   └── ScheduleError        a schedule that is empty, non-positive, non-integer or too large
    ├── RoundError               a round could not produce what the next step needs
    │   ├── EmptyRoundError      no trajectory of a round left a usable conclusion
    │   ├── QuorumError          too few trajectories of a round came back (see FailurePolicy)
    │   └── ContextBudgetError   a round's prompt would not fit the configured budget (nothing was sent)
    │       └── RequestTooLargeError  a round's request body would be over max_request_bytes (also a ConfigError)
    ├── GraphOutputError         a graph finished without the output a result is read from (answer, usage, ...)
    └── BackendError             talking to the model server failed
        ├── ConnectError         the server could not be reached (after retries)
        ├── UpstreamTimeoutError the server did not answer in time (after retries)
        ├── UpstreamError        the server answered with an HTTP error (carries status and body)
        └── ProtocolError        the server answered 200 with something that is not a chat completion

Each message says what went wrong and what to do next.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "ConnectError",
    "ContextBudgetError",
    "EmptyRoundError",
    "GraphOutputError",
    "PaCoReError",
    "ProtocolError",
    "QuorumError",
    "RequestTooLargeError",
    "RoundError",
    "ScheduleError",
    "UpstreamError",
    "UpstreamTimeoutError",
]

#: How much of an upstream error body is kept on the exception and shown in messages.
BODY_PREVIEW_CHARS = 500


class PaCoReError(Exception):
    """Root of every exception raised by pacore-graph."""


class ConfigError(PaCoReError, ValueError):
    """The caller asked for something invalid; the message names the value and the valid forms."""


class ScheduleError(ConfigError):
    """A round schedule that cannot be run."""


class RoundError(PaCoReError):
    """A round finished but left nothing the next step can use."""


class EmptyRoundError(RoundError):
    """Every trajectory of a round was dropped (empty, truncated or failed)."""


class QuorumError(RoundError):
    """Fewer trajectories of a round came back than the failure policy's quorum; names each failure."""


class ContextBudgetError(RoundError):
    """A prompt would exceed the configured budget; raised before anything is sent."""


class RequestTooLargeError(ContextBudgetError, ConfigError):
    """A round's request body (its messages as JSON, images included) would be over ``max_request_bytes``.

    Raised before any of the round's requests is sent. It is also a :class:`ConfigError`: the input is too large
    for the configured limit (the command line exits with 2).
    """


class GraphOutputError(PaCoReError):
    """A graph finished (or was interrupted) without ``answer``, ``finish_reason`` and ``usage`` in its output.

    Raised by :func:`~pacore_graph.run.run_graph`; the graph is wired wrong (its output schema lacks the
    PaCoRe output keys and no PaCoRe subgraph ran) or it stopped at an ``interrupt``.
    """


class BackendError(PaCoReError):
    """The model server could not give a usable completion."""


class ConnectError(BackendError):
    """The model server could not be reached."""


class UpstreamTimeoutError(BackendError):
    """The model server did not answer within the configured timeout."""


class UpstreamError(BackendError):
    """The model server answered with an HTTP error status.

    Attributes:
        status: the HTTP status code.
        body: the start of the response body (at most ``BODY_PREVIEW_CHARS`` characters).
    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body[:BODY_PREVIEW_CHARS]


class ProtocolError(BackendError):
    """The model server answered with a body that is not a valid chat completion."""
