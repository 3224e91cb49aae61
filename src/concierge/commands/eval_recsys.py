"""``concierge eval recsys``: leave-last-out, full-ranking evaluation of the shop's recommenders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from concierge.evals.recsys import leave_last_out, load_ratings_csv, run_benchmark
from concierge.shop.recommend import DEFAULT_MODELS, make_model, model_names, torch_available
from concierge.shop.recommend.sasrec import TORCH_MISSING


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise typer.Exit(2)


def eval_recsys(
    data: Path = typer.Option(
        ..., "--data", help="Folder with a MovieLens-format ratings.csv (or the file)."
    ),
    json_out: Path = typer.Option(..., "--json", help="Where to write the results as JSON."),
    models: str = typer.Option(
        ",".join(DEFAULT_MODELS), "--models", help=f"Comma list of {', '.join(model_names())}."
    ),
    epochs: int = typer.Option(
        200, "--epochs", help="SASRec's maximum epochs (early stopping on validation)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed for ALS and SASRec."),
) -> None:
    """Evaluate recommenders on ratings.csv: leave-last-out split, full ranking, HR@10/NDCG@10/MRR/coverage."""
    names = [n.strip() for n in models.split(",") if n.strip()]
    known = model_names()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        _fail(
            f"error: unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    if epochs < 1:
        _fail("error: --epochs must be at least 1")
    ratings = data / "ratings.csv" if data.is_dir() else data
    if not ratings.is_file():
        _fail(f"error: no ratings.csv at {ratings}")
    if any(name.startswith("sasrec") for name in names) and not torch_available():
        _fail(f"error: {TORCH_MISSING}")
    try:
        split = leave_last_out(load_ratings_csv(ratings))
    except ValueError as exc:
        _fail(f"error: {exc}")
    console = Console(stderr=True)
    console.print(
        f"{split.n_users} users, {split.n_items} items, {split.n_train_interactions} training interactions, "
        f"{len(split.eval_users('test'))} evaluated users"
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        result = run_benchmark(
            split, [make_model(n, epochs=epochs, seed=seed) for n in names], progress, log=console.print
        )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {json_out}")
