"""The OpenAI Responses API (``POST /v1/responses``), converted to and from the proxy's chat path.

A Responses request becomes a chat completions body (:func:`chat_body`), which then goes through the same checks
(:func:`~pacore_graph.server.protocol.parse_request`, the parameter tables of :mod:`pacore_graph.server.params`),
the same graph cache and the same ``run_graph``/``stream_run`` as a chat request. The run's result becomes a
``response`` object (:func:`response_body`); a streamed run becomes the SSE events the ``openai`` SDK's
``responses.create(stream=True)`` reads (:class:`ResponseEvents`): ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta`` (the synthesis, as
it is generated), ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``,
then ``response.completed`` (or ``response.failed``).

The conversion:

* ``input`` (text, or items) → messages; ``instructions`` → a system message first; message items keep their
  role (``developer`` becomes ``system``), their ``input_text``/``output_text`` parts are joined; with
  ``input_image`` parts (an http(s) or data URL; ``file_id`` is refused) the content becomes chat's parts, in
  order (text parts and ``image_url`` parts), which the multimodal rules then keep in every round;
* ``function_call`` / ``function_call_output`` input items → an assistant message with ``tool_calls`` / a
  ``tool`` message; function ``tools`` and ``tool_choice`` → chat's form (the tool-call support of the chat path
  decides what they do);
* ``max_output_tokens`` → ``max_tokens``; ``text.format`` → ``response_format``; ``reasoning.effort`` →
  ``reasoning_effort``;
* a result that carries ``tool_calls`` (chat's form) → ``function_call`` output items, after the text if any.

Nothing is stored: ``previous_response_id``, ``conversation`` and ``store: true`` are refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pacore_graph.errors import ConfigError
from pacore_graph.media import image_part
from pacore_graph.result import PaCoReResult
from pacore_graph.server.params import RESPONSES_PARAMETERS, check_parameters

__all__ = [
    "ResponseEvents",
    "chat_body",
    "new_message_id",
    "new_response_id",
    "output_items",
    "response_body",
    "tool_calls_of",
]

#: Parameters copied to the chat body under the same name.
_SAME = ("model", "stream", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "pacore")

#: Input content part types that carry text, and the key they carry it under.
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


def new_response_id() -> str:
    """A fresh ``resp_...`` id."""
    return f"resp_pacore{uuid.uuid4().hex}"


def new_message_id() -> str:
    """A fresh ``msg_...`` id (an output message item)."""
    return f"msg_pacore{uuid.uuid4().hex}"


def chat_body(body: Any) -> dict[str, Any]:
    """The chat completions body of a Responses request; raise :class:`ConfigError` (a 400) on what cannot be."""
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object with 'model' and 'input'")
    check_parameters(body, RESPONSES_PARAMETERS, api="Responses")
    if body.get("input") is None:
        raise ConfigError("input: required; send the question as text or as input items")
    chat: dict[str, Any] = {key: body[key] for key in _SAME if body.get(key) is not None}
    messages = _messages(body["input"])
    instructions = body.get("instructions")
    if instructions:
        if not isinstance(instructions, str):
            raise ConfigError("instructions: send text")
        messages.insert(0, {"role": "system", "content": instructions})
    chat["messages"] = messages
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if "tools" in chat:
        chat["tools"] = [_chat_tool(tool) for tool in _list(chat["tools"], "tools")]
    if isinstance(chat.get("tool_choice"), dict):
        chat["tool_choice"] = _chat_tool_choice(chat["tool_choice"])
    chat.update(_text_options(body.get("text")))
    chat.update(_reasoning_options(body.get("reasoning")))
    return chat


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: send a list")
    return value


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(_list(value, "input")):
        if not isinstance(item, dict):
            raise ConfigError(f"input[{index}]: send an object (a message or a function call item)")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ConfigError(f"input[{index}].role: use user, assistant, system or developer")
            messages.append(
                {"role": "system" if role == "developer" else role, "content": _content(item.get("content"), index)}
            )
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "assistant" and "tool_calls" in previous:
                previous["tool_calls"].append(call)  # parallel calls: one assistant message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text(output, index)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
        else:
            raise ConfigError(
                f"input[{index}]: items of type {kind!r} are not supported; send messages, function_call and "
                "function_call_output items"
            )
    if not messages:
        raise ConfigError("input: empty; send the question as text or as input items")
    return messages


def _text(content: Any, index: int) -> str:
    """A tool output's text: a string, or its text parts joined by newlines (other parts are refused)."""
    parts = _content(content, index, images=False)
    return parts if isinstance(parts, str) else "\n".join(p["text"] for p in parts)


