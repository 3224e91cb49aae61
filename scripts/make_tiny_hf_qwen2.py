#!/usr/bin/env python3
"""Write the tiny random Qwen2 Hugging Face folder that the vLLM tests serve.

    python scripts/make_tiny_hf_qwen2.py OUT_DIR [--seed N]

Runs with any Python that has torch and transformers (the project venv with the ``train``
extra, or .venv-vllm, where concierge itself is not installed: hence the ``src`` path below).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from concierge.models.tiny_hf import build_tiny_qwen2_hf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = build_tiny_qwen2_hf(args.out_dir, seed=args.seed)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
