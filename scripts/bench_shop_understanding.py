#!/usr/bin/env python
"""Understanding shoppers' own phrasing: the two figures of tests/shop/test_shop_understanding.py per split
and catalogue, for docs/benchmarks.md.

    PYTHONPATH=src python scripts/bench_shop_understanding.py [--data /path/to/shared/data] [--split dev]
        [--show] [--markdown]

(a) coverage: requests with a matching in-stock variant that got at least one matching card;
(b) violations: cards presented as exact matches that break a stated constraint ("near": cards shown as
near alternatives, with what they miss -- not counted as matches either way).
Both are judged by the test's independent checker (catalogue data + the written constraints).
``--show`` lists the misses and violations (use it on the dev split only: the test split is held out).
Each split is also broken down by writing round: rounds 1-2 (the first requests), round 3 (ids
``n-*``, written before the third round of tuning) and round 4 (ids ``r4-*``, written before the fourth) round 5 (``r5-*``,
before the fifth) round 6 (``r6-*``, before the sixth) round 7
(``r7-*``, before the seventh), round 8 (``r8-*``) and round 9 (``r9-*``, a confirmation round: written after
round 8's measurement, nothing tuned between) round 10 (``r10-*``, before the tuning on round 9) round 11 (``r11-*``, a second confirmation round) and round 12 (``r12-*``, before the tuning on round 11). ``--markdown`` prints the docs/benchmarks.md table.

``--query-model always|auto`` reads the requests with the deployment's model as well
(``ModelHub.from_config``: SmolLM2-135M here), as the assistant's ``query_model`` setting does; the
default ``never`` is the rules alone. The answer text is not written (``answer_model=False``): the
figures are the reading and the cards, not the prose. Choose a mode on ``--split dev`` only.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "shop")]  # helpers/ and the test module

import test_shop_understanding as t  # noqa: E402


def round_of(request_id: str) -> str:
    """The writing round of a request, from its id: "n-..." round 3, "r<N>-..." round N, else "1-2"."""
    if request_id.startswith("n-"):
        return "3"
    m = re.match(r"r(\d+)-", request_id)
    return m.group(1) if m else "1-2"


LAST_ROUND = max(int(round_of(r["id"])) for r in t.REQUESTS if round_of(r["id"]).isdigit())


def main() -> int:
    default_data = os.environ.get("CONCIERGE_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_data, help="the shared data folder (holds tau2/retail/db.json)")
    ap.add_argument("--split", choices=("dev", "test", "all"), default="all")
    ap.add_argument("--show", action="store_true", help="list misses and violations")
    ap.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md table too")
    ap.add_argument("--query-model", choices=("never", "auto", "always"), default="never",
                    help="read requests with the deployment's model too (the assistant's query_model)")
    args = ap.parse_args()
    os.environ.setdefault("CONCIERGE_HOME", str(Path("/tmp") / f"concierge-bench-{os.getpid()}"))

    build = t.build_store
    hub = None
    if args.query_model != "never":
        from types import SimpleNamespace

        from concierge.models.hub import ModelHub
        from concierge.shop.assistant import ShopAssistant

        hub = ModelHub.from_config(None)

        def build(catalog):  # the test's store, its assistant reading with the model too
            store = t.build_store(catalog)
            assistant = ShopAssistant(hub, catalog, store.index, None, query_model=args.query_model,
                                      answer_model=False)
            return SimpleNamespace(catalog=catalog, index=store.index, assistant=assistant, vocab=assistant.vocab)

    stores = {"demo": lambda: build(t.demo_catalog())}
    db_json = Path(args.data) / "tau2" / "retail" / "db.json"
    if db_json.is_file():
        stores["tau2"] = lambda: build(t.tau2_catalog_from(Path(args.data)))
    else:
        print(f"(τ² retail catalogue not found at {db_json}: skipped)")
    splits = ("dev", "test") if args.split == "all" else (args.split,)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# shop understanding -- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load}, "
        f"Python {platform.python_version()}, query model: {args.query_model}"
    )
    print(
        f"{'catalogue':<10}{'split':<6}{'round':<7}{'requests':>9}{'answerable':>11}{'(a) coverage':>16}"
        f"{'cards':>7}{'near':>6}{'(b) violations':>16}{'s':>7}"
    )
    table = []
    for name, make in stores.items():
        store = make()
        for split in splits:
            reqs = t._requests(name, split)
            labels = ["1-2", "3", *(str(n) for n in range(4, LAST_ROUND + 1))]
            rounds = [("all", reqs), *((label, [r for r in reqs if round_of(r["id"]) == label]) for label in labels)]
            for label, subset in rounds:
                t0 = time.perf_counter()
                r = t.evaluate(store, subset)
                secs = time.perf_counter() - t0
                cov = f"{r['covered']}/{r['answerable']} {100 * r['coverage']:.0f}%"
                print(
                    f"{name:<10}{split:<6}{label:<7}{r['requests']:>9}{r['answerable']:>11}{cov:>16}{r['cards']:>7}"
                    f"{r['near']:>6}{len(r['violations']):>16}{secs:>7.1f}"
                )
                table.append((name, split, label, r))
                if args.show and label == "all":
                    for m in r["misses"]:
                        print(f"    miss: {m}")
                    for v in r["violations"]:
                        print(f"    violation: {v}")
    if args.markdown:
        print()
        print("| catalogue | split | round | requests | answerable | coverage | cards | near | violations |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for name, split, label, r in table:
            shown = "τ² retail" if name == "tau2" else name
            cov = f"{r['covered']}/{r['answerable']} ({100 * r['coverage']:.0f} %)"
            row = f"| {shown} | {split} | {label} | {r['requests']} | {r['answerable']} | {cov} | {r['cards']} | "
            row += f"{r['near']} | {len(r['violations'])} |"
            print(row)
    if hub is not None:
        hub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
