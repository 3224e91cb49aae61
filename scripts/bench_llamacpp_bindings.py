"""Benchmark: the two Python bindings of llama.cpp on the embedded default model.

``xllamacpp`` (what concierge uses: a prebuilt wheel that runs llama-server's OpenAI layer in-process)
against ``llama-cpp-python`` (compiles llama.cpp at install time). llama-cpp-python is not a project
dependency, so it lives in a separate virtualenv given with ``--llama-cpp-python``::

    python3 -m venv /tmp/venv-lcp && /tmp/venv-lcp/bin/pip install llama-cpp-python   # ~5 min compile
    .venv/bin/python scripts/bench_llamacpp_bindings.py --llama-cpp-python /tmp/venv-lcp/bin/python

Each binding runs in its own process, alternating, with the same GGUF, threads, prompt and greedy
decoding of 128 tokens; reported: load seconds, cold time to first token (first request, prompt not
cached), and decode tokens/s (tokens after the first / time after the first), median over requests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

PROMPT = "Write a friendly greeting for a customer support chat, then describe our return policy in detail."

_XLLAMACPP = """
import json, sys, time
from concierge.models.llamacpp import LlamaCppEngine
gguf, tokens, requests, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
engine = LlamaCppEngine(gguf, n_ctx=2048, n_threads=threads, n_parallel=1, reasoning_format="none")
load = time.perf_counter() - start
def stream():
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens, "temperature": 0.0,
            "stream": True}
    for chunk in engine.stream_chat(body):
        for choice in chunk.get("choices", []):
            if choice.get("delta", {}).get("content"):
                yield
"""

_LLAMA_CPP_PYTHON = """
import json, sys, time
from llama_cpp import Llama
gguf, tokens, requests, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, verbose=False, seed=0)
load = time.perf_counter() - start
def stream():
    messages = [{"role": "user", "content": PROMPT}]
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=tokens, stream=True, temperature=0.0):
        if chunk["choices"][0]["delta"].get("content"):
            yield
"""

_MEASURE = """
results = []
for _ in range(requests):
    t0 = time.perf_counter(); first = None; n = 0
    for _ in stream():
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    results.append({"tokens": n, "ttft": first, "decode": (n - 1) / (total - first) if n > 1 else 0.0})
print(json.dumps({"load": load, "results": results}))
"""


def run(python: str, body: str, gguf: Path, tokens: int, requests: int, threads: int) -> dict:
    code = f"PROMPT = {PROMPT!r}\n" + body + _MEASURE
    out = subprocess.run(
        [python, "-c", code, str(gguf), str(tokens), str(requests), str(threads)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-cpp-python", required=True, help="python interpreter that has llama-cpp-python")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from concierge.models.locate import smollm2_gguf

    gguf = smollm2_gguf()
    runs: dict[str, list[dict]] = {"xllamacpp": [], "llama-cpp-python": []}
    for _ in range(args.rounds):
        runs["xllamacpp"].append(run(sys.executable, _XLLAMACPP, gguf, args.tokens, args.requests, args.threads))
        runs["llama-cpp-python"].append(
            run(args.llama_cpp_python, _LLAMA_CPP_PYTHON, gguf, args.tokens, args.requests, args.threads)
        )
    print(
        f"Machine: {platform.machine()}, {args.threads} threads, Python {platform.python_version()}; "
        f"date {date.today()}; {gguf.name}, {args.tokens} tokens greedy, {args.requests} requests x "
        f"{args.rounds} rounds.\n"
    )
    print("| binding | load s | cold TTFT ms (first request) | decode tokens/s (median) |")
    print("|---|---:|---:|---:|")
    for name, rounds in runs.items():
        load = statistics.median(r["load"] for r in rounds)
        cold = statistics.median(r["results"][0]["ttft"] for r in rounds) * 1000
        decode = statistics.median(x["decode"] for r in rounds for x in r["results"])
        print(f"| {name} | {load:.2f} | {cold:.0f} | {decode:.1f} |")


if __name__ == "__main__":
    main()
