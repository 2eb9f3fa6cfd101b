"""Tool calls through PaCoRe: a run's OpenAI ``tools``, and the text form a proposed call takes in a reference.

A run may carry OpenAI's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (the graph input's keys of those
names, or the proxy request's fields). They are checked once, before anything is sent (:func:`tool_options`
raises :class:`~pacore_graph.errors.ConfigError`), then sent unchanged with every request of the run, the
explorers' and the synthesis's, so every trajectory may propose calls. PaCoRe never executes a tool: the caller
(an agent loop) does, and sends the results back as ``tool`` messages in the next request.

**The text form of a proposed call.** An explorer's calls become part of its reference (compaction,
:func:`pacore_graph.compaction.reference_text`): after its conclusion, one line per call, in the order proposed::

    Proposed tool call (not executed): get_weather({"city": "Paris"})

that is the function's name, then its arguments as canonical JSON (keys sorted, ``", "`` and ``": "`` as
separators, non-ASCII kept) in parentheses; arguments that are not valid JSON are quoted as the model wrote them.
A trajectory that only proposed calls has just those lines as its reference, so it is kept, not dropped as empty.
The synthesis then decides: its calls are the run's answer (``PaCoReResult.tool_calls``; the proxy's
``message.tool_calls`` with ``finish_reason: "tool_calls"``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from pacore_graph.clients.base import SamplingParams, ToolCall
from pacore_graph.errors import ConfigError

__all__ = [
    "PROPOSED_CALL_PREFIX",
    "FunctionSpec",
    "ToolOptions",
    "ToolSpec",
    "proposed_calls_text",
    "tool_options",
    "with_tools",
]

#: How each proposed call's line in a reference starts.
PROPOSED_CALL_PREFIX = "Proposed tool call (not executed): "


class FunctionSpec(BaseModel):
    """The ``function`` of an OpenAI tool: a name, a description and the JSON schema of its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _is_a_json_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        problem = _schema_problem(json.dumps(schema, sort_keys=True))
        if problem is not None:
            raise ValueError(problem)
        if schema.get("type", "object") != "object":
            raise ValueError(f"the arguments' schema must have type 'object', not {schema.get('type')!r}")
        return schema


@functools.lru_cache(maxsize=256)
def _schema_problem(schema_json: str) -> str | None:
    """Why a JSON schema (as canonical JSON text) is not valid, or None.

    Cached: checking a schema against its metaschema costs ~0.7 ms, and an agent sends the same tools every turn.
    """
    import jsonschema  # imported here: only runs with tools pay for it

    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        return f"not a valid JSON schema at {where}: {exc.message}"
    return None


class ToolSpec(BaseModel):
    """One entry of OpenAI's ``tools``: ``{"type": "function", "function": {...}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"]
    function: FunctionSpec


class _NamedChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"]
    function: dict[str, str]


class ToolOptions(BaseModel):
    """A run's checked tool settings: the tools, ``tool_choice`` and ``parallel_tool_calls``, as OpenAI has them.

    ``tool_choice`` is ``"none"``, ``"auto"``, ``"required"`` or ``{"type": "function", "function": {"name":
    NAME}}`` naming one of the tools; ``parallel_tool_calls`` is passed on to the server of every request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: list[ToolSpec] = Field(min_length=1)
    tool_choice: Literal["none", "auto", "required"] | _NamedChoice | None = None
    parallel_tool_calls: StrictBool | None = None

    @model_validator(mode="after")
    def _names(self) -> ToolOptions:
        names = [tool.function.name for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tools: the tool name(s) {duplicates} are given more than once; give each tool once")
        if isinstance(self.tool_choice, _NamedChoice):
            chosen = self.tool_choice.function.get("name")
            if chosen not in names:
                raise ValueError(
                    f"tool_choice: names the tool {chosen!r}, which is not among the tools {names}; "
                    "name one of them, or use 'auto', 'required' or 'none'"
                )
        return self

    def request_fields(self) -> dict[str, Any]:
        """The fields added to every chat request of the run."""
        fields: dict[str, Any] = {"tools": [tool.model_dump(exclude_none=True) for tool in self.tools]}
        if self.tool_choice is not None:
            choice = self.tool_choice
            fields["tool_choice"] = choice.model_dump() if isinstance(choice, _NamedChoice) else choice
        if self.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = self.parallel_tool_calls
        return fields


def tool_options(tools: Any = None, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolOptions | None:
    """Check a run's tool settings; None when it has no tools. Raises :class:`ConfigError` naming each problem.

    ``tool_choice`` (other than ``"none"``) or ``parallel_tool_calls`` without tools is an error too: they would
    change nothing.
    """
    if not tools:
        settings = {
            "tool_choice": None if tool_choice == "none" else tool_choice,
            "parallel_tool_calls": parallel_tool_calls,
        }
        given = [name for name, value in settings.items() if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} given without tools; send tools too, or leave them out")
        if tools is not None and not isinstance(tools, list):
            raise ConfigError("tools must be a list of {'type': 'function', 'function': {...}} objects")
        return None
    try:
        return ToolOptions(tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls)
    except ValidationError as exc:
        raise ConfigError(f"invalid tools: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("_NamedChoice", "literal[")))
        message = error["msg"].removeprefix("Value error, ")
        lines.append(message if message.startswith(("tools:", "tool_choice:")) else f"{where}: {message}")
    return "; ".join(dict.fromkeys(lines))


def with_tools(params: SamplingParams, fields: Mapping[str, Any] | None) -> SamplingParams:
    """``params`` with a run's tool fields (:meth:`ToolOptions.request_fields`) added to the request body."""
    if not fields:
        return params
    return params.model_copy(update={"extra": {**params.extra, **fields}})


def _canonical_arguments(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, ensure_ascii=False)
    except ValueError:
        return json.dumps(arguments, ensure_ascii=False)  # not JSON: quoted as written


def proposed_calls_text(calls: Sequence[ToolCall | Mapping[str, Any]]) -> str:
    """The canonical text form of proposed calls (see the module docstring): one line per call."""
    lines = []
    for call in calls:
        parsed = call if isinstance(call, ToolCall) else ToolCall.from_openai(call)
        lines.append(f"{PROPOSED_CALL_PREFIX}{parsed.name}({_canonical_arguments(parsed.arguments)})")
    return "\n".join(lines)
