"""What the proxy does with each OpenAI request parameter: the one table, for chat completions and the Responses API.

Nothing is ignored silently. A parameter is

* ``honoured``: applied to the rounds named in its row (every round, or the final synthesis only);
* ``accepted``: taken without effect, because it has none on an answer (identifiers for OpenAI's own
  monitoring and caching, ``metadata``), as the row says;
* ``refused``: a 400 that names it (some only for some values: ``n`` above 1, ``logprobs: true``, ...);
* ``tools``: handled by the proxy's tool-call support (``tools``, ``tool_choice``, ``parallel_tool_calls``),
  not checked here.

A parameter in no table (``top_k``, a typo) is refused as unknown. The README's "OpenAI parameters" section is
:func:`markdown_table` of these tables, and a test keeps them equal and checks that every parameter of the
installed ``openai`` SDK has a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pacore_graph.errors import ConfigError

__all__ = ["CHAT_PARAMETERS", "RESPONSES_PARAMETERS", "Parameter", "check_parameters", "markdown_table"]

Handling = Literal["honoured", "accepted", "refused", "tools"]


@dataclass(frozen=True)
class Parameter:
    """One request parameter: what happens to it (``handling``), in which ``rounds``, and how, in words.

    ``allowed`` (for a parameter refused only for some values) says which values pass; ``None`` (JSON null)
    always passes, as an absent parameter.
    """

    name: str
    handling: Handling
    rounds: str
    how: str
    allowed: Callable[[Any], bool] | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is fine."""
        if value is None or self.handling in ("honoured", "accepted", "tools"):
            return None
        if self.allowed is not None and self.allowed(value):
            return None
        return f"{self.name}={_short(value)} is not supported: {self.how}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _falsy(value: Any) -> bool:
    return value is False or value == 0 or value == [] or value == {}


_EVERY = "every round"
_SYNTHESIS = "final synthesis"
_RUN = "the run"
_NONE = "none"
_TOOLS = "tool-call support (explorers and synthesis)"

#: Rows shared by both APIs, by name.
_COMMON: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("model", "honoured", _RUN, "names the PaCoRe graph (GET /v1/models); the upstream model is fixed"),
        Parameter("stream", "honoured", _SYNTHESIS, "SSE: progress comments while rounds run, the synthesis as deltas"),
        Parameter("temperature", "honoured", _EVERY, "sampling of every explorer and of the synthesis"),
        Parameter("top_p", "honoured", _EVERY, "sampling of every explorer and of the synthesis"),
        Parameter("tools", "tools", _TOOLS, "see the tool-call section"),
        Parameter("tool_choice", "tools", _TOOLS, "see the tool-call section"),
        Parameter("parallel_tool_calls", "tools", _TOOLS, "see the tool-call section"),
        Parameter(
            "store",
            "refused",
            _NONE,
            "the proxy stores no completions or responses; send store=false or leave it out",
            allowed=_falsy,
        ),
        Parameter("metadata", "accepted", _NONE, "no effect: nothing is stored to tag"),
        Parameter("user", "accepted", _NONE, "no effect: an end-user id for OpenAI's abuse monitoring"),
        Parameter("safety_identifier", "accepted", _NONE, "no effect: an end-user id for OpenAI's abuse monitoring"),
        Parameter("prompt_cache_key", "accepted", _NONE, "no effect: vLLM caches prefixes on its own"),
        Parameter("prompt_cache_retention", "accepted", _NONE, "no effect: vLLM caches prefixes on its own"),
        Parameter(
            "prompt_cache_options",
            "refused",
            _NONE,
            "explicit prompt-cache control is OpenAI's; vLLM caches prefixes on its own",
        ),
        Parameter(
            "service_tier",
            "refused",
            _NONE,
            "one tier only: send 'auto' or 'default'",
            allowed=lambda value: value in ("auto", "default"),
        ),
        Parameter(
            "stream_options",
            "honoured",
            _RUN,
            "include_usage: a last chunk with the run's usage (chat); include_obfuscation: no effect",
        ),
        Parameter("moderation", "refused", _NONE, "the proxy runs no moderation"),
        Parameter(
            "top_logprobs",
            "refused",
            _NONE,
            "a PaCoRe answer is the synthesis's conclusion, not one sampled token stream; logprobs are not returned",
            allowed=_falsy,
        ),
        Parameter(
            "pacore",
            "honoured",
            _RUN,
            "PaCoRe's own options (extra_body): schedule, sampling of every round, quorum, ... (PaCoReOptions)",
        ),
    )
}

