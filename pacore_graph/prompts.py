"""P(x, M): how a problem and the previous round's conclusions become the next round's chat messages.

The template is the one PaCoRe-8B was trained on, byte for byte, rendered with jinja2's default settings
(``trim_blocks`` off, one trailing newline stripped), exactly as the authors' inference code does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import jinja2
import jinja2.sandbox

from pacore_graph.clients.base import ChatMessage
from pacore_graph.errors import ConfigError
from pacore_graph.messages import is_text_only, last_user_index, text_of

__all__ = [
    "CITATION_PATTERNS",
    "REFERENCE_TEMPLATE",
    "build_prompt",
    "cited_references",
    "last_user_content",
    "normalize_problem",
    "render_references",
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
    """The text of the last user message: the 'original problem' the template quotes."""
    content = messages[_user_turn(messages)].get("content")
    if not is_text_only(content):
        raise ConfigError("the last user message must be text (a string or text parts only)")
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
        raise ConfigError("the problem is empty (the last user message has no text); give the question to solve")
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
    the last user message is replaced by the rendered template; system messages and earlier turns are kept.
    """
    copied = [dict(m) for m in messages]
    if not references:
        return copied
    copied[_user_turn(copied)]["content"] = render_references(last_user_content(copied), references, template)
    return copied


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
