#!/usr/bin/env python
"""Benchmark every recommender on MovieLens latest-small and print a markdown table.

Runs the same code as ``concierge eval recsys`` (leave-last-out, full ranking) and prints the machine,
the command, the date and the figures. The data is read in place (research-use licence: never copied).

    .venv/bin/python scripts/bench_recsys.py [--data DIR] [--models pop,...] [--epochs N] [--seed S] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from concierge.evals.recsys import leave_last_out, load_ratings_csv, run_benchmark
from concierge.shop.recommend import DEFAULT_MODELS, make_model

DEFAULT_DATA = (
    Path(
        os.environ.get("CONCIERGE_SHARED_DATA")
        or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    / "movielens-latest-small"
)


def machine() -> str:
    """CPU model, cores and load average, so figures from a shared machine are read as such."""
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores (nproc), load average {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args()
    if not (args.data / "ratings.csv").is_file():
        print(f"error: no ratings.csv in {args.data} (set --data or CONCIERGE_SHARED_DATA)", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    before = machine()
    split = leave_last_out(load_ratings_csv(args.data))
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        result = run_benchmark(
            split,
            [make_model(n, epochs=args.epochs, seed=args.seed) for n in names],
            progress,
            log=console.print,
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    s = result["split"]
    command = shlex.join(["python", "scripts/bench_recsys.py", *sys.argv[1:]])
    print(f"**Machine:** {before} at start; {machine()} at end (shared with other processes)  ")
    print(f"**Date:** {dt.datetime.now().astimezone().isoformat(timespec='seconds')}  ")
    print(
        f"**Command:** `{command}` (same as `concierge eval recsys --data {args.data} --json OUT "
        f"--models {args.models} --epochs {args.epochs} --seed {args.seed}`)  "
    )
    print(
        f"**Data:** {args.data.name}: {s['users']} users, {s['items']} items, {s['train_interactions']} "
        f"training interactions, {s['eval_users']} test users  "
    )
    print(f"**Protocol:** {s['protocol']}\n")
    print("| model | HR@10 | NDCG@10 | MRR | coverage | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in result["models"].items():
        print(
            f"| {name} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {m['MRR']:.4f} | {m['coverage']:.3f} "
            f"| {m['train_seconds']:.1f} |"
        )
    for name, m in result["models"].items():
        if m.get("params"):
            print(f"\n`{name}` params: {json.dumps(m['params'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
