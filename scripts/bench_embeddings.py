#!/usr/bin/env python3
"""Embeddings/s: the served ONNX int8 route vs the sentence-transformers-equivalent torch fp32.

Same model (all-MiniLM-L6-v2), same thread count, same sentences, same batch size, both with
mean pooling and L2 normalisation; rounds alternate (onnx, torch, onnx, torch ...) so noise
on a shared machine hits both alike, and the best round of each is reported. Also reports the
cosine agreement of the int8 vectors with the fp32 ones. Prints a markdown table.

    .venv/bin/python scripts/bench_embeddings.py [--n 1000] [--batch 32] [--threads 2] [--rounds 2]

torch and transformers come from the ``train`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from datetime import datetime
from importlib.metadata import version

import numpy as np

from concierge.models import locate
from concierge.models.embeddings import OnnxEmbeddingEngine

SUBJECTS = [
    "my order",
    "the parcel",
    "this jacket",
    "the refund",
    "our reservation",
    "the blue sneakers",
    "a gift card",
    "the warranty",
    "my account",
    "the return label",
]
VERBS = [
    "has not arrived",
    "was charged twice",
    "is the wrong size",
    "needs to be cancelled",
    "should be exchanged",
    "looks damaged",
    "was delivered to the wrong address",
    "is still pending",
]
TAILS = [
    "",
    " since last Tuesday",
    " and I need it before the weekend",
    ", can you help?",
    " even though the tracking page says otherwise",
    ". What are my options under your policy?",
    " and the support chat did not answer me yesterday evening when I asked about it",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Support-style sentences of varied length (5 to ~40 tokens)."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)}{rng.choice(TAILS)}" for _ in range(n)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    texts = sentences(args.n)
    onnx = OnnxEmbeddingEngine(
        locate.minilm_onnx(), locate.minilm_tokenizer(), batch_size=args.batch, threads=args.threads
    )
    folder = str(locate.minilm_dir())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()

    def run_torch(batch_texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch_texts), args.batch):
                enc = tokenizer(
                    batch_texts[start : start + args.batch],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out)

    # warm-up (first-call allocations, lazy init)
    onnx.embed(texts[: args.batch])
    run_torch(texts[: args.batch])

    best = {"onnx": float("inf"), "torch": float("inf")}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        started = time.perf_counter()
        vectors["onnx"] = onnx.embed_array(texts)
        best["onnx"] = min(best["onnx"], time.perf_counter() - started)
        started = time.perf_counter()
        vectors["torch"] = run_torch(texts)
        best["torch"] = min(best["torch"], time.perf_counter() - started)
    cos = (vectors["onnx"] * vectors["torch"]).sum(axis=1)
    _, n_tokens = onnx.embed(texts)

    print(f"## Embedding throughput ({datetime.now().strftime('%Y-%m-%d %H:%M')})\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(
        f"- python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"- {args.n} sentences ({n_tokens} tokens, {n_tokens / args.n:.1f} per sentence), batch {args.batch}, "
        f"{args.threads} threads, best of {args.rounds} alternating rounds\n"
    )
    print("| route | weights | seconds | embeddings/s | speed-up | cosine vs fp32 (mean / min) |")
    print("|---|---|---:|---:|---:|---|")
    print(
        f"| onnxruntime (served) | int8 | {best['onnx']:.2f} | {args.n / best['onnx']:.0f} | "
        f"{best['torch'] / best['onnx']:.2f}x | {cos.mean():.4f} / {cos.min():.4f} |"
    )
    print(
        f"| torch (sentence-transformers equivalent) | fp32 | {best['torch']:.2f} | "
        f"{args.n / best['torch']:.0f} | 1.00x | 1 / 1 |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
