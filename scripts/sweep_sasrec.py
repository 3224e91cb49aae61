#!/usr/bin/env python
"""Sweep SASRec settings on MovieLens latest-small and choose one on the validation targets only.

Every run trains one SASRec (early stopping on validation NDCG@10, as always) and reports its best
validation NDCG@10; the test targets are never scored, so the table cannot be read to choose on them.
The winner is the setting with the highest mean validation NDCG@10 over the seeds. Runs go in
parallel processes (``--jobs``); ``--device cuda`` trains on a GPU with the same code.

    .venv/bin/python scripts/sweep_sasrec.py [--settings crop-all,crop-random,...] [--seeds 3]
        [--device cpu|cuda] [--jobs N] [--epochs 200] [--users N] [--json OUT]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recsys import DEFAULT_DATA, machine  # noqa: E402

# Settings as changes from the SASRec defaults (the earlier GPU sweep's rows, then the softmax's).
SETTINGS: dict[str, dict[str, Any]] = {
    "crop-all": {"crop": "all"},  # the defaults (1,024 negatives drawn by popularity)
    "crop-random": {"crop": "random"},
    "crop-last": {"crop": "last"},
    "one-head-bias": {"crop": "all", "heads": 1, "item_bias": True},
    "bias-no-mask": {"crop": "all", "item_bias": True, "mask_seen": False},
    "smoothing": {"crop": "all", "label_smoothing": 0.1, "mask_seen": False},
    "hidden-128": {"crop": "all", "hidden": 128},
    "batch-64": {"crop": "all", "batch_size": 64},
    # The softmax: over the whole catalogue, or over N items drawn uniformly or by popularity.
    "full-softmax": {"crop": "all", "negatives": 0},
    "sampled-1024": {"crop": "all", "negatives": 1024, "sampling": "uniform"},
    "sampled-2048": {"crop": "all", "negatives": 2048, "sampling": "uniform"},
    "popsampled-1024": {"crop": "all", "negatives": 1024, "sampling": "popularity"},
    "popsampled-2048": {"crop": "all", "negatives": 2048, "sampling": "popularity"},
}


def _split(data: Path, users: int | None) -> Any:
    import numpy as np

    from concierge.evals.recsys import load_ratings_csv
    from concierge.shop.recommend.base import Interactions, leave_last_out

    ratings = load_ratings_csv(data)
    if users:
        keep = np.isin(ratings.user_ids, np.unique(ratings.user_ids)[:users])
        ratings = Interactions(ratings.user_ids[keep], ratings.item_ids[keep], ratings.timestamps[keep])
    return leave_last_out(ratings)


def run_one(
    data: str, users: int | None, name: str, seed: int, epochs: int, device: str, threads: int
) -> dict:
    from concierge.shop.recommend.sasrec import SASRec

    split = _split(Path(data), users)
    model = SASRec(epochs=epochs, seed=seed, device=device, threads=threads, **SETTINGS[name])
    start = time.perf_counter()
    model.fit(split)
    return {
        "setting": name,
        "seed": seed,
        "valid_NDCG@10": model.best_valid_ndcg,
        "best_epoch": model.best_epoch,
        "epochs_run": model.epochs_run,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--settings", default="crop-all,crop-random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--users", type=int, default=None, help="first N users only (a quick check)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(
            f"error: unknown setting(s) {', '.join(unknown)} (choose from {', '.join(SETTINGS)})",
            file=sys.stderr,
        )
        return 2
    if not (args.data / "ratings.csv").is_file():
        print(f"error: no ratings.csv in {args.data} (set --data or CONCIERGE_SHARED_DATA)", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    header = f"`{shlex.join(['python', 'scripts/sweep_sasrec.py', *sys.argv[1:]])}`, {machine()}"
    jobs = [(n, s) for n in names for s in range(args.seeds)]
    results: list[dict] = []
    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = [
            pool.submit(run_one, str(args.data), args.users, n, s, args.epochs, args.device, args.threads)
            for n, s in jobs
        ]
        for future in cf.as_completed(futures):
            row = future.result()
            results.append(row)
            print(
                f"{row['setting']} seed {row['seed']}: valid NDCG@10 {row['valid_NDCG@10']:.4f} "
                f"(best epoch {row['best_epoch']}, {row['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    by = {n: [r["valid_NDCG@10"] for r in results if r["setting"] == n] for n in names}
    chosen = max(names, key=lambda n: statistics.mean(by[n]))
    print(
        f"{header}; {started:%Y-%m-%d %H:%M} UTC to {dt.datetime.now(dt.UTC):%H:%M} UTC, machine at the end: {machine()}"
    )
    print()
    print("| setting | changes | seeds | valid NDCG@10 mean (range) | epochs run (best) | seconds a run |")
    print("|---|---|---:|---|---|---:|")
    for n in names:
        vals = by[n]
        runs = [r for r in results if r["setting"] == n]
        change = ", ".join(f"{k}={v}" for k, v in SETTINGS[n].items())
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in sorted(runs, key=lambda r: r["seed"]))
        seconds = statistics.mean(r["seconds"] for r in runs)
        print(
            f"| {n} | {change} | {len(vals)} | {statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f}) "
            f"| {epochs} | {seconds:.0f} |"
        )
    print()
    print(
        f"chosen on validation: **{chosen}** ({', '.join(f'{k}={v}' for k, v in SETTINGS[chosen].items())})"
    )
    if args.json:
        args.json.write_text(json.dumps({"command": header, "chosen": chosen, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
