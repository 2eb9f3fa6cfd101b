"""LangChain tools: the sandboxed code runner, and PaCoRe itself as ``deep_reason(problem) -> answer``.

Both are ``langchain_core.tools.BaseTool`` objects, so any tool-calling agent (a LangGraph ``ToolNode`` loop,
``langchain.agents.create_agent``, ...) can call them::

    from pacore_graph.graphs import load_graph
    from pacore_graph.tools import make_code_runner_tool, make_deep_reason_tool

    tools = [make_deep_reason_tool(load_graph("pacore-low", backend)), make_code_runner_tool()]

``make_deep_reason_tool`` takes an already built graph (anything with ``ainvoke({"problem": ...})`` returning
``{"answer": ...}``), because tools sit below the graph registry and never import it. The tool works from
async agents (``ainvoke``) and sync ones (``invoke``: the graph's sync ``invoke`` when it has one, as the
built-in graphs do, else its ``ainvoke`` on :mod:`pacore_graph.bridge`'s loop).
"""

from __future__ import annotations

from typing import Any, Protocol

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from pacore_graph.bridge import run_sync

from .sandbox import DEFAULT_LIMITS, SandboxLimits, arun_python

__all__ = ["CodeRunnerInput", "DeepReasonInput", "ReasoningGraph", "make_code_runner_tool", "make_deep_reason_tool"]


class ReasoningGraph(Protocol):
    """What ``deep_reason`` needs of a graph: ``ainvoke({"problem": ...})`` returning a state with ``answer``."""

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        """Run the graph on one input."""
        ...


class CodeRunnerInput(BaseModel):
    """Arguments of the code runner tool."""

    code: str = Field(description="a complete Python 3 program; it reads stdin and prints to stdout")
    stdin: str = Field("", description="text fed to the program's standard input")


class DeepReasonInput(BaseModel):
    """Arguments of the deep reasoning tool."""

    problem: str = Field(description="the full problem statement, self-contained")


def make_code_runner_tool(
    limits: SandboxLimits = DEFAULT_LIMITS, *, name: str = "run_python", max_chars: int = 4000
) -> BaseTool:
    """A tool that runs a Python program in the sandbox and returns what happened as JSON text.

    The JSON has ``stdout``, ``stderr``, ``exit_code``, ``timed_out``, ``memory_exceeded``, ``output_truncated``
    and ``network_isolated``; stdout and stderr are cut to ``max_chars`` each so one run cannot flood the
    agent's context.
    """

    async def run(code: str, stdin: str = "") -> str:
        result = await arun_python(code, stdin, limits=limits)
        shown = result.model_copy(update={"stdout": result.stdout[:max_chars], "stderr": result.stderr[-max_chars:]})
        return shown.model_dump_json(
            include={
                "stdout",
                "stderr",
                "exit_code",
                "timed_out",
                "memory_exceeded",
                "output_truncated",
                "network_isolated",
            }
        )

    return StructuredTool.from_function(
        coroutine=run,
        name=name,
        description=(
            "Run a Python 3 program in an isolated sandbox (no network, time and memory limits) with the given "
            "stdin; returns its stdout, stderr, exit code and whether a limit was hit."
        ),
        args_schema=CodeRunnerInput,
    )


def make_deep_reason_tool(
    graph: ReasoningGraph,
    *,
    name: str = "deep_reason",
    description: str = (
        "Think very hard about a difficult, self-contained problem (math, logic, code) with many parallel "
        "reasoning attempts that are then reconciled; returns the final answer. Slow: use it for the hard part."
    ),
) -> BaseTool:
    """PaCoRe (or any graph with the same input and output) as a tool: ``deep_reason(problem) -> answer``."""

    async def deep_reason(problem: str) -> str:
        state = await graph.ainvoke({"problem": problem})
        return str(state["answer"]).strip()

    def deep_reason_sync(problem: str) -> str:
        invoke = getattr(graph, "invoke", None)
        state = invoke({"problem": problem}) if callable(invoke) else run_sync(graph.ainvoke({"problem": problem}))
        return str(state["answer"]).strip()

    return StructuredTool.from_function(
        func=deep_reason_sync, coroutine=deep_reason, name=name, description=description, args_schema=DeepReasonInput
    )
