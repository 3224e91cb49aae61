"""Gateway overhead and generation-efficiency benchmark (a script, not a timed test).

1. The default model (SmolLM2-135M-Instruct Q4_1) streamed from the SAME llama.cpp engine two
   ways, at 1 and 8 concurrent streams: directly from llama.cpp's own HTTP server (which
   xllamacpp runs inside the gateway process) and through the concierge gateway (auth,
   metering, metrics, format handling) in front of it. Both are OpenAI-compatible SSE read by
   the same client code in a separate process. At one stream, direct and gateway requests
   interleave one by one; at eight, whole rounds alternate (direct, gateway, direct ...), so the
   shared machine's noise hits both sides alike. Prompt caching is off on both paths (every
   request reads its whole prompt). Reports tokens/s and time-to-first-token p50/p95.
2. Generation tokens/s against this machine's memory-bandwidth limit: bytes of weights read
   per token (the GGUF's tensor bytes; SmolLM2 ties the output head to the embeddings, so
   all of them are read) vs a measured copy bandwidth.

Usage: .venv/bin/python scripts/bench_gateway.py [--rounds 3] [--tokens 64] [--requests 16] [--markdown OUT]
       [--latency-only (every endpoint family)] [--loop auto|asyncio|uvloop] [--http auto|h11|httptools]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from concierge.models.locate import smollm2_gguf

PROMPTS = [
    "Write a short product description for a waterproof hiking jacket.",
    "List three tips for choosing running shoes.",
    "Explain what a return policy is in two sentences.",
    "Describe a cozy reading nook.",
    "Suggest a gift for someone who loves cooking.",
    "What should I pack for a weekend camping trip?",
    "Write a friendly greeting for a customer support chat.",
    "Compare wool and cotton socks briefly.",
]


def request_body(index: int, tokens: int, model: str) -> dict:
    """One plain OpenAI body, sent alike to llama.cpp's own server and to the gateway.

    The gateway refuses llama.cpp's own fields (``ignore_eos``, ``cache_prompt``: docs/api.md), so
    neither side gets them: a stream may stop before ``tokens`` at end of text (the rates count the
    tokens each stream really produced), and every prompt is unique (its index leads it), so no
    request finds more of its prompt in the KV cache than the shared chat-template preamble, on
    either side.
    """
    prompt = f"Request {index}. {PROMPTS[index % len(PROMPTS)]}"
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def run_stream(client: httpx.Client, model: str, index: int, tokens: int) -> tuple[float, int, float]:
    """One streamed completion: (time to first content token, completion tokens, seconds)."""
    start = time.perf_counter()
    first = None
    count = 0
    with client.stream("POST", "/v1/chat/completions", json=request_body(index, tokens, model)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice.get("delta", {}).get("content") and first is None:
                    first = time.perf_counter() - start
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    return first or 0.0, count, time.perf_counter() - start


def measure(call, concurrency: int, tokens: int, requests: int = 16) -> dict:
    """`requests` streams, `concurrency` at a time; aggregate tokens/s and every stream's TTFT."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: call(i, tokens), range(requests)))
    wall = time.perf_counter() - started
    ttfts = [r[0] for r in results]
    return {"tokens": sum(r[1] for r in results), "wall": wall, "ttft": ttfts}


# The fixed cost per request of each endpoint family (--latency-only): (label, path, llama.cpp's body,
# the gateway's body, streamed). Both sides get the same 1-token work where llama.cpp serves that
# endpoint; llama.cpp has no counterpart of the gateway's embeddings (ONNX MiniLM here), so that row
# has a gateway figure only.
_SAY_HI = [{"role": "user", "content": "Say hi."}]
_CHAT = {"model": "chat", "messages": _SAY_HI, "max_tokens": 1, "temperature": 0}
_COMPLETION = {"model": "chat", "prompt": "Say hi.", "max_tokens": 1, "temperature": 0}
_RESPONSES = {"model": "chat", "input": "Say hi.", "max_output_tokens": 1, "temperature": 0}
_MESSAGES = {"model": "chat", "messages": _SAY_HI, "max_tokens": 1, "temperature": 0}
ENDPOINTS = [
    ("chat completions", "/v1/chat/completions", _CHAT, _CHAT, False),
    ("chat completions, streamed", "/v1/chat/completions", {**_CHAT, "stream": True}, {**_CHAT, "stream": True}, True),
    ("completions", "/v1/completions", _COMPLETION, _COMPLETION, False),
    ("completions, streamed", "/v1/completions", {**_COMPLETION, "stream": True}, {**_COMPLETION, "stream": True}, True),
    ("responses", "/v1/responses", _RESPONSES, _RESPONSES, False),
    ("responses, streamed", "/v1/responses", {**_RESPONSES, "stream": True}, {**_RESPONSES, "stream": True}, True),
    ("messages", "/v1/messages", _MESSAGES, _MESSAGES, False),
    ("messages, streamed", "/v1/messages", {**_MESSAGES, "stream": True}, {**_MESSAGES, "stream": True}, True),
    ("tokenize", "/tokenize", {"content": "Say hi."}, {"model": "chat", "prompt": "Say hi."}, False),
    ("embeddings (gateway only)", "/v1/embeddings", None, {"model": "embed", "input": "Say hi."}, False),
]


