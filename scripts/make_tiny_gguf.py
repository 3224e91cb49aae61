#!/usr/bin/env python3
"""Write the tiny random Qwen2 GGUF (and optionally a LoRA adapter for it) used by the tests.

    python scripts/make_tiny_gguf.py OUT.gguf [--seed N] [--lora ADAPTER.gguf]

Needs numpy and the ``gguf`` package (dev extra); no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from concierge.models.tiny_gguf import build_tiny_lora_gguf, build_tiny_qwen2_gguf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the model GGUF")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-ctx", type=int, default=2048, help="training context written in the metadata")
    parser.add_argument("--lora", type=Path, help="also write a random LoRA adapter for it here")
    args = parser.parse_args()
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("the gguf package is needed: pip install gguf", file=sys.stderr)
        return 2
    path = build_tiny_qwen2_gguf(args.out, seed=args.seed, n_ctx=args.n_ctx)
    print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    if args.lora:
        adapter = build_tiny_lora_gguf(args.lora, seed=args.seed + 1)
        print(f"{adapter} ({adapter.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
