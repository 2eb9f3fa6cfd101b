"""The context budget: make P(x, M) fit ``max_model_len - max_tokens`` before it is sent.

Counting: a backend that can tokenize (:class:`TokenCountingBackend`, e.g. ``VLLMClient`` through vLLM's
``/tokenize``) gives the exact count; otherwise :func:`estimate_tokens` gives a conservative one (UTF-8 bytes
plus a per-message allowance: byte-level BPE tokenizers never produce more tokens than bytes).

Trimming policy (:func:`fit_prompt`): while the prompt does not fit, drop the longest reference (it frees the
most room while keeping the most references; ties: the later one), and re-count. At least one reference is
always kept: a round that cannot fit even one, or a problem that does not fit on its own, fails with
:class:`~pacore_graph.errors.ContextBudgetError` before anything is sent. How many references were dropped is
reported on the round's ``RoundStarted`` event (``trimmed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pacore_graph.clients.base import ChatMessage
from pacore_graph.errors import ContextBudgetError
from pacore_graph.messages import text_of
from pacore_graph.prompts import build_prompt

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "TokenCountingBackend", "count_tokens", "estimate_tokens", "fit_prompt"]

#: Tokens allowed per message for the chat template's role markers and separators in the estimate.
MESSAGE_OVERHEAD_TOKENS = 8


@runtime_checkable
class TokenCountingBackend(Protocol):
    """A backend that can count a chat prompt's tokens exactly (an optional capability)."""

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's token count with the chat template applied, or None when the server cannot tell."""
        ...


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A conservative token count: UTF-8 bytes of every text, plus an allowance per message."""
    total = 0
    for message in messages:
        total += len(text_of(message.get("content")).encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS
    return total + MESSAGE_OVERHEAD_TOKENS  # the generation prompt


async def count_tokens(backend: object, messages: Sequence[ChatMessage]) -> tuple[int, str]:
    """The prompt's token count and how it was had: ``"tokenizer"`` (the server's) or ``"estimate"``."""
    if isinstance(backend, TokenCountingBackend):
        exact = await backend.count_tokens(messages)
        if exact is not None:
            return exact, "tokenizer"
    return estimate_tokens(messages), "estimate"


async def fit_prompt(
    backend: object,
    conversation: list[dict[str, Any]],
    references: Sequence[str],
    template: str,
    *,
    max_model_len: int,
    max_tokens: int | None,
    what: str,
    prompt: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """P(x, M) trimmed to fit ``max_model_len - max_tokens`` (see the module docstring); and how many were dropped.

    ``prompt`` is P(x, M) already rendered, if the caller has it: it is rendered again only when trimming.
    """
    room = max_model_len - (max_tokens if max_tokens is not None else 1)
    if room <= 0:
        raise ContextBudgetError(
            f"{what}: max_tokens {max_tokens} leaves no room for a prompt in max_model_len {max_model_len}; "
            "nothing was sent. Lower max_tokens"
        )
    kept = list(references)
    if prompt is None:
        prompt = build_prompt(conversation, kept, template)
    while True:
        count, how = await count_tokens(backend, prompt)
        if count <= room:
            return prompt, len(references) - len(kept)
        if len(kept) <= 1:
            alone = "the problem alone" if not kept else "the problem with a single reference"
            raise ContextBudgetError(
                f"{what}: {alone} is {count:,} tokens ({how}), over the room of {room:,} "
                f"(max_model_len {max_model_len:,} - max_tokens {max_tokens or 1:,}); nothing was sent. "
                "Shorten the problem, lower max_tokens, or use a model with a longer context"
            )
        longest = max(range(len(kept)), key=lambda i: (len(kept[i]), i))
        del kept[longest]
        prompt = build_prompt(conversation, kept, template)
