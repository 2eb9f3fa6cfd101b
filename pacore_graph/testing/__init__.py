"""Test doubles for code built on pacore-graph: a real-HTTP fake OpenAI server and in-process backends.

* :class:`FakeOpenAIServer` is a real aiohttp server on 127.0.0.1 that speaks the OpenAI chat API (JSON and
  SSE), records every request, answers from a script, and injects faults (:class:`Fault`).
* :class:`FunctionBackend` answers from a Python function without any HTTP, for fast graph tests.
"""

from pacore_graph.testing.backends import BackendCall, FunctionBackend
from pacore_graph.testing.fake_server import (
    FakeOpenAIServer,
    FakeReply,
    FakeRequest,
    FakeServerError,
    Fault,
    fail_first,
    reply_sequence,
)

__all__ = [
    "BackendCall",
    "FakeOpenAIServer",
    "FakeReply",
    "FakeRequest",
    "FakeServerError",
    "Fault",
    "FunctionBackend",
    "fail_first",
    "reply_sequence",
]
