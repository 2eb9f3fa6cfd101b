"""Where the engine keeps its files: converted model, logs and the persistent engine's state.

Layout (all under :func:`cache_root`)::

    models/smollm2-135m-instruct/   converted HF model (override: PACORE_ENGINE_MODEL_DIR)
    engine/state.json               the persistent engine started by `pacore engine up`
    engine/logs/*.log               one log file per engine start and per conversion

``PACORE_CACHE_DIR`` moves the whole tree; otherwise it is ``$XDG_CACHE_HOME/pacore-graph``
or ``~/.cache/pacore-graph``. (platformdirs is not a dependency, and Linux is the target.)
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL_SLUG",
    "cache_root",
    "default_model_dir",
    "engine_dir",
    "new_log_path",
]

#: Folder name of the converted default model.
DEFAULT_MODEL_SLUG = "smollm2-135m-instruct"
_KEEP_LOGS = 20


def cache_root(cache_dir: Path | None = None) -> Path:
    """The root of pacore-graph's cache: ``cache_dir``, ``$PACORE_CACHE_DIR``, or the XDG cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PACORE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pacore-graph"


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted SmolLM2 model lives (``$PACORE_ENGINE_MODEL_DIR`` wins if set)."""
    env = os.environ.get("PACORE_ENGINE_MODEL_DIR")
    if env and cache_dir is None:
        return Path(env).expanduser()
    return cache_root(cache_dir) / "models" / DEFAULT_MODEL_SLUG


def engine_dir(cache_dir: Path | None = None) -> Path:
    """The folder of the engine's state file and logs."""
    return cache_root(cache_dir) / "engine"


def new_log_path(kind: str, cache_dir: Path | None = None) -> Path:
    """A fresh, unique log file path such as ``engine/logs/vllm-20250101-120000-1234.log``."""
    logs = engine_dir(cache_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # One file per start adds up (tests start several engines): keep the newest _KEEP_LOGS of a kind.
    old = sorted(logs.glob(f"{kind}-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)[_KEEP_LOGS:]
    for path in old:
        with contextlib.suppress(OSError):
            path.unlink()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return logs / f"{kind}-{stamp}-{os.getpid()}-{time.monotonic_ns() % 100000}.log"
