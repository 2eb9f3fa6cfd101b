"""The OpenAI chat completions wire format, as the proxy reads and writes it.

Nothing is ignored silently: what happens to each OpenAI parameter (honoured in which rounds, accepted without
effect, or refused with a 400 that names it) is the table in :mod:`pacore_graph.server.params`, and a parameter
not in it is refused as unknown. The ``pacore`` object (``extra_body={"pacore": {...}}`` in the ``openai``
client) is strict too: its unknown keys are errors, since a typo there would silently change nothing.
``tools``, ``tool_choice`` and ``parallel_tool_calls`` are checked here (a malformed tool schema, or a
``tool_choice`` naming an unknown tool, is a 400 before anything is sent upstream) and sent with every request of
the run (:mod:`pacore_graph.tool_calls`); an answer that calls tools has ``message.tool_calls`` and
``finish_reason: "tool_calls"``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pacore_graph.errors import ConfigError
from pacore_graph.overrides import Overrides
from pacore_graph.schedule import PRESETS
from pacore_graph.server.params import CHAT_PARAMETERS, check_parameters
from pacore_graph.structured import ResponseFormat
from pacore_graph.tool_calls import tool_options

__all__ = [
    "ChatCompletionRequest",
    "PaCoReOptions",
    "chunk",
    "completion_body",
    "error_body",
    "parse_request",
    "tool_call_delta",
    "usage_body",
]


class PaCoReOptions(Overrides):
    """The ``pacore`` object of a request: the core's overrides (:class:`~pacore_graph.overrides.Overrides`:
    the schedule, sampling of every round, ``truncated``, ``max_model_len``, the quorum, ``n_batch``, ...).

    Unset fields keep the graph spec's settings (or the request's top-level OpenAI sampling fields). Values are
    checked by the graph's settings model when applied, as for the command line and Python, with the same
    messages.
    """


class ChatCompletionRequest(BaseModel):
    """The parts of an OpenAI chat completions request the proxy uses; :func:`parse_request` refuses the rest
    (see :mod:`pacore_graph.server.params`)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # Ranges are the settings model's, checked when the overrides are applied (see overrides()).
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    n: int | None = None
    tools: Any = None  # checked by tool_options, with messages that name the tool
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    pacore: PaCoReOptions | None = None

    def tool_inputs(self) -> dict[str, Any]:
        """The graph input keys of the request's tool fields (only those it set)."""
        fields = {"tools": self.tools, "tool_choice": self.tool_choice, "parallel_tool_calls": self.parallel_tool_calls}
        return {key: value for key, value in fields.items() if value is not None}

    @field_validator("reasoning_effort")
    @classmethod
    def _effort_is_a_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            presets = ", ".join(f"{name!r} ({list(ks)})" for name, ks in PRESETS.items())
            raise ValueError(
                f"reasoning_effort={value!r} is not supported: it picks the schedule preset of that name; use {presets}"
            )
        return value

    @model_validator(mode="after")
    def _effort_or_schedule(self) -> ChatCompletionRequest:
        if self.reasoning_effort is not None and self.pacore is not None and self.pacore.schedule is not None:
            raise ValueError("give one of reasoning_effort and pacore.schedule (both set the schedule)")
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a stream should end with a usage chunk."""
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def overrides(self) -> Overrides:
        """What this request changes of the graph: the top-level OpenAI sampling fields (every round),
        ``response_format`` (the synthesis), ``reasoning_effort`` (the schedule preset), then the ``pacore`` options
        on top."""
        values: dict[str, Any] = {
            "schedule": self.reasoning_effort,
            "response_format": self.response_format,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens if self.max_tokens is not None else self.max_completion_tokens,
            "seed": self.seed,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
        }
        if self.pacore is not None:
            values.update(self.pacore.given())
        return Overrides(**{key: value for key, value in values.items() if value is not None})


def parse_request(data: Any) -> ChatCompletionRequest:
    """Validate a request body; raise :class:`ConfigError` with one line per problem (a 400)."""
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object with 'model' and 'messages'")
    check_parameters(data, CHAT_PARAMETERS, api="chat completions")
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid request: {problems}") from None
    tool_options(request.tools, request.tool_choice, request.parallel_tool_calls)  # a ConfigError is a 400
    return request


def usage_body(usage: dict[str, Any]) -> dict[str, int]:
    """OpenAI ``usage`` for a whole run, with ``effective_ttc_tokens`` (every trajectory's completion tokens)."""
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "effective_ttc_tokens": int(usage.get("effective_ttc_tokens", completion)),
    }


def new_completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return f"chatcmpl-pacore-{uuid.uuid4().hex}"


def completion_body(
    completion_id: str,
    model: str,
    answer: str,
    finish_reason: str,
    usage: dict[str, Any],
    pacore: dict[str, Any],
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object for a finished run; ``pacore`` carries the schedule and per-round rows.

    With ``tool_calls`` the message carries them (its content is null when the synthesis wrote no text) and the
    finish reason is ``tool_calls``.
    """
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if tool_calls:
        message = {"role": "assistant", "content": answer or None, "tool_calls": tool_calls}
        finish_reason = "tool_calls"
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": openai_finish_reason(finish_reason),
                "logprobs": None,
            }
        ],
        "usage": usage_body(usage),
        "pacore": pacore,
    }


def chunk(
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    *,
    include_usage: bool = False,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: a delta, or (``delta=None``) the final usage chunk with no choices."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": openai_finish_reason(finish_reason) if finish_reason else None,
                "logprobs": None,
            }
        ],
    }
    if include_usage:
        body["usage"] = usage_body(usage) if usage is not None else None
    return body


def tool_call_delta(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream delta that carries a run's tool calls, in OpenAI's form (each call whole, with its index)."""
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}


def openai_finish_reason(reason: str) -> str:
    """The synthesis's finish reason as OpenAI spells it (``stop``/``length``/...; anything else is ``stop``)."""
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI-style error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