_EFFORTS = "'low', 'medium' or 'high'"

#: ``POST /v1/chat/completions``: every parameter of the OpenAI chat completions API, and ``pacore``.
CHAT_PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("messages", "honoured", _EVERY, "x: the conversation; its last user message becomes P(x, M)"),
        _COMMON["model"],
        _COMMON["stream"],
        _COMMON["stream_options"],
        _COMMON["temperature"],
        _COMMON["top_p"],
        Parameter("max_tokens", "honoured", _EVERY, "the completion budget of every explorer and of the synthesis"),
        Parameter("max_completion_tokens", "honoured", _EVERY, "as max_tokens (max_tokens wins when both are given)"),
        Parameter("seed", "honoured", _EVERY, "seed + the trajectory's index, so parallel samples differ"),
        Parameter("stop", "honoured", _EVERY, "stop sequences of every explorer and of the synthesis"),
        Parameter("presence_penalty", "honoured", _EVERY, "sent with every explorer's and the synthesis's request"),
        Parameter("frequency_penalty", "honoured", _EVERY, "sent with every explorer's and the synthesis's request"),
        Parameter(
            "response_format",
            "honoured",
            _SYNTHESIS,
            "json_object / json_schema constrain the synthesis (vLLM guided decoding); explorers reason freely; "
            "an invalid JSON schema is a 400",
        ),
        Parameter(
            "reasoning_effort",
            "honoured",
            _RUN,
            f"the schedule preset of that name ({_EFFORTS}: [4], [16], [32, 4]); other values and a pacore.schedule "
            "alongside are a 400",
        ),
        Parameter(
            "n",
            "refused",
            _NONE,
            "a PaCoRe run gives one answer; send n=1",
            allowed=lambda value: value == 1,
        ),
        Parameter(
            "logprobs",
            "refused",
            _NONE,
            "a PaCoRe answer is the synthesis's conclusion, not one sampled token stream; logprobs are not returned",
            allowed=_falsy,
        ),
        _COMMON["top_logprobs"],
        Parameter(
            "logit_bias",
            "refused",
            _NONE,
            "token ids are the upstream model's; set sampling.extra.logit_bias in a graph spec instead",
            allowed=_falsy,
        ),
        _COMMON["tools"],
        _COMMON["tool_choice"],
        _COMMON["parallel_tool_calls"],
        Parameter("functions", "refused", _NONE, "deprecated by OpenAI; send tools"),
        Parameter("function_call", "refused", _NONE, "deprecated by OpenAI; send tool_choice"),
        Parameter("audio", "refused", _NONE, "PaCoRe answers in text only"),
        Parameter(
            "modalities",
            "refused",
            _NONE,
            "PaCoRe answers in text only: send ['text'] or leave it out",
            allowed=lambda value: value == ["text"],
        ),
        Parameter("prediction", "refused", _NONE, "predicted outputs do not apply to a run of many trajectories"),
        Parameter("web_search_options", "refused", _NONE, "the proxy runs no web search"),
        Parameter("verbosity", "refused", _NONE, "OpenAI-model specific; ask for brevity in the prompt"),
        _COMMON["store"],
        _COMMON["metadata"],
        _COMMON["user"],
        _COMMON["safety_identifier"],
        _COMMON["prompt_cache_key"],
        _COMMON["prompt_cache_retention"],
        _COMMON["prompt_cache_options"],
        _COMMON["service_tier"],
        _COMMON["moderation"],
        _COMMON["pacore"],
    )
}