def _content(content: Any, index: int, *, images: bool = True) -> str | list[dict[str, Any]]:
    """A message's content in chat's form: text parts joined by newlines, or, with images, the parts in order."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in _list(content, f"input[{index}].content"):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image" and images:
            parts.append(_image_part(part, index))
            continue
        key = _TEXT_PARTS.get(kind) if isinstance(kind, str) else None
        if key is None or not isinstance(part.get(key), str):
            accepted = "input_text, output_text, input_image" if images else "input_text, output_text"
            raise ConfigError(
                f"input[{index}].content: parts of type {kind!r} are not supported; PaCoRe reads {accepted}"
            )
        parts.append({"type": "text", "text": part[key]})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _image_part(part: Mapping[str, Any], index: int) -> dict[str, Any]:
    """An ``input_image`` part as chat's ``image_url`` part: only http(s) and data URLs (never a server file)."""
    where = f"input[{index}].content: input_image"
    url = part.get("image_url")
    if part.get("file_id") is not None and url is None:
        raise ConfigError(f"{where}: file_id is not supported (nothing is stored); send image_url as a data URL")
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https", "data"):
        raise ConfigError(f"{where}: image_url must be an http(s) or a base64 data URL")
    try:
        chat = image_part(url)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if part.get("detail") is not None:
        chat["image_url"]["detail"] = part["detail"]
    return chat


def _chat_tool(tool: Any) -> Any:
    """A Responses function tool in chat's form (``{"type": "function", "function": {...}}``)."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise ConfigError(f"tools: only function tools are supported, got {kind!r}")
    if "function" in tool:  # already chat's form
        return tool
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Mapping[str, Any]) -> Any:
    if choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return dict(choice)


def _text_options(text: Any) -> dict[str, Any]:
    """``text.format`` as chat's ``response_format``; ``text.verbosity`` is refused."""
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise ConfigError("text: send an object such as {'format': {'type': 'json_object'}}")
    unknown = sorted(set(text) - {"format", "verbosity"})
    if unknown:
        raise ConfigError(f"text: unknown key(s) {unknown}; use format")
    if text.get("verbosity") is not None:
        raise ConfigError("text.verbosity is not supported: OpenAI-model specific; ask for brevity in the prompt")
    form = text.get("format")
    if form is None:
        return {}
    if not isinstance(form, dict):
        raise ConfigError("text.format: send an object with a type (text, json_object, json_schema)")
    if form.get("type") != "json_schema":
        return {"response_format": dict(form)}
    schema = {key: form[key] for key in ("name", "description", "schema", "strict") if key in form}
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


def _reasoning_options(reasoning: Any) -> dict[str, Any]:
    """``reasoning.effort`` as chat's ``reasoning_effort``; a reasoning summary is refused."""
    if reasoning is None:
        return {}
    if not isinstance(reasoning, dict):
        raise ConfigError("reasoning: send an object such as {'effort': 'high'}")
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) is not None:
            raise ConfigError(
                f"reasoning.{key} is not supported: the explorers' reasoning is compacted into the synthesis, not "
                "summarized; read the rounds in the response's pacore field"
            )
    unknown = sorted(set(reasoning) - {"effort", "summary", "generate_summary"})
    if unknown:
        raise ConfigError(f"reasoning: unknown key(s) {unknown}; use effort")
    return {"reasoning_effort": reasoning["effort"]} if reasoning.get("effort") is not None else {}


def tool_calls_of(result: PaCoReResult) -> list[dict[str, Any]]:
    """The tool calls a run's answer makes, in chat's form (read from ``tool_calls`` on the result or its
    ``extra``; none for a text answer)."""
    calls = getattr(result, "tool_calls", None) or result.extra.get("tool_calls")
    return [call if isinstance(call, dict) else dict(call) for call in calls or []]


