"""pacore-graph: PaCoRe (Parallel Coordinated Reasoning) as an embeddable LangGraph graph.

Each round samples K trajectories in parallel, compacts each to its conclusion, and feeds the conclusions to
the next round as reference responses; a final single trajectory gives the answer::

    from pacore_graph import VLLMClient, build_pacore_graph

    async with VLLMClient("http://127.0.0.1:8000/v1") as client:
        graph = build_pacore_graph(client, "32,4")
        state = await graph.ainvoke({"problem": "What is 17 * 23?"})
        print(state["answer"], state["usage"]["effective_ttc_tokens"])
"""

from typing import TYPE_CHECKING

from pacore_graph._lazy import lazy_exports

if TYPE_CHECKING:
    from pacore_graph.clients.balanced import BalancedBackend
    from pacore_graph.clients.base import ChatBackend, ChatResult, Completion, SamplingParams, TokenUsage, ToolCall
    from pacore_graph.clients.langchain import LangChainBackend
    from pacore_graph.clients.streaming import ChatChunk, StreamingChatBackend
    from pacore_graph.clients.vllm import VLLMClient
    from pacore_graph.clients.wrapper import WrapperBackend, supports_streaming
    from pacore_graph.compaction import CompactionPolicy, compact, conclusion_of
    from pacore_graph.config import FailurePolicy, PaCoReConfig
    from pacore_graph.durable import open_checkpointer, run_durable
    from pacore_graph.errors import (
        BackendError,
        ConfigError,
        ConnectError,
        ContextBudgetError,
        EmptyRoundError,
        GraphOutputError,
        PaCoReError,
        ProtocolError,
        QuorumError,
        RequestTooLargeError,
        RoundError,
        ScheduleError,
        UpstreamError,
        UpstreamTimeoutError,
    )
    from pacore_graph.events import (
        RoundCompacted,
        RoundStarted,
        RunFinished,
        SynthesisDelta,
        TrajectoryFinished,
        parse_event,
        stream_events,
    )
    from pacore_graph.extract import (
        ExtractionPolicy,
        Vote,
        extract_answer,
        extract_boxed,
        majority_vote,
        normalize_answer,
    )
    from pacore_graph.graph import build_pacore_graph
    from pacore_graph.media import image_part
    from pacore_graph.prompts import REFERENCE_TEMPLATE, build_prompt, normalize_problem, render_references
    from pacore_graph.result import PaCoReResult, RoundRow, RunUsage
    from pacore_graph.run import run_graph, stream_run
    from pacore_graph.schedule import PRESETS, Schedule
    from pacore_graph.structured import ResponseFormat
    from pacore_graph.tool_calls import ToolOptions, ToolSpec, tool_options
    from pacore_graph.trace import Trace, TraceRecorder, record_run

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "REFERENCE_TEMPLATE",
    "BackendError",
    "BalancedBackend",
    "ChatBackend",
    "ChatChunk",
    "ChatResult",
    "CompactionPolicy",
    "Completion",
    "ConfigError",
    "ConnectError",
    "ContextBudgetError",
    "EmptyRoundError",
    "ExtractionPolicy",
    "FailurePolicy",
    "GraphOutputError",
    "LangChainBackend",
    "PaCoReConfig",
    "PaCoReError",
    "PaCoReResult",
    "ProtocolError",
    "QuorumError",
    "RequestTooLargeError",
    "ResponseFormat",
    "RoundCompacted",
    "RoundError",
    "RoundRow",
    "RoundStarted",
    "RunFinished",
    "RunUsage",
    "SamplingParams",
    "Schedule",
    "ScheduleError",
    "StreamingChatBackend",
    "SynthesisDelta",
    "TokenUsage",
    "ToolCall",
    "ToolOptions",
    "ToolSpec",
    "Trace",
    "TraceRecorder",
    "TrajectoryFinished",
    "UpstreamError",
    "UpstreamTimeoutError",
    "VLLMClient",
    "Vote",
    "WrapperBackend",
    "build_pacore_graph",
    "build_prompt",
    "compact",
    "conclusion_of",
    "extract_answer",
    "extract_boxed",
    "image_part",
    "majority_vote",
    "normalize_answer",
    "normalize_problem",
    "open_checkpointer",
    "parse_event",
    "record_run",
    "render_references",
    "run_durable",
    "run_graph",
    "stream_events",
    "stream_run",
    "supports_streaming",
    "tool_options",
]

# The names load on first use (see pacore_graph._lazy); the imports above are for type checkers.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "pacore_graph.clients.balanced": ["BalancedBackend"],
            "pacore_graph.clients.base": [
                "ChatBackend",
                "ChatResult",
                "Completion",
                "SamplingParams",
                "TokenUsage",
                "ToolCall",
            ],
            "pacore_graph.clients.langchain": ["LangChainBackend"],
            "pacore_graph.clients.streaming": ["ChatChunk", "StreamingChatBackend"],
            "pacore_graph.clients.vllm": ["VLLMClient"],
            "pacore_graph.clients.wrapper": ["WrapperBackend", "supports_streaming"],
            "pacore_graph.compaction": ["CompactionPolicy", "compact", "conclusion_of"],
            "pacore_graph.config": ["FailurePolicy", "PaCoReConfig"],
            "pacore_graph.durable": ["open_checkpointer", "run_durable"],
            "pacore_graph.errors": [
                "BackendError",
                "ConfigError",
                "ConnectError",
                "ContextBudgetError",
                "EmptyRoundError",
                "GraphOutputError",
                "PaCoReError",
                "ProtocolError",
                "QuorumError",
                "RequestTooLargeError",
                "RoundError",
                "ScheduleError",
                "UpstreamError",
                "UpstreamTimeoutError",
            ],
            "pacore_graph.events": [
                "RoundCompacted",
                "RoundStarted",
                "RunFinished",
                "SynthesisDelta",
                "TrajectoryFinished",
                "parse_event",
                "stream_events",
            ],
            "pacore_graph.extract": [
                "ExtractionPolicy",
                "Vote",
                "extract_answer",
                "extract_boxed",
                "majority_vote",
                "normalize_answer",
            ],
            "pacore_graph.graph": ["build_pacore_graph"],
            "pacore_graph.media": ["image_part"],
            "pacore_graph.prompts": ["REFERENCE_TEMPLATE", "build_prompt", "normalize_problem", "render_references"],
            "pacore_graph.result": ["PaCoReResult", "RoundRow", "RunUsage"],
            "pacore_graph.run": ["run_graph", "stream_run"],
            "pacore_graph.schedule": ["PRESETS", "Schedule"],
            "pacore_graph.tool_calls": ["ToolOptions", "ToolSpec", "tool_options"],
            "pacore_graph.structured": ["ResponseFormat"],
            "pacore_graph.trace": ["Trace", "TraceRecorder", "record_run"],
        },
    )
