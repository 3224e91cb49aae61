"""Offline evaluation of recommenders: leave-last-out split, full ranking, HR/NDCG/MRR/coverage.

Protocol (the same for every model, baselines included):

* every interaction is implicit (a MovieLens rating of any value counts as one interaction);
  a repeated (user, item) pair keeps only its first occurrence, so the held-out item is always new;
* each user's interactions are sorted by (timestamp, item id) -- the item id breaks timestamp ties
  deterministically;
* leave-last-out: the last item is the test target, the second-to-last the validation target, the rest
  is training data. Users with fewer than 3 interactions keep all of them in training and are not
  evaluated;
* full ranking over the whole catalogue (every item seen in the data), no sampled negatives. At
  validation the user's history is the training sequence; at test it is training + validation item
  (RecBole style). The history items are excluded from the ranking, the target never is;
* the rank of the target is 1 + the number of candidates scoring higher + the number scoring the same
  with a smaller item index, the same order used to build the top-k lists (so constant scores cannot
  place a target on top by a tie);
* HR@k and NDCG@k (one relevant item: 1/log2(rank+1)), MRR over the full rank, coverage = fraction of
  the catalogue appearing in at least one evaluated user's top-k.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from concierge.shop.recommend.base import PROTOCOL, Interactions, Recommender, Split, leave_last_out, top_k
from concierge.shop.recommend.metrics import evaluate, metrics_from_ranks, rank_targets

__all__ = [
    "PROTOCOL",
    "Interactions",
    "Recommender",
    "Split",
    "evaluate",
    "leave_last_out",
    "load_ratings_csv",
    "metrics_from_ranks",
    "ndcg_at",
    "rank_targets",
    "run_benchmark",
    "split_summary",
    "top_k",
]


def load_ratings_csv(path: Path) -> Interactions:
    """Read a MovieLens-format ``ratings.csv`` (userId, movieId, rating, timestamp); a folder is accepted."""
    path = Path(path)
    if path.is_dir():
        path = path / "ratings.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no ratings.csv at {path}")
    users: list[int] = []
    items: list[int] = []
    times: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty")
        names = [h.strip() for h in header]
        try:
            iu, ii, it = names.index("userId"), names.index("movieId"), names.index("timestamp")
        except ValueError as exc:
            raise ValueError(f"{path}: header must have userId, movieId, timestamp (got {names})") from exc
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                users.append(int(row[iu]))
                items.append(int(row[ii]))
                times.append(float(row[it]))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{lineno}: bad row {row!r}") from exc
    return Interactions(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(times, dtype=np.float64),
    )


def split_summary(split: Split) -> dict[str, Any]:
    """The split's sizes and protocol, as reports print them."""
    return {
        "users": split.n_users,
        "items": split.n_items,
        "train_interactions": split.n_train_interactions,
        "eval_users": int(len(split.eval_users("test"))),
        "protocol": split.protocol,
    }


def run_benchmark(
    split: Split,
    models: Sequence[Recommender],
    progress: Any | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit and evaluate each model on ``split``; the result is what ``concierge eval recsys`` writes."""
    result: dict[str, Any] = {"split": split_summary(split), "models": {}}
    for model in models:
        start = time.perf_counter()
        model.fit(split, progress=progress)
        seconds = time.perf_counter() - start
        metrics = evaluate(model, split, "test")
        entry = {
            "HR@10": metrics["HR@10"],
            "NDCG@10": metrics["NDCG@10"],
            "MRR": metrics["MRR"],
            "coverage": metrics["coverage"],
            "train_seconds": round(seconds, 3),
        }
        params = getattr(model, "params", None)
        if callable(params):
            entry["params"] = params()
        result["models"][model.name] = entry
        if log:
            log(
                f"{model.name}: NDCG@10 {entry['NDCG@10']:.4f} HR@10 {entry['HR@10']:.4f} "
                f"MRR {entry['MRR']:.4f} coverage {entry['coverage']:.3f} ({seconds:.1f}s)"
            )
    return result


def ndcg_at(rank: int, k: int = 10) -> float:
    """NDCG@k of a single relevant item at 1-based ``rank`` (for readers and tests)."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0
