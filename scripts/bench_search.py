"""Hybrid search latency over a large synthetic catalogue (default 100k products) on 2 cores.

The corpus comes from the demo store generator scaled up and is embedded with the hashing embedder
(no model needed). Queries are shop-like texts with and without filters (price caps, categories,
colours, in stock, exclusions). Two query paths are timed end to end (``SearchIndex.search``):

* ``hashing``: the query embedded by the same hashing embedder (measures the index alone);
* ``minilm-onnx``: the query embedded by the default embedding engine (all-MiniLM-L6-v2 int8 on
  ONNX Runtime, in process), as production does. The corpus vectors are still hashed, so the
  rankings are meaningless on this path: it measures latency only.

Prints a markdown report (machine, command, date, build costs, latency table, HNSW recall).

    .venv/bin/python scripts/bench_search.py                  # 100k products, flat and HNSW
    .venv/bin/python scripts/bench_search.py --products 20000 --kinds flat
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(threads: int) -> None:
    # Before numpy/faiss load: every BLAS/OpenMP pool gets the same number of threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:threads])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400, help="timed searches per configuration")
    parser.add_argument("--kinds", default="flat,hnsw")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-onnx", action="store_true", help="skip the MiniLM query path")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    _pin_threads(args.threads)
    run(args)


def run(args: argparse.Namespace) -> None:
    import platform
    import resource
    import shutil
    import tempfile
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    import faiss
    import numpy as np

    from concierge.shop.catalog import Catalog
    from concierge.shop.demo_store import generate_products
    from concierge.shop.search import HashingEmbedder, SearchFilters, SearchIndex

    faiss.omp_set_num_threads(args.threads)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    records = generate_products(seed=args.seed, n_products=args.products)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    catalog = Catalog.from_records(records, tenant="bench", name="bench")
    t_validate = time.perf_counter() - t
    del records
    log(f"catalogue: {len(catalog)} products, {catalog.variant_count} variants")

    hashing = HashingEmbedder()
    cache: dict[str, np.ndarray] = {}

    def cached_embed(texts: list[str]) -> np.ndarray:
        # Both index kinds embed the same corpus: embed it once.
        missing = [x for x in texts if x not in cache]
        if missing:
            for text, vec in zip(missing, hashing(missing), strict=True):
                cache[text] = vec
        return np.stack([cache[x] for x in texts])

    queries: list[tuple[str, SearchFilters | None]] = [
        ("blue running sneakers", None),
        ("linen shirt", SearchFilters(categories=["Men"], attributes={"color": ["white", "beige"]})),
        ("cast iron pan", None),
        ("leather boots", SearchFilters(exclude_terms=["leather"])),
        ("waterproof hiking jacket", SearchFilters(max_price=200, in_stock=True)),
        ("wireless earbuds noise cancelling", SearchFilters(attributes={"noise cancelling": ["yes"]})),
        ("gift for a 6 year old", SearchFilters(categories=["Toys"], max_price=40)),
        (
            "black dress",
            SearchFilters(categories=["Women > Clothing > Dresses"], attributes={"color": ["black"]}),
        ),
        ("cotton duvet cover king", SearchFilters(attributes={"size": ["King"]}, in_stock=True)),
        ("moisturizer for sensitive skin", SearchFilters(categories=["Beauty"])),
        ("tent for two", SearchFilters(categories=["Outdoor > Camping"], min_price=80, max_price=300)),
        ("laptop backpack", SearchFilters(exclude_attributes={"material": ["leather"]}, in_stock=True)),
        ("espresso machine", None),
        ("navy chinos slim fit", SearchFilters(attributes={"color": ["navy"]}, max_price=90)),
        ("pink plush bunny", SearchFilters(categories=["Toys > Plush"], in_stock=True)),
        ("phone case pixel 8", SearchFilters(attributes={"model": ["Pixel 8"]})),
        ("tote bag not leather", SearchFilters(categories=["Bags"], exclude_terms=["leather", "suede"])),
        ("cheap usb-c charger", SearchFilters(max_price=25)),
        ("brass table lamp", SearchFilters(categories=["Home > Decor"])),
        (
            "wool sweater",
            SearchFilters(attributes={"gender": ["women"]}, exclude_attributes={"color": ["black"]}),
        ),
        ("sandals", SearchFilters(categories=["Women > Shoes"], max_price=60, in_stock=True)),
        ("stoneware mug", None),
        ("down sleeping bag", SearchFilters(min_price=100)),
        ("jigsaw puzzle 1000 pieces", None),
        ("red lipstick", SearchFilters(attributes={"color": ["red", "burgundy"]})),
        (
            "rain jacket",
            SearchFilters(categories=["Men", "Outdoor"], attributes={"color": ["yellow"]}, in_stock=True),
        ),
        ("gift", SearchFilters(min_price=45, max_price=55, in_stock=True)),
        ("sneakers", SearchFilters(exclude_attributes={"brand": ["Stride"]}, categories=["Men > Shoes"])),
        ("duffel bag", SearchFilters(attributes={"color": ["olive"]}, exclude_terms=["leather"])),
        ("dinner plates set of 6", None),
    ]
    workload = [queries[i % len(queries)] for i in range(args.queries)]

    def timed(index: SearchIndex, items: list[tuple[str, SearchFilters | None]]) -> dict[str, np.ndarray]:
        for text, f in items[:20]:  # warm-up
            index.search(text, f, k=args.k)
        all_ms, filtered_ms, plain_ms, cpu_ms = [], [], [], []
        for text, f in items:
            c0, t0 = time.process_time(), time.perf_counter()
            index.search(text, f, k=args.k)
            ms = (time.perf_counter() - t0) * 1000
            cpu_ms.append((time.process_time() - c0) * 1000)
            all_ms.append(ms)
            (plain_ms if f is None else filtered_ms).append(ms)
        return {
            "all": np.array(all_ms),
            "unfiltered": np.array(plain_ms),
            "filtered": np.array(filtered_ms),
            "cpu": np.array(cpu_ms),
        }

    onnx_embed = None
    onnx_note = ""
    if not args.no_onnx:
        try:
            from concierge.models.embeddings import default_embedding_engine

            engine = default_embedding_engine(threads=args.threads)
            onnx_embed = engine.embed_array
            onnx_embed(["warm up"])
        except Exception as exc:  # a missing model only drops this path from the report
            onnx_note = f"MiniLM ONNX query path skipped: {exc}"
            onnx_embed = None

    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    builds: list[dict] = []
    rows: list[tuple] = []
    results: dict[str, SearchIndex] = {}
    try:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            log(f"building {kind} index")
            t = time.perf_counter()
            index = SearchIndex.build(catalog, cached_embed, kind=kind)
            t_build = time.perf_counter() - t
            t = time.perf_counter()
            index.save(workdir / kind)
            t_save = time.perf_counter() - t
            size = sum(p.stat().st_size for p in (workdir / kind).rglob("*") if p.is_file())
            t = time.perf_counter()
            index = SearchIndex.load(workdir / kind, cached_embed)
            t_load = time.perf_counter() - t
            builds.append({"kind": kind, "build": t_build, "save": t_save, "load": t_load, "mb": size / 1e6})
            results[kind] = index
            log(f"timing {kind} (hashing queries)")
            rows.append((kind, "hashing", timed(index, workload)))
            if onnx_embed is not None:
                log(f"timing {kind} (MiniLM ONNX queries)")
                index.embed = onnx_embed
                rows.append((kind, "minilm-onnx", timed(index, workload)))
                index.embed = cached_embed
        embed_ms = None
        if onnx_embed is not None:
            samples = []
            for text, _ in workload[:200]:
                t0 = time.perf_counter()
                onnx_embed([text])
                samples.append((time.perf_counter() - t0) * 1000)
            embed_ms = np.array(samples)

        recall = None
        if "flat" in results and "hnsw" in results:
            overlaps, dense_overlaps = [], []
            for text, f in queries:
                a = {h.product_id for h in results["flat"].search(text, f, k=args.k)}
                b = {h.product_id for h in results["hnsw"].search(text, f, k=args.k)}
                overlaps.append(len(a & b) / max(len(a), 1))
                q = hashing([text])[0]
                fa = {p for p, _ in results["flat"]._dense_ranked(q, None, args.k)}
                fb = {p for p, _ in results["hnsw"]._dense_ranked(q, None, args.k)}
                dense_overlaps.append(len(fa & fb) / args.k)
            recall = (float(np.mean(dense_overlaps)), float(np.mean(overlaps)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def pct(a: np.ndarray, q: float) -> str:
        return f"{np.percentile(a, q):.1f}" if len(a) else "-"

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"## Hybrid search latency ({len(catalog):,} products, {catalog.variant_count:,} variants)\n")
    print(
        f"- machine: {platform.node()} - {cpu}, {cores} cores used (threads={args.threads}), {platform.system()}"
    )
    print(f"- python {platform.python_version()}, faiss {faiss.__version__}, numpy {np.__version__}")
    print(f"- command: `{command}`")
    print(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- corpus: demo generator seed {args.seed}; generate {t_gen:.1f} s, validate {t_validate:.1f} s")
    print(
        f"- {args.queries} timed searches per row (k={args.k}; {len(queries)} distinct queries, 25 of 30 filtered)"
    )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"- load average at the end (1/5/15 min): {load} -- other work on the machine inflates wall times")
    print(f"- peak RSS {rss_mb:,.0f} MB\n")
    print("| index | build s (embed+index) | save s | load s | on disk MB |")
    print("|---|---:|---:|---:|---:|")
    for b in builds:
        print(f"| {b['kind']} | {b['build']:.1f} | {b['save']:.1f} | {b['load']:.1f} | {b['mb']:.0f} |")
    print(
        "\n| index | query embedder | p50 ms | p95 ms | p99 ms | p95 unfiltered | p95 filtered | mean ms "
        "| CPU p50 ms | CPU p95 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, embedder, r in rows:
        a = r["all"]
        print(
            f"| {kind} | {embedder} | {pct(a, 50)} | {pct(a, 95)} | {pct(a, 99)} | {pct(r['unfiltered'], 95)} "
            f"| {pct(r['filtered'], 95)} | {a.mean():.1f} | {pct(r['cpu'], 50)} | {pct(r['cpu'], 95)} |"
        )
    print("\n(ms = wall clock per `SearchIndex.search`; CPU = process CPU time, all threads.)")
    if embed_ms is not None:
        print(f"\nMiniLM ONNX query embedding alone: p50 {pct(embed_ms, 50)} ms, p95 {pct(embed_ms, 95)} ms.")
    if onnx_note:
        print(f"\n{onnx_note}")
    if recall is not None:
        print(
            f"\nHNSW vs flat (same queries): dense top-{args.k} overlap {recall[0]:.3f}, "
            f"hybrid top-{args.k} overlap {recall[1]:.3f}."
        )


if __name__ == "__main__":
    main()
