"""Model backends: the ``ChatBackend`` protocol and its implementations."""

from typing import TYPE_CHECKING

from pacore_graph._lazy import lazy_exports

if TYPE_CHECKING:
    from pacore_graph.clients.balanced import BalancedBackend
    from pacore_graph.clients.base import (
        ChatBackend,
        ChatMessage,
        ChatResult,
        Completion,
        SamplingParams,
        TokenUsage,
    )
    from pacore_graph.clients.langchain import LangChainBackend
    from pacore_graph.clients.limiter import SequenceLimiter, request_priority
    from pacore_graph.clients.vllm import VLLMClient
    from pacore_graph.clients.wrapper import WrapperBackend, supports_streaming

__all__ = [
    "BalancedBackend",
    "ChatBackend",
    "ChatMessage",
    "ChatResult",
    "Completion",
    "LangChainBackend",
    "SamplingParams",
    "SequenceLimiter",
    "TokenUsage",
    "VLLMClient",
    "WrapperBackend",
    "request_priority",
    "supports_streaming",
]

# The names load on first use (see pacore_graph._lazy); the imports above are for type checkers.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "pacore_graph.clients.balanced": ["BalancedBackend"],
            "pacore_graph.clients.base": [
                "ChatBackend",
                "ChatMessage",
                "ChatResult",
                "Completion",
                "SamplingParams",
                "TokenUsage",
            ],
            "pacore_graph.clients.langchain": ["LangChainBackend"],
            "pacore_graph.clients.limiter": ["SequenceLimiter", "request_priority"],
            "pacore_graph.clients.vllm": ["VLLMClient"],
            "pacore_graph.clients.wrapper": ["WrapperBackend", "supports_streaming"],
        },
    )