def request_latency(direct: httpx.Client, gateway: httpx.Client, n: int = 60) -> str:
    """Median / p95 wall time of a whole 1-token request of each endpoint family through each path
    (the fixed cost per request), direct and gateway alternating one by one."""

    def once(client: httpx.Client, path: str, body: dict, stream: bool) -> float | None:
        """Seconds for the whole answer; None for an error status or no answer within 20 s."""
        start = time.perf_counter()
        try:
            if stream:
                with client.stream("POST", path, json=body, timeout=20) as response:
                    for _ in response.iter_lines():
                        pass
                    ok = response.is_success
            else:
                ok = client.post(path, json=body, timeout=20).is_success
        except httpx.HTTPError:
            return None
        return time.perf_counter() - start if ok else None

    lines = ["| request (1 token) | direct p50 / p95 ms | gateway p50 / p95 ms | added p50 ms |", "|---|---|---|---:|"]
    for label, path, direct_body, gateway_body, stream in ENDPOINTS:
        d: list[float] = []
        g: list[float] = []
        direct_ok = direct_body is not None and once(direct, path, direct_body, stream) is not None
        if once(gateway, path, gateway_body, stream) is None:
            lines.append(f"| {label} | | gateway refused the request | |")
            continue
        for _ in range(n):
            if direct_ok:
                d.append(once(direct, path, direct_body, stream) or float("nan"))
            g.append(once(gateway, path, gateway_body, stream) or float("nan"))
        direct_cell = (f"{pct(d, 50):.1f} / {pct(d, 95):.1f}" if direct_ok else
                       "no counterpart" if direct_body is None else "llama.cpp gave no answer")
        added = f"{pct(g, 50) - pct(d, 50):.1f}" if direct_ok else ""
        lines.append(f"| {label} | {direct_cell} | {pct(g, 50):.1f} / {pct(g, 95):.1f} | {added} |")
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_child(config: Path, home: Path, port: int, info: Path, loop: str = "auto", http: str = "auto") -> None:
    """Child process: the gateway on `port`, plus the address and key of its llama.cpp server."""
    import uvicorn

    os.environ["CONCIERGE_HOME"] = str(home)
    from concierge import tenancy
    from concierge.gateway.app import create_app
    from concierge.gateway.settings import GatewaySettings
    from concierge.models.hub import ModelHub

    hub = ModelHub.from_config(config)
    engine = hub.engine("chat")
    key = tenancy.create_key("bench").key
    info.write_text(json.dumps({"key": key, "llama": engine.http_address, "llama_key": engine.http_api_key}))
    uvicorn.run(
        create_app(hub, GatewaySettings(max_queued=64)),
        host="127.0.0.1", port=port, log_level="warning", loop=loop, http=http,  # type: ignore[arg-type]
    )


def start_child(config: Path, home: Path, loop: str, http: str) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    info = home / "child.json"
    info.unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(config), str(home), str(port), str(info), loop, http],
        stdout=(home / "child.log").open("w"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if info.exists() and httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    child = json.loads(info.read_text())
    # llama.cpp's own HTTP listener can drop connections for a moment after start-up.
    for _ in range(300):
        try:
            headers = {"Authorization": f"Bearer {child['llama_key']}"}
            if httpx.get(child["llama"] + "/health", headers=headers, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    time.sleep(2)
    return proc, base, child


def copy_bandwidth_gbs(threads: int) -> float:
    """Read+write bandwidth of a large numpy copy split over `threads` threads (bytes moved / s)."""
    size = 256 * 1024 * 1024
    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts]

    def work(bound: tuple[int, int]) -> None:
        np.copyto(dst[bound[0]:bound[1]], src[bound[0]:bound[1]])

    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, bounds))
        elapsed = time.perf_counter() - start
        best = max(best, 2 * size / elapsed / 1e9)  # each byte is read once and written once
    return best


def gguf_tensor_bytes(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors)


