"""P(x, M): how a problem and the previous round's conclusions become the next round's chat messages.

The template is the one PaCoRe-8B was trained on, byte for byte, rendered with jinja2's default settings
(``trim_blocks`` off, one trailing newline stripped), exactly as the authors' inference code does.

**Conversations with tool results.** In an agent loop the conversation may end after the last user message
with assistant turns that called tools and the ``tool`` messages with their results. P(x, M) is then the same
rule as always: round 1 sends the conversation unchanged; later rounds replace only the content of the last user
message with the rendered template (its "Original Problem" is that message's text) and keep every message after
it (the assistant tool-call turns and the tool results) unchanged and in order, so each trajectory sees the
references and then the tool results it is to answer from. Only text is rendered into the template: tool
results are never quoted into it.

Templates are rendered in jinja2's sandbox with bounds, since custom ones come from graph specs: the output may
hold at most :data:`MAX_RENDER_CHARS` characters and rendering may take at most :data:`MAX_RENDER_SECONDS` seconds
of template code; ``*``, ``**`` and ``%`` refuse results over the size bound, as do filters and calls given a
number over it (``center(10**9)``) and format strings with such a width; ``lipsum`` is not available. A template
over a bound fails with one line (:class:`~pacore_graph.errors.ConfigError`).

Multimodal problems (the last user message holds text parts and non-text parts: ``image_url``, ``input_audio``,
``video_url``, ...): round 1 sends the messages unchanged. Later rounds replace the last user message's content
with ``[template text part, every non-text part]``: the template's ``original_prompt`` is the message's text
(its text parts joined by a newline, as vLLM joins them, :mod:`pacore_graph.messages`), and the non-text parts
follow the text part in their original order, each the very same object (so its bytes are the same in every
round, and each appears once per request). A text-only message gets a string content, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pacore_graph.clients.base import ChatMessage
from pacore_graph.errors import ConfigError
from pacore_graph.messages import last_user_index, non_text_parts, text_of

__all__ = [
    "CITATION_PATTERNS",
    "MAX_RENDER_CHARS",
    "MAX_RENDER_SECONDS",
    "REFERENCE_TEMPLATE",
    "build_prompt",
    "cited_references",
    "last_user_content",
    "normalize_problem",
    "render_references",
    "synthesis_content",
]

REFERENCE_TEMPLATE = """\
You are given a problem and a list of reference responses. Your job is to analyze these references and provide your own response.

Original Problem:
{{ original_prompt }}

Reference Responses:
{% for response in ref_responses %}
Reference {{ loop.index }}:
{{ response }}
{% endfor %}

Now, based on the original problem and reference responses above, please provide your own comprehensive solution.
"""  # noqa: E501


#: The most characters a rendered prompt (and any one value built while rendering it) may have.
MAX_RENDER_CHARS = 64 * 1024 * 1024
#: The most seconds the template's own code may run for one rendering.
MAX_RENDER_SECONDS = 2.0


def render_references(original_prompt: str, references: Sequence[str], template: str = REFERENCE_TEMPLATE) -> str:
    """Render the synthesis template for ``original_prompt`` with ``references`` numbered from 1.

    Custom templates (from graph specs) are user input: they are rendered within the module's bounds
    (:mod:`pacore_graph.templating`, which loads jinja2 on first use so a CLI start-up does not pay for it).
    """
    from pacore_graph.templating import render_template

    context = {"original_prompt": original_prompt, "ref_responses": list(references)}
    return render_template(template, context, trusted=template == REFERENCE_TEMPLATE)


def _user_turn(messages: Sequence[ChatMessage]) -> int:
    index = last_user_index(messages)
    if index is None:
        raise ConfigError("the problem has no user message; give a string or chat messages with a 'user' turn")
    return index


def last_user_content(messages: Sequence[ChatMessage]) -> str:
    """The text of the last user message (its text parts joined): the 'original problem' the template quotes."""
    content = messages[_user_turn(messages)].get("content")
    if not isinstance(content, str | list) or (
        isinstance(content, list) and not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
    ):
        raise ConfigError(
            "the last user message must be a string or a list of content parts, each with a 'type' "
            "(e.g. {'type': 'text', 'text': '...'}, {'type': 'image_url', 'image_url': {'url': '...'}})"
        )
    return text_of(content)


def normalize_problem(problem: str | Sequence[Any]) -> list[dict[str, Any]]:
    """Turn a problem into OpenAI-style chat messages, validating it.

    Accepts a string, OpenAI-style message dicts, or LangChain ``BaseMessage`` objects. Raises
    :class:`~pacore_graph.errors.ConfigError` for an empty problem or one without a text user turn.
    """
    if isinstance(problem, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": problem}]
    elif isinstance(problem, Sequence) and problem:
        from langchain_core.messages import BaseMessage

        messages = [_openai_message(m) if isinstance(m, BaseMessage) else _as_message_dict(m) for m in problem]
    else:
        raise ConfigError("the problem is empty; give a non-empty string or a non-empty list of chat messages")
    if not last_user_content(messages).strip():
        raise ConfigError(
            "the problem is empty (the last user message has no text); give the question to solve "
            "(beside any image: the later rounds quote that text)"
        )
    return messages


def _openai_message(message: Any) -> dict[str, Any]:
    """A LangChain message as an OpenAI dict; a tool-call turn without text has ``content: None``, as OpenAI's."""
    from langchain_core.messages import convert_to_openai_messages

    converted = dict(convert_to_openai_messages(message))
    if converted.get("tool_calls") and converted.get("content") == "":
        converted["content"] = None
    return converted


