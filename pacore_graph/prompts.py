"""P(x, M): how a problem and the previous round's conclusions become the next round's chat messages.

The template is the one PaCoRe-8B was trained on, byte for byte, rendered with jinja2's default settings
(``trim_blocks`` off, one trailing newline stripped), exactly as the authors' inference code does.

Multimodal problems (the last user message holds text parts and non-text parts: ``image_url``, ``input_audio``,
``video_url``, ...): round 1 sends the messages unchanged. Later rounds replace the last user message's content
with ``[template text part, every non-text part]``: the template's ``original_prompt`` is the message's text
(its text parts joined by a newline, as vLLM joins them, :mod:`pacore_graph.messages`), and the non-text parts
follow the text part in their original order, each the very same object (so its bytes are the same in every
round, and each appears once per request). A text-only message gets a string content, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jinja2
import jinja2.sandbox

from pacore_graph.clients.base import ChatMessage
from pacore_graph.errors import ConfigError
from pacore_graph.messages import last_user_index, non_text_parts, text_of

__all__ = [
    "REFERENCE_TEMPLATE",
    "build_prompt",
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


def render_references(original_prompt: str, references: Sequence[str], template: str = REFERENCE_TEMPLATE) -> str:
    """Render the synthesis template for ``original_prompt`` with ``references`` numbered from 1.

    Custom templates (from graph specs) are rendered in jinja2's sandbox, since they are user input.
    """
    try:
        return _compile(template).render(original_prompt=original_prompt, ref_responses=list(references))
    except jinja2.TemplateError as exc:
        raise ConfigError(f"the prompt template cannot be rendered: {exc}; check its jinja2 syntax") from exc


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    # Compiling costs ~1 ms, more than rendering; a graph renders the same few templates once per round.
    return jinja2.sandbox.SandboxedEnvironment().from_string(template)


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
        from langchain_core.messages import BaseMessage, convert_to_openai_messages

        messages = [
            dict(convert_to_openai_messages(m)) if isinstance(m, BaseMessage) else _as_message_dict(m) for m in problem
        ]
    else:
        raise ConfigError("the problem is empty; give a non-empty string or a non-empty list of chat messages")
    if not last_user_content(messages).strip():
        raise ConfigError(
            "the problem is empty (the last user message has no text); give the question to solve "
            "(beside any image: the later rounds quote that text)"
        )
    return messages


def _as_message_dict(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
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
    :func:`synthesis_content`); system messages and earlier turns are kept.
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
