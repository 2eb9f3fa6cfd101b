"""The built-in graphs for ``langgraph dev`` and LangGraph Studio (the repository's ``langgraph.json`` names them).

Each factory builds one built-in graph over a :class:`~pacore_graph.clients.vllm.VLLMClient` for the
OpenAI-compatible server in the environment::

    PACORE_BASE_URL=http://127.0.0.1:8000/v1   # required: the model server (vLLM, `pacore serve`'s upstream, ...)
    PACORE_MODEL=smollm2                       # optional: the model name (default: the server's first)
    PACORE_API_KEY=...                         # optional: its bearer key

The graphs take ``{"problem": "..."}`` or ``{"messages": [...]}`` (Studio's chat), stream the answer in the
``messages`` mode, and read per-run settings (schedule, sampling, failure quorum) from the run's context,
which Studio shows as a form (:class:`~pacore_graph.state.PaCoReContext`). The server supplies the
checkpointer. Factories return one compiled graph per name and process, over one shared client.
"""

from __future__ import annotations

import functools
import os

from pacore_graph.clients.vllm import VLLMClient
from pacore_graph.errors import ConfigError
from pacore_graph.graphs import load_graph

from .kinds import CompiledGraph

__all__ = [
    "backend_from_env",
    "pacore_code_verified",
    "pacore_high",
    "pacore_low",
    "pacore_medium",
    "pacore_no_compaction",
    "self_consistency",
    "sequential",
    "studio_graph",
]


@functools.cache
def backend_from_env() -> VLLMClient:
    """The client for ``PACORE_BASE_URL`` (and ``PACORE_MODEL``, ``PACORE_API_KEY``), made once per process."""
    base_url = os.environ.get("PACORE_BASE_URL")
    if not base_url:
        raise ConfigError(
            "PACORE_BASE_URL is not set: set it to the model server's API root (e.g. http://127.0.0.1:8000/v1) "
            "in the environment or the .env file langgraph.json names"
        )
    return VLLMClient(
        base_url, model=os.environ.get("PACORE_MODEL") or None, api_key=os.environ.get("PACORE_API_KEY") or None
    )


@functools.cache
def studio_graph(name: str) -> CompiledGraph:
    """The built-in graph ``name`` over :func:`backend_from_env`, built once per process."""
    return load_graph(name, backend_from_env())


def pacore_low() -> CompiledGraph:
    """``pacore-low``: PaCoRe with schedule [4]."""
    return studio_graph("pacore-low")


def pacore_medium() -> CompiledGraph:
    """``pacore-medium``: PaCoRe with schedule [16]."""
    return studio_graph("pacore-medium")


def pacore_high() -> CompiledGraph:
    """``pacore-high``: PaCoRe with schedule [32, 4]."""
    return studio_graph("pacore-high")


def pacore_no_compaction() -> CompiledGraph:
    """``pacore-no-compaction``: the ablation that forwards whole trajectories."""
    return studio_graph("pacore-no-compaction")


def pacore_code_verified() -> CompiledGraph:
    """``pacore-code-verified``: programs run on the sample tests before they are passed on."""
    return studio_graph("pacore-code-verified")


def self_consistency() -> CompiledGraph:
    """``self-consistency``: K samples and a majority vote."""
    return studio_graph("self-consistency")


def sequential() -> CompiledGraph:
    """``sequential``: one trajectory per round (ablation)."""
    return studio_graph("sequential")