def _as_message_dict(message: Any) -> dict[str, Any]:
    # An assistant turn that only called tools may leave its content out (OpenAI allows it).
    has_content = isinstance(message, dict) and ("content" in message or bool(message.get("tool_calls")))
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not has_content:
        raise ConfigError(
            f"invalid chat message {message!r}: each message needs a 'role' and a 'content', "
            "e.g. {'role': 'user', 'content': '...'}"
        )
    return dict(message)


def build_prompt(
    messages: Sequence[ChatMessage], references: Sequence[str], template: str = REFERENCE_TEMPLATE
) -> list[dict[str, Any]]:
    """P(x, M): the messages one trajectory of the next round is sampled from.

    With no references (round 1) the original messages are returned unchanged. Otherwise only the content of
    the last user message is replaced by the rendered template (plus its non-text parts, see
    :func:`synthesis_content`); system messages, earlier turns and the turns after it (assistant tool calls, tool
    results) are kept.
    """
    copied = [dict(m) for m in messages]
    if not references:
        return copied
    turn = _user_turn(copied)
    rendered = render_references(last_user_content(copied), references, template)
    copied[turn]["content"] = synthesis_content(rendered, copied[turn].get("content"))
    return copied


def synthesis_content(rendered: str, original: Any) -> str | list[Any]:
    """The last user message's content in a later round: the rendered template, then ``original``'s non-text parts.

    A text-only ``original`` gives the rendered string itself; one with non-text parts gives
    ``[{"type": "text", "text": rendered}, *parts]``, the parts in their order and unchanged (the same objects).
    """
    media = non_text_parts(original)
    if not media:
        return rendered
    return [{"type": "text", "text": rendered}, *media]


#: A word that names a reference, then a number list: "Reference 3", "responses 1, 2 and 4", "Ref. #2".
CITATION_PATTERNS: tuple[str, ...] = (
    r"(?i)\b(?:references?|refs?\.?|responses?)\s*(?:#|no\.?|number)?\s*"
    r"(\d{1,3}(?:\s*(?:,|and|&|or|-|–)\s*(?:#\s*)?\d{1,3})*)\b",
)


def cited_references(text: str | None, count: int) -> list[int]:
    """The reference numbers (1 to ``count``) that ``text`` (a synthesis) cites, sorted, each once.

    The template numbers references from 1; a synthesis that says "Reference 3", "response 2", "Ref. #1",
    "References 1 and 3" or "responses 1, 2 and 4" cites them (:data:`CITATION_PATTERNS`, case-insensitive).
    Numbers outside 1 to ``count`` are not references of that prompt and are ignored.
    """
    if not text or count < 1:
        return []
    cited: set[int] = set()
    for pattern in CITATION_PATTERNS:
        for match in re.finditer(pattern, text):
            for number in re.findall(r"\d{1,3}", match.group(1)):
                if 1 <= int(number) <= count:
                    cited.add(int(number))
    return sorted(cited)
