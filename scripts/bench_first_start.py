#!/usr/bin/env python3
"""Where a first start of the demo spends its time, phase by phase, on a fresh CONCIERGE_HOME.

Runs what ``concierge demo`` runs before its first shop answer, on the embedded default
deployment (SmolLM2 on llama.cpp, all-MiniLM-L6-v2 on ONNX Runtime), and times each phase:
loading the chat model, generating and ingesting the demo store, building the search index
(embedding the catalogue) and the first shop answer. Prints one JSON line per phase and a total,
with the load average before and after.

    CONCIERGE_HOME=$(mktemp -d) nice -n 10 .venv/bin/python scripts/bench_first_start.py [--products N]

Run it on an empty CONCIERGE_HOME: with an existing index the index phase is a load, not a build.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=None, help="demo store size (default: the demo's)")
    parser.add_argument("--first-index", type=int, default=None,
                        help="at most this many products embedded before the shop answers (default: the "
                        "server's FIRST_INDEX, within FIRST_INDEX_SECONDS); 0: the whole catalogue, as "
                        "before the quick first index")
    args = parser.parse_args()

    from concierge import tenancy
    from concierge.models.hub import ModelHub
    from concierge.server import ensure_demo_store
    from concierge.shop.session import FIRST_INDEX, FIRST_INDEX_SECONDS, AssistantFactory, ShopSession

    n_products = args.products or 3000
    print(json.dumps({"started": datetime.now(UTC).isoformat(timespec="seconds"), "loadavg": os.getloadavg(),
                      "cpus": os.cpu_count(), "home": os.environ.get("CONCIERGE_HOME"), "products": n_products}))
    phases: dict[str, float] = {}

    def phase(name: str, fn):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        out = fn()
        phases[name] = round(time.perf_counter() - t0, 2)
        print(json.dumps({"phase": name, "seconds": phases[name], "loadavg": os.getloadavg()}), flush=True)
        return out

    hub = phase("load models", lambda: ModelHub.from_config(None))
    chat = next(c.alias for c in hub.models() if c.kind == "chat")
    phase("warm chat model", lambda: hub.warm_up(chat))
    tenancy.create_tenant("demo")
    phase("generate + ingest demo store", lambda: ensure_demo_store("demo", "demo", n_products=n_products))
    whole = args.first_index == 0
    first = None if whole else (args.first_index or FIRST_INDEX)
    seconds = None if whole else FIRST_INDEX_SECONDS
    factory = AssistantFactory(hub, first_index=first, first_seconds=seconds)
    shop = ShopSession(factory, catalog="demo")
    t_index = time.perf_counter()
    label = "all products" if whole else f"first products: at most {first} in {seconds:g} s"
    phase(f"search index ({label})", lambda: shop.assistant("demo", "demo"))
    assistant = shop.assistant("demo", "demo")
    embedded = int((assistant.index._row_product >= 0).sum())

    def first_answer() -> None:
        turn = shop.prepare("demo", "I need a tent for camping under $300")
        shop.answer(turn)

    phase("first shop answer (the rest embedding alongside)" if factory.completions else "first shop answer",
          first_answer)
    total = round(sum(phases.values()), 2)
    print(json.dumps({"first_answer_after_seconds": total, "embedded_before_serving": embedded,
                      "loadavg": os.getloadavg(),
                      "finished": datetime.now(UTC).isoformat(timespec="seconds")}), flush=True)
    for thread in factory.completions:
        thread.join()
    if factory.completions:
        print(json.dumps({"index_complete_after_seconds": round(time.perf_counter() - t_index, 2),
                          "loadavg": os.getloadavg()}))
    hub.close()


if __name__ == "__main__":
    main()
