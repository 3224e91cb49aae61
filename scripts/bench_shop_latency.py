"""Shop turn latency on the embedded models: time to the cards and to the whole answer, per mode.

    PYTHONPATH=src .venv/bin/python scripts/bench_shop_latency.py --requests 20 --markdown

Each request of the people-written corpus (``tests/data/shop_requests_people.yaml``, the ``dev``
half by default: latency is not a tuning figure, but the ``test`` half stays unread) is one new
conversation, streamed as ``/v1/shop/chat`` with ``stream: true`` streams it
(``ShopAssistant.stream_answer``): "cards" is the time from the request to the
``ShopProducts`` event, "answer" to the final answer. Catalogues: the demo store the corpus was
written for (``generate_demo_store(seed=7, n_products=800)``, ``--demo-products`` for another size) and the τ² retail catalogue (read from
``--data``, never copied), each indexed with the hub's embedding model (MiniLM ONNX by default)
before the clock starts. Modes: ``query_model`` ``always`` (the model reads every request, the
rules fill in), ``auto`` (the model reads a request only when the rules find no certain category)
and ``never``; ``--answer-models``: the answer text is the model's, checked (``always``), or the
checked template's (``never``). Per-stage times come
from the answer's trace (``timings_ms``). Requests run one at a time: a shopper's wait, not
throughput. Models: the deployment's (``ModelHub.from_config``), i.e. SmolLM2-135M and MiniLM here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _catalogues(data: Path, demo_products: int = 800) -> dict[str, Any]:
    from concierge.shop.catalog import Catalog
    from concierge.shop.demo_store import generate_demo_store

    def demo() -> Any:
        products, _ = generate_demo_store(seed=7, n_products=demo_products, n_shoppers=200)
        return Catalog.from_records(products, tenant="bench", name="demo")

    out: dict[str, Any] = {"demo": demo}
    db_json = data / "tau2" / "retail" / "db.json"
    if db_json.is_file():
        from concierge.shop.tau2_adapter import tau2_catalog

        out["tau2"] = lambda: tau2_catalog(db_json)
    else:
        print(f"(τ² retail catalogue not found at {db_json}: skipped)", file=sys.stderr)
    return out


def run_turn(assistant: Any, text: str, earlier: list[dict[str, str]] | None = None,
             state: dict[str, Any] | None = None) -> dict[str, Any]:
    from concierge.shop.answer import ShopAnswer, ShopProducts

    started = time.perf_counter()
    cards_s = None
    final = None
    for item in assistant.stream_answer([*(earlier or []), {"role": "user", "content": text}], state=state):
        if isinstance(item, ShopProducts) and cards_s is None:
            cards_s = time.perf_counter() - started
        elif isinstance(item, ShopAnswer):
            final = item
    total_s = time.perf_counter() - started
    trace = dict(final.trace) if final is not None else {}
    return {"cards_s": cards_s if cards_s is not None else total_s, "answer_s": total_s,
            "model_calls": trace.get("model_calls"), "timings_ms": trace.get("timings_ms") or {},
            "text_source": (final.grounding or {}).get("text_source") if final is not None else None,
            "clarifying": bool(final and final.clarifying), "message": final.message if final else "",
            "state": final.state if final else None}


def main(argv: list[str] | None = None) -> int:
    default_data = os.environ.get("CONCIERGE_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(default_data), help="the shared data folder")
    ap.add_argument("--catalogs", default="demo,tau2")
    ap.add_argument("--modes", default="always,auto")
    ap.add_argument("--answer-models", default="always",
                    help="who writes the answer text, per run: always (the model, checked) and/or never (template)")
    ap.add_argument("--split", choices=("dev", "test", "all"), default="dev")
    ap.add_argument("--requests", type=int, default=20, help="requests per catalogue (the corpus's first N)")
    ap.add_argument("--demo-products", type=int, default=800,
                    help="demo store size (800: the corpus's store; make demo serves 3,000)")
    ap.add_argument("--config", type=Path, help="a deployment file (default: the embedded models)")
    ap.add_argument("--follow-up", default="",
                    help="a second turn in every conversation (e.g. 'anything cheaper?'), timed on its own")
    ap.add_argument("--json", type=Path, help="write every turn's figures here")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("CONCIERGE_HOME", tempfile.mkdtemp(prefix="concierge-shop-latency-"))

    from concierge.models.hub import ModelHub
    from concierge.shop.assistant import ShopAssistant, hub_embedder
    from concierge.shop.search import SearchIndex

    corpus = yaml.safe_load((ROOT / "tests" / "data" / "shop_requests_people.yaml").read_text())["requests"]
    makers = _catalogues(args.data, args.demo_products)
    hub = ModelHub.from_config(args.config)
    meta = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "command": "scripts/bench_shop_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "models": {c.alias: f"{c.catalogue_id or c.source} ({c.engine})" for c in hub.models()}}
    rows: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    try:
        for name in [c for c in args.catalogs.split(",") if c in makers]:
            catalog = makers[name]()
            t0 = time.perf_counter()
            index = SearchIndex.build(catalog, hub_embedder(hub))
            print(f"{name}: {len(catalog)} products indexed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            requests = [r for r in corpus if r["catalog"] == name and args.split in ("all", r["split"])]
            requests = requests[: args.requests]
            for mode, answer_model in [(m, a) for m in args.modes.split(",") for a in args.answer_models.split(",")]:
                assistant = ShopAssistant(hub, catalog, index, None, query_model=mode,
                                          answer_model=answer_model != "never")
                run_turn(assistant, "hello, I'm looking for a gift")  # warm the model's slot and caches
                results = []
                for req in requests:
                    result = run_turn(assistant, req["text"])
                    if args.follow_up:  # the second turn is the one timed
                        earlier = [{"role": "user", "content": req["text"]},
                                   {"role": "assistant", "content": result["message"]}]
                        result = run_turn(assistant, args.follow_up, earlier, result["state"])
                    result.pop("state", None)
                    results.append(result)
                    turns.append({"catalog": name, "mode": mode, "answer_model": answer_model, "id": req["id"],
                                  **result})
                stages: Counter[str] = Counter()
                for r in results:
                    stages.update({k: float(v) for k, v in r["timings_ms"].items() if isinstance(v, int | float)})
                row = {
                    "catalog": name, "products": len(catalog), "mode": mode, "answer_model": answer_model,
                    "n": len(results),
                    "cards_p50": _pct([r["cards_s"] for r in results], 0.5),
                    "cards_p95": _pct([r["cards_s"] for r in results], 0.95),
                    "answer_p50": _pct([r["answer_s"] for r in results], 0.5),
                    "answer_p95": _pct([r["answer_s"] for r in results], 0.95),
                    "model_calls": statistics.fmean(r["model_calls"] or 0 for r in results) if results else 0.0,
                    "stages_ms": {k: round(v / max(1, len(results)), 1) for k, v in stages.most_common()},
                    # whose text the shopper got: the model's, the model's second try, or the template
                    # after both failed the grounding and reading checks
                    "text_source": dict(Counter(str(r["text_source"]) for r in results)),
                }
                rows.append(row)
                print(f"{name:<6} {mode:<7} answer {answer_model:<6} n={row['n']:<3} cards p50 {row['cards_p50']:.2f} s p95 "
                      f"{row['cards_p95']:.2f} s | answer p50 {row['answer_p50']:.2f} s p95 {row['answer_p95']:.2f} s"
                      f" | model calls {row['model_calls']:.2f} | text {row['text_source']}"
                      f" | mean ms by stage {row['stages_ms']}", flush=True)
    finally:
        hub.close()
    meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(meta))
    if args.markdown:
        print("\n| catalogue | products | query understanding | answer model | turns | cards p50 / p95 s "
              "| answer p50 / p95 s | model calls per turn | answer text from |")
        print("|---|---:|---|---|---:|---|---|---:|---|")
        for r in rows:
            print(f"| {r['catalog']} | {r['products']} | `{r['mode']}` | `{r['answer_model']}` | {r['n']} | "
                  f"{r['cards_p50']:.2f} / "
                  f"{r['cards_p95']:.2f} | {r['answer_p50']:.2f} / {r['answer_p95']:.2f} | {r['model_calls']:.2f} | "
                  + ", ".join(f"{k} {v}" for k, v in sorted(r["text_source"].items())) + " |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "turns": turns}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
