"""``EngineAddress``: where a vLLM server we started listens and what it serves, and a client for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacore_graph.clients.vllm import VLLMClient

__all__ = ["EngineAddress"]


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
        """A :class:`~pacore_graph.clients.vllm.VLLMClient` for this engine (kwargs pass through)."""
        from pacore_graph.clients.vllm import VLLMClient  # lazy: keep the engine importable alone

        kwargs.setdefault("model", self.model)
        return VLLMClient(self.base_url, **kwargs)
