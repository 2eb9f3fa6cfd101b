"""PaCoRe as one node of a larger LangGraph workflow.

A parent graph drafts a question, hands it to PaCoRe (a compiled subgraph sharing the ``problem`` and
``answer`` keys), then post-processes the answer. Run it against any OpenAI-compatible server::

    PACORE_BASE_URL=http://127.0.0.1:8000/v1 python examples/pacore_as_subgraph.py
"""

from __future__ import annotations

import asyncio
import os
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from pacore_graph import ChatBackend, CompactionPolicy, SamplingParams, VLLMClient, build_pacore_graph, run_graph
from pacore_graph.progress import RunProgress


class Workflow(TypedDict, total=False):
    topic: str
    problem: str
    answer: str
    report: str


def draft_question(state: Workflow) -> Workflow:
    """Turn the topic into a concrete problem for PaCoRe."""
    return {"problem": f"Compute {state['topic']}. Give the final number only."}


def write_report(state: Workflow) -> Workflow:
    """Use PaCoRe's answer downstream."""
    return {"report": f"{state['topic']} = {state['answer'].strip()}"}


def build_workflow(backend: ChatBackend):
    """The parent graph: draft → PaCoRe [2] → report."""
    # A small budget for a small model, which may ramble past it: keep what it cut off rather than fail the round.
    pacore = build_pacore_graph(
        backend, [2], params=SamplingParams(max_tokens=256), compaction=CompactionPolicy(truncated="keep")
    )
    graph = StateGraph(Workflow)
    graph.add_node("draft_question", draft_question)
    graph.add_node("pacore", pacore)
    graph.add_node("write_report", write_report)
    graph.add_edge(START, "draft_question")
    graph.add_edge("draft_question", "pacore")
    graph.add_edge("pacore", "write_report")
    graph.add_edge("write_report", END)
    return graph.compile()


async def report(backend: ChatBackend) -> str:
    """Run the workflow; PaCoRe's rounds show as plain lines on stderr (RunProgress), its report is returned."""
    result = await run_graph(build_workflow(backend), {"topic": "17 * 23"}, progress=RunProgress(rounds=1))
    return str(result.extra["report"])


async def main(backend: ChatBackend | None = None) -> str:
    """Run the workflow; without a backend, use the server at ``PACORE_BASE_URL``."""
    if backend is not None:
        return await report(backend)
    async with VLLMClient(os.environ.get("PACORE_BASE_URL", "http://127.0.0.1:8000/v1")) as client:
        return await report(client)


if __name__ == "__main__":
    print(asyncio.run(main()))
