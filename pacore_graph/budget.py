"""The context budget: make P(x, M) fit ``max_model_len - max_tokens`` before it is sent.

Counting: a backend that can tokenize (:class:`TokenCountingBackend`, e.g. ``VLLMClient`` through vLLM's
``/tokenize``, which gets the messages as they are, images included, and counts their tokens as the model's
processor does) gives the exact count; otherwise :func:`estimate_tokens` gives an estimate (UTF-8 bytes plus a
per-message allowance: byte-level BPE tokenizers never produce more tokens than bytes; plus
:data:`MEDIA_PART_TOKENS` for each non-text part, an image say, which has no text to measure and whose true cost
depends on the model and the picture's size). Either way the count says how it was had (``tokenizer`` or
``estimate``): it is on each round's ``RoundStarted`` event (``prompt_tokens``, ``tokens_counted``) and in every
budget error.

Trimming policy (:func:`fit_prompt`): while the prompt does not fit, drop the longest reference (it frees the
most room while keeping the most references; ties: the later one), and re-count. At least one reference is
always kept: a round that cannot fit even one, or a problem that does not fit on its own, fails with
:class:`~pacore_graph.errors.ContextBudgetError` before anything is sent. How many references were dropped is
reported on the round's ``RoundStarted`` event (``trimmed``).

Completion budget (:func:`completion_budget`, settings ``token_budget``): with ``"fit"`` (the default) every
request's ``max_tokens`` is what fits, the context minus the prompt's tokens, capped by the sampling's
``max_tokens`` or, when that is unset, by the backend's default cap (the embedded engine's
:data:`~pacore_graph.engine.address.DEFAULT_ENGINE_MAX_TOKENS`, so a 135M model on a CPU cannot ramble for
minutes). The context is ``max_model_len`` when set, else what the server reports (:class:`ContextReportingBackend`,
vLLM's ``/v1/models`` ``max_model_len``), used only when the server also counts the prompt's tokens: an
estimate is an upper bound and could starve the completion. A ``max_tokens`` the server's context can never
hold is sent as what fits (logged at debug); one over a ``max_model_len`` you set is your own contradiction and
fails as before. With ``"none"`` requests carry the sampling's ``max_tokens`` as given (none: the server's own
default, usually the rest of its context).

Request size (:func:`check_request_size`): the JSON of a request's messages (images included, base64) may not
exceed ``max_request_bytes`` (:class:`~pacore_graph.config.PaCoReConfig`, default
:data:`DEFAULT_MAX_REQUEST_BYTES`); a round that would send a larger one fails with
:class:`~pacore_graph.errors.RequestTooLargeError` before any of its requests is sent, saying how much the
round would send in all (its requests × the body size). Every request carries each image once: P(x, M) keeps
one copy of each non-text part (see :mod:`pacore_graph.prompts`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from pacore_graph.clients.base import ChatMessage
from pacore_graph.errors import ContextBudgetError, RequestTooLargeError
from pacore_graph.messages import non_text_parts, text_of
from pacore_graph.prompts import build_prompt

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MEDIA_PART_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "ContextReportingBackend",
    "FittedPrompt",
    "RoundBudget",
    "TokenCountingBackend",
    "check_request_size",
    "completion_budget",
    "count_tokens",
    "default_max_tokens",
    "estimate_tokens",
    "fit_prompt",
    "media_parts",
    "plan_round",
    "request_bytes",
    "server_context",
]

_log = logging.getLogger(__name__)

#: Tokens allowed per message for the chat template's role markers and separators in the estimate.
MESSAGE_OVERHEAD_TOKENS = 8

#: Tokens the estimate allows for each non-text part (an image, an audio clip): a typical photo costs a few
#: hundred to a few thousand tokens in today's vision-language models (Qwen2.5-VL: one per 28×28 pixels).
MEDIA_PART_TOKENS = 2048

#: The default ``max_request_bytes``: 32 MiB of JSON per request.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


@runtime_checkable
class TokenCountingBackend(Protocol):
    """A backend that can count a chat prompt's tokens exactly (an optional capability)."""

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's token count with the chat template applied, or None when the server cannot tell."""
        ...