def summarise(runs: list[dict]) -> dict:
    """Tokens/s (median over runs) and time-to-first-token p50/p95 over every stream of the runs."""
    tps = [r["tokens"] / r["wall"] for r in runs]
    ttft = [t for r in runs for t in r["ttft"]]
    return {"tps": statistics.median(tps), "p50": pct(ttft, 50), "p95": pct(ttft, 95)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16, help="streams per measurement")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument(
        "--latency-only", action="store_true",
        help="only time whole 1-token requests (streamed and not), direct vs gateway, alternating",
    )
    parser.add_argument("--loop", default="auto", help="uvicorn event loop for the gateway (auto = uvloop if installed)")
    parser.add_argument("--http", default="auto", help="uvicorn HTTP parser for the gateway (auto = httptools if installed)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(
            Path(args.child[0]), Path(args.child[1]), int(args.child[2]), Path(args.child[3]), args.child[4], args.child[5]
        )
        return

    gguf = smollm2_gguf()
    threads = os.cpu_count() or 2
    workdir = Path(tempfile.mkdtemp(prefix="concierge-bench-"))
    config = workdir / "deploy.yaml"
    config.write_text(f"models:\n  chat: {{model: smollm2-135m-instruct, gguf: {gguf}, n_ctx: 8192, n_parallel: 8, threads: {threads}}}\n"
                      "  embed: {model: all-minilm-l6-v2, embedded: minilm}\n")

    rows = []
    proc, base, child = start_child(config, workdir / "home", args.loop, args.http)
    llama = child["llama"] if child["llama"].startswith("http") else "http://" + child["llama"]
    # A fresh connection per stream on both sides: llama.cpp's listener drops idle keep-alive
    # connections, which a pooled client would then reuse and fail on.
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {child['key']}"}, timeout=300,
                          limits=limits) as gateway, \
             httpx.Client(base_url=llama, headers={"Authorization": f"Bearer {child['llama_key']}"}, timeout=300,
                          limits=limits) as direct:
            def via_direct(i: int, t: int) -> tuple[float, int, float]:
                return run_stream(direct, "chat", i, t)

            def via_gateway(i: int, t: int) -> tuple[float, int, float]:
                return run_stream(gateway, "chat", i, t)

            if args.latency_only:
                request_latency(direct, gateway, n=2)  # warm-up
                print(request_latency(direct, gateway))
                return
            measure(via_direct, 1, 8, requests=2)  # warm-up
            measure(via_gateway, 1, 8, requests=2)
            # One stream: direct and gateway requests interleave one by one (the order flips every pair),
            # so a slow moment on this shared machine hits both sides alike.
            direct_runs, gateway_runs = [], []
            for index in range(args.rounds * args.requests):
                pair = [(via_direct, direct_runs), (via_gateway, gateway_runs)]
                for call, runs in pair if index % 2 == 0 else pair[::-1]:
                    result = call(index, args.tokens)
                    runs.append({"tokens": result[1], "wall": result[2], "ttft": [result[0]]})
            rows.append((1, summarise(direct_runs), summarise(gateway_runs)))
            print(f"streams=1: direct {rows[-1][1]['tps']:.1f} tok/s, gateway {rows[-1][2]['tps']:.1f} tok/s", flush=True)
            for concurrency in (8,):
                direct_runs, gateway_runs = [], []
                for _ in range(args.rounds):
                    direct_runs.append(measure(via_direct, concurrency, args.tokens, args.requests))
                    gateway_runs.append(measure(via_gateway, concurrency, args.tokens, args.requests))
                    print(f"streams={concurrency}: direct {direct_runs[-1]['tokens'] / direct_runs[-1]['wall']:.1f} "
                          f"tok/s, gateway {gateway_runs[-1]['tokens'] / gateway_runs[-1]['wall']:.1f} tok/s", flush=True)

                rows.append((concurrency, summarise(direct_runs), summarise(gateway_runs)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    generated_tps = rows[0][1]["tps"]
    weight_bytes = gguf_tensor_bytes(gguf)
    bandwidth = copy_bandwidth_gbs(threads)
    bound_tps = bandwidth * 1e9 / weight_bytes

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {threads} cores, Python {platform.python_version()}; "
        f"date {date.today().isoformat()}; command `python scripts/bench_gateway.py --rounds {args.rounds} --tokens {args.tokens} --requests {args.requests}`.",
        "",
        "| streams | direct tokens/s | gateway tokens/s | throughput loss | direct TTFT p50 / p95 (ms) | gateway TTFT p50 / p95 (ms) | added p50 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency, d, g in rows:
        loss = (1 - g["tps"] / d["tps"]) * 100
        lines.append(
            f"| {concurrency} | {d['tps']:.1f} | {g['tps']:.1f} | {loss:.1f} % | {d['p50']:.0f} / {d['p95']:.0f} | "
            f"{g['p50']:.0f} / {g['p95']:.0f} | {g['p50'] - d['p50']:.1f} |"
        )
    lines += [
        "",
        f"Generation vs memory bandwidth: {weight_bytes / 1e6:.1f} MB of weights read per token; measured copy bandwidth "
        f"{bandwidth:.1f} GB/s ({threads} threads) gives a ceiling of {bound_tps:.0f} tokens/s; single-stream generation "
        f"ran at {generated_tps:.1f} tokens/s = {generated_tps / bound_tps * 100:.0f} % of that ceiling.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
