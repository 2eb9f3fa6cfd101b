"""Chat message text: the one place that says what the text of a message is.

A message content is a string or a list of OpenAI content parts. Its text is the string, or the ``text`` of its
text parts joined by a newline, as vLLM's chat API joins them before applying the chat template. The prompt
template, the context budget, the round sizes and the fake servers all read text through these functions, so
they agree on every message.

Every other part (``image_url``, ``input_audio``, ``video_url``, ``audio_url``, ``file``, ...: whatever the server
accepts) is a *non-text part*: it has no text, and :func:`non_text_parts` returns them, in order, as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TEXT_PART_SEPARATOR",
    "is_text_only",
    "last_user_index",
    "last_user_text",
    "non_text_parts",
    "prompt_chars",
    "text_of",
]

#: How the text parts of one message are joined (vLLM joins them with a newline).
TEXT_PART_SEPARATOR = "\n"


def text_of(content: Any) -> str:
    """The text of a message content: the string itself, or its text parts joined ('' for anything else)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part for part in content if isinstance(part, Mapping) and part.get("type", "text") == "text"]
        texts = [part.get("text") for part in parts]
        return TEXT_PART_SEPARATOR.join(text for text in texts if isinstance(text, str))
    return ""


def non_text_parts(content: Any) -> list[Any]:
    """The parts of a content that are not text parts, in their order, as they are (the same objects)."""
    if not isinstance(content, list):
        return []
    return [part for part in content if not (isinstance(part, Mapping) and part.get("type", "text") == "text")]


def is_text_only(content: Any) -> bool:
    """Whether a content is a string or a list of text parts only."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content)


def last_user_index(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """The index of the last ``user`` message, or None when there is none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return None


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The text of the last ``user`` message, or None when there is none."""
    index = last_user_index(messages)
    return None if index is None else text_of(messages[index].get("content"))


def prompt_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """The length of a prompt's text: every message's text, summed."""
    return sum(len(text_of(message.get("content"))) for message in messages)