@runtime_checkable
class ContextReportingBackend(Protocol):
    """A backend that can tell its model's context length (an optional capability)."""

    async def context_length(self) -> int | None:
        """The served model's context in tokens (vLLM's ``max_model_len``), or None when the server does not say."""
        ...


async def server_context(backend: object) -> int | None:
    """The context the backend's server reports, or None (no such capability, or the server does not say)."""
    if isinstance(backend, ContextReportingBackend):
        return await backend.context_length()
    return None


def default_max_tokens(backend: object) -> int | None:
    """The backend's default ``max_tokens`` cap for requests whose sampling sets none (``default_max_tokens``)."""
    cap = getattr(backend, "default_max_tokens", None)
    return cap if isinstance(cap, int) and cap > 0 else None


def completion_budget(requested: int | None, cap: int | None, room: int | None, *, what: str) -> int | None:
    """A request's ``max_tokens``: ``requested`` (else ``cap``), at most ``room`` (what fits; None: unknown).

    None when there is nothing to cap with (no request, no cap, unknown room): the server's default applies.
    """
    wanted = requested if requested is not None else cap
    if room is None:
        return wanted
    room = max(room, 1)
    if wanted is None:
        return room
    if wanted > room:
        _log.debug("%s: max_tokens %d does not fit the context; sending max_tokens %d (what fits)", what, wanted, room)
        return room
    return wanted