def _function_call_item(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": function.get("name", ""),
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        "status": "completed",
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "new" else []
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "in_progress" if status == "new" else status,
        "content": content,
    }


def output_items(result: PaCoReResult, message_id: str) -> list[dict[str, Any]]:
    """The ``output`` of a finished run: the answer as a message (unless it is only tool calls), then the calls."""
    calls = [_function_call_item(call) for call in tool_calls_of(result)]
    if calls and not result.answer.strip():
        return calls
    return [_message_item(message_id, result.answer), *calls]


def _usage(result: PaCoReResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "effective_ttc_tokens": usage.effective_ttc_tokens,
    }


def response_body(
    response_id: str,
    request: Mapping[str, Any],
    created: int,
    *,
    result: PaCoReResult | None = None,
    output: Sequence[dict[str, Any]] = (),
    pacore: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object: in progress (no ``result``), finished (with it) or failed (``error``)."""
    status = "in_progress"
    incomplete = None
    if error is not None:
        status = "failed"
    elif result is not None:
        status = "incomplete" if result.finish_reason == "length" else "completed"
        if status == "incomplete":
            incomplete = {"reason": "max_output_tokens"}
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": request.get("model"),
        "output": list(output),
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "text": request.get("text") or {"format": {"type": "text"}},
        "store": False,
        "usage": _usage(result) if result is not None else None,
    }
    if result is not None:
        body["completed_at"] = int(time.time())
    if pacore is not None:
        body["pacore"] = pacore
    return body


class ResponseEvents:
    """The SSE events of one streamed response, in order, each with its ``sequence_number``.

    Call :meth:`start`, then :meth:`delta` for each piece of the synthesis, then :meth:`finish` with the result
    (or :meth:`fail`). Each returns the events to send; the message item opens with the first text.
    """

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.request = request
        self.response_id = new_response_id()
        self.message_id = new_message_id()
        self.created = int(time.time())
        self._sequence = 0
        self._text: list[str] = []
        self._open = False

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        body = response_body(self.response_id, self.request, self.created)
        return [self._event("response.created", response=body), self._event("response.in_progress", response=body)]

    def _open_message(self) -> list[dict[str, Any]]:
        self._open = True
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event("response.output_item.added", output_index=0, item=_message_item(self.message_id, "", "new")),
            self._event("response.content_part.added", item_id=self.message_id, output_index=0, content_index=0,
                        part=part),
        ]  # fmt: skip

    def delta(self, text: str) -> list[dict[str, Any]]:
        """A piece of the answer: ``response.output_text.delta`` (after opening the message item)."""
        events = [] if self._open else self._open_message()
        self._text.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self.message_id,
                output_index=0,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def finish(self, result: PaCoReResult, pacore: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rest of the answer (text the stream did not carry), the closing events, ``response.completed``."""
        events: list[dict[str, Any]] = []
        output = output_items(result, self.message_id)
        streamed = "".join(self._text)
        if any(item["type"] == "message" for item in output):
            rest = result.answer[len(streamed) :] if result.answer.startswith(streamed) else ""
            if rest or not self._open:
                events += self.delta(rest) if rest else self._open_message()
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            events += [
                self._event(
                    "response.output_text.done",
                    item_id=self.message_id,
                    output_index=0,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done", item_id=self.message_id, output_index=0, content_index=0, part=part
                ),
                self._event("response.output_item.done", output_index=0, item=_message_item(self.message_id, text)),
            ]
            output[0] = _message_item(self.message_id, text)
        for index, item in enumerate(output):
            if item["type"] != "function_call":
                continue
            added = {**item, "arguments": "", "status": "in_progress"}
            events += [
                self._event("response.output_item.added", output_index=index, item=added),
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=item["arguments"],
                ),
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                ),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        body = response_body(self.response_id, self.request, self.created, result=result, output=output, pacore=pacore)
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        events.append(self._event(kind, response=body))
        return events

    def fail(self, message: str, code: str | None = None) -> list[dict[str, Any]]:
        """``response.failed``, with the error (the code is OpenAI's ``server_error`` plus the proxy's own)."""
        error = {"code": "server_error", "message": message if code is None else f"{message} ({code})"}
        body = response_body(self.response_id, self.request, self.created, error=error)
        return [self._event("response.failed", response=body)]
