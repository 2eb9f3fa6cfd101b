"""``EngineAddress``: where a vLLM server we started listens and what it serves, and a client for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacore_graph.clients.vllm import VLLMClient

__all__ = ["DEFAULT_ENGINE_MAX_TOKENS", "EngineAddress"]

#: The ``max_tokens`` cap of requests to the engine's default model (SmolLM2-135M) whose sampling sets none
#: (:mod:`pacore_graph.budget`): on 2 CPU cores the model writes ~30 tokens/s per sequence (4 explorers together
#: ~125 tokens/s, the lone synthesis ~33: BENCHMARKS.md) and often rambles to the end of its 8k context, so
#: without a cap one README command ran for over 10 minutes. With 512, a round lasts ~15-20 s and
#: ``pacore run ... -s 4,2`` about a minute after the engine's start.
#: ``--max-tokens N`` (or ``max_tokens=N``) raises it; ``--max-tokens none`` removes every cap.
DEFAULT_ENGINE_MAX_TOKENS = 512


@dataclass(frozen=True)
class EngineAddress:
    """A vLLM server we started, as both a live process and the persistent engine's state file describe it.

    Attributes:
        pid: the API server's pid; it leads its own process group, so it is also the pgid.
        host, port: where it listens.
        model: the served model name to put in requests.
        model_path: what vLLM loads (a folder or a hub name).
        log_path: the server's combined stdout/stderr.
        started_at: wall-clock start time (``time.time()``).
    """

    pid: int
    host: str
    port: int
    model: str
    model_path: str
    log_path: Path
    started_at: float

    @property
    def base_url(self) -> str:
        """The OpenAI API root, e.g. ``http://127.0.0.1:8000/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def client(self, **kwargs: Any) -> VLLMClient:
        """A :class:`~pacore_graph.clients.vllm.VLLMClient` for this engine (kwargs pass through).

        For the default model its ``default_max_tokens`` is :data:`DEFAULT_ENGINE_MAX_TOKENS`.
        """
        from pacore_graph.clients.vllm import VLLMClient  # lazy: keep the engine importable alone
        from pacore_graph.engine.launcher import DEFAULT_SERVED_NAME

        kwargs.setdefault("model", self.model)
        if self.model == DEFAULT_SERVED_NAME:
            kwargs.setdefault("default_max_tokens", DEFAULT_ENGINE_MAX_TOKENS)
        return VLLMClient(self.base_url, **kwargs)