def media_parts(messages: Sequence[ChatMessage]) -> int:
    """How many non-text parts (images, audio, ...) the messages hold."""
    return sum(len(non_text_parts(message.get("content"))) for message in messages)


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A token estimate: UTF-8 bytes of every text, an allowance per message, and one per non-text part."""
    total = 0
    for message in messages:
        content = message.get("content")
        total += len(text_of(content).encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS
        total += MEDIA_PART_TOKENS * len(non_text_parts(content))  # no text to measure: never count it as zero
    return total + MESSAGE_OVERHEAD_TOKENS  # the generation prompt


Counted = Literal["tokenizer", "estimate"]


async def count_tokens(backend: object, messages: Sequence[ChatMessage]) -> tuple[int, Counted]:
    """The prompt's token count and how it was had: ``"tokenizer"`` (the server's) or ``"estimate"``."""
    if isinstance(backend, TokenCountingBackend):
        exact = await backend.count_tokens(messages)
        if exact is not None:
            return exact, "tokenizer"
    return estimate_tokens(messages), "estimate"


def _how(how: str, messages: Sequence[ChatMessage]) -> str:
    """How a count was had, in words, naming the per-part allowance when an estimate includes one."""
    media = media_parts(messages)
    if how != "estimate" or not media:
        return how
    return f"estimate, counting {media} non-text part(s) as {MEDIA_PART_TOKENS:,} tokens each"


class FittedPrompt(NamedTuple):
    """P(x, M) fitted to the context, how many references were dropped, and its token count and how it was had."""

    prompt: list[dict[str, Any]]
    trimmed: int
    tokens: int
    counted: Counted


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
    clamp: bool = False,
    counted: tuple[int, Counted] | None = None,
) -> FittedPrompt:
    """P(x, M) trimmed to fit ``max_model_len - max_tokens`` (see the module docstring); how many were dropped;
    and the count.

    ``prompt`` is P(x, M) already rendered, if the caller has it: it is rendered again only when trimming.
    With ``clamp`` (a context the server reported), a ``max_tokens`` that leaves no room is not an error: the
    prompt is fitted to the whole context and the completion gets what is left (:func:`completion_budget`).
    ``counted`` is ``prompt``'s count if the caller already has it.
    """
    if clamp and max_tokens is not None and max_tokens >= max_model_len:
        max_tokens = None
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
        count, how = counted if counted is not None else await count_tokens(backend, prompt)
        counted = None
        if count <= room:
            return FittedPrompt(prompt, len(references) - len(kept), count, how)
        if len(kept) <= 1:
            alone = "the problem alone" if not kept else "the problem with a single reference"
            raise ContextBudgetError(
                f"{what}: {alone} is {count:,} tokens ({_how(how, prompt)}), over the room of {room:,} "
                f"(max_model_len {max_model_len:,} - max_tokens {max_tokens or 1:,}); nothing was sent. "
                "Shorten the problem, lower max_tokens, or use a model with a longer context"
            )
        longest = max(range(len(kept)), key=lambda i: (len(kept[i]), i))
        del kept[longest]
        prompt = build_prompt(conversation, kept, template)


class RoundBudget(NamedTuple):
    """One round's prompt fitted to the context (as :class:`FittedPrompt`; ``tokens``/``counted`` None when it was
    not fitted) and the ``max_tokens`` its requests get (None: the sampling's, as given)."""

    prompt: list[dict[str, Any]]
    trimmed: int
    tokens: int | None
    counted: Counted | None
    max_tokens: int | None


async def plan_round(
    backend: object,
    conversation: list[dict[str, Any]],
    references: Sequence[str],
    template: str,
    *,
    prompt: list[dict[str, Any]],
    max_model_len: int | None,
    max_tokens: int | None,
    token_budget: Literal["fit", "none"],
    what: str,
) -> RoundBudget:
    """Fit a round's prompt and set its completion budget, as the module docstring says (the ``plan`` node's).

    ``max_model_len`` is the one you set (a hard limit), None to use the server's; ``max_tokens`` the round's
    sampling's; ``token_budget`` the settings' (``"none"``: fit only to a ``max_model_len`` you set, and send
    ``max_tokens`` as given).
    """
    fit = token_budget == "fit"
    cap = default_max_tokens(backend) if fit else None
    context, reported, first = max_model_len, False, None
    if context is None and fit:
        # The server's context counts only with the server's own count: an estimate could starve the reply.
        context, reported = await server_context(backend), True
        if context is not None:
            first = await count_tokens(backend, prompt)
            context = context if first[1] == "tokenizer" else None
    trimmed, tokens, counted = 0, None, None
    if context is not None:
        prompt, trimmed, tokens, counted = await fit_prompt(
            backend,
            conversation,
            references,
            template,
            max_model_len=context,
            max_tokens=max_tokens if max_tokens is not None else cap,
            what=what,
            prompt=prompt,
            clamp=reported or max_tokens is None,  # only a max_model_len you set, with your max_tokens, is strict
            counted=first,
        )
    if not fit:
        return RoundBudget(prompt, trimmed, tokens, counted, max_tokens)
    room = context - tokens if context is not None and tokens is not None else None
    return RoundBudget(prompt, trimmed, tokens, counted, completion_budget(max_tokens, cap, room, what=what))


def request_bytes(messages: Sequence[ChatMessage]) -> int:
    """The size of a request's messages as JSON, as the client sends them (images as their base64 text)."""
    return len(json.dumps([dict(m) for m in messages]).encode("utf-8"))


def check_request_size(messages: Sequence[ChatMessage], requests: int, *, max_request_bytes: int, what: str) -> int:
    """The messages' JSON size; raise :class:`RequestTooLargeError` (nothing sent) when it is over the limit.

    ``requests`` is how many requests of these messages the round sends, to say how much it would send in all.
    """
    size = request_bytes(messages)
    if size > max_request_bytes:
        raise RequestTooLargeError(
            f"{what}: each request would be {_mb(size)} of JSON (images included), over max_request_bytes "
            f"{_mb(max_request_bytes)}; {requests} request(s) would send {_mb(size * requests)} in all. Nothing of "
            "it was sent: send smaller images, or raise max_request_bytes (CLI --max-request-bytes) if the server "
            "takes larger bodies"
        )
    return size


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB ({size:,} bytes)"
