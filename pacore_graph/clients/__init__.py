"""Model backends: the ``ChatBackend`` protocol and its implementations."""

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