#: ``POST /v1/responses`` (:mod:`pacore_graph.server.responses`): converted to a chat request, then as above.
RESPONSES_PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("input", "honoured", _EVERY, "text or input items, as chat messages (x)"),
        Parameter("instructions", "honoured", _EVERY, "a system message before the input"),
        _COMMON["model"],
        _COMMON["stream"],
        _COMMON["stream_options"],
        _COMMON["temperature"],
        _COMMON["top_p"],
        Parameter("max_output_tokens", "honoured", _EVERY, "max_tokens of every explorer and of the synthesis"),
        Parameter(
            "text",
            "honoured",
            _SYNTHESIS,
            "text.format (json_object / json_schema) as chat's response_format; text.verbosity is a 400",
        ),
        Parameter(
            "reasoning",
            "honoured",
            _RUN,
            f"reasoning.effort as chat's reasoning_effort ({_EFFORTS}); reasoning.summary is a 400",
        ),
        _COMMON["tools"],
        _COMMON["tool_choice"],
        _COMMON["parallel_tool_calls"],
        Parameter(
            "previous_response_id",
            "refused",
            _NONE,
            "responses are not stored; send the whole conversation as input",
        ),
        Parameter("conversation", "refused", _NONE, "conversations are not stored; send the whole conversation"),
        Parameter(
            "background",
            "refused",
            _NONE,
            "runs are answered in the request; use stream=true for long ones",
            allowed=_falsy,
        ),
        Parameter("background_options", "refused", _NONE, "runs are answered in the request (no background mode)"),
        Parameter("prompt", "refused", _NONE, "stored prompt templates are OpenAI's; send the input itself"),
        Parameter(
            "include",
            "refused",
            _NONE,
            "no extra output data (logprobs, reasoning, search results) is returned",
            allowed=_falsy,
        ),
        Parameter(
            "truncation",
            "refused",
            _NONE,
            "the proxy does not drop input; send 'disabled' or leave it out (see max_model_len for fitting)",
            allowed=lambda value: value == "disabled",
        ),
        Parameter("max_tool_calls", "refused", _NONE, "the proxy runs no built-in tools"),
        Parameter("context_management", "refused", _NONE, "server-side context management is OpenAI's"),
        Parameter("image", "refused", _NONE, "PaCoRe answers in text only"),
        Parameter("access_programs", "refused", _NONE, "OpenAI-specific access programs"),
        _COMMON["top_logprobs"],
        _COMMON["store"],
        _COMMON["metadata"],
        _COMMON["user"],
        _COMMON["safety_identifier"],
        _COMMON["prompt_cache_key"],
        _COMMON["prompt_cache_retention"],
        _COMMON["prompt_cache_options"],
        _COMMON["service_tier"],
        _COMMON["moderation"],
        _COMMON["pacore"],
    )
}


def check_parameters(body: Mapping[str, Any], table: Mapping[str, Parameter], *, api: str) -> None:
    """Raise :class:`ConfigError` (a 400) naming every parameter of ``body`` that ``table`` refuses or lacks."""
    problems: list[str] = []
    unknown = [name for name in body if name not in table]
    for name, value in body.items():
        if name in table:
            problem = table[name].problem(value)
            if problem is not None:
                problems.append(problem)
    if unknown:
        problems.append(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: not part of the "
            f"OpenAI {api} API as this proxy serves it; PaCoRe's own options go in the 'pacore' object, server "
            "sampling extras (top_k, min_p, ...) in a graph spec's sampling.extra"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def markdown_table(table: Mapping[str, Parameter]) -> str:
    """``table`` as the Markdown table the README shows (parameter, handling, rounds, how)."""
    lines = ["| parameter | handling | rounds | how |", "|---|---|---|---|"]
    lines += [f"| `{p.name}` | {p.handling} | {p.rounds} | {p.how} |" for p in table.values()]
    return "\n".join(lines)
