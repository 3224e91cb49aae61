"""Ranking metrics over a split's held-out targets: full rank of each target, HR/NDCG/MRR, coverage.

The models use :func:`evaluate` on the validation targets (SASRec's early stopping, a blend's weight);
:mod:`concierge.evals.recsys` uses it on the test targets and re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concierge.shop.recommend.base import Recommender, Split, top_k


def rank_targets(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """1-based full rank of each target among non-history items (ties against the target by item index).

    ``scores`` is modified in place: history items are set to -inf.
    """
    for row, hist in enumerate(histories):
        scores[row, hist] = -np.inf
    rows = np.arange(len(targets))
    t = scores[rows, targets][:, None]
    higher = (scores > t).sum(axis=1)
    tie_before = ((scores == t) & (np.arange(scores.shape[1])[None, :] < targets[:, None])).sum(axis=1)
    return 1 + higher + tie_before


def metrics_from_ranks(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {f"HR@{k}": 0.0, f"NDCG@{k}": 0.0, "MRR": 0.0}
    hit = ranks <= k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    return {f"HR@{k}": float(hit.mean()), f"NDCG@{k}": float(ndcg.mean()), "MRR": float((1.0 / ranks).mean())}


def evaluate(
    model: Recommender,
    split: Split,
    stage: str = "test",
    k: int = 10,
    batch_size: int = 256,
    coverage: bool = True,
) -> dict[str, float]:
    """HR@k, NDCG@k, MRR and (unless ``coverage`` is False) coverage of ``model`` on ``stage`` targets."""
    users = split.eval_users(stage)
    ranks: list[np.ndarray] = []
    shown = np.zeros(split.n_items, dtype=bool)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        hists = split.histories(stage, batch)
        scores = np.array(model.score(hists), dtype=np.float64, copy=True)
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"{model.name}: score shape {scores.shape}, expected {(len(batch), split.n_items)}"
            )
        scores[np.isnan(scores)] = -np.inf
        ranks.append(rank_targets(scores, hists, split.targets(stage, batch)))
        if coverage:
            shown[top_k(scores, k).ravel()] = True
    out = metrics_from_ranks(np.concatenate(ranks) if ranks else np.array([]), k)
    if coverage:
        out["coverage"] = float(shown.mean()) if split.n_items else 0.0
    out["users"] = int(len(users))
    return out
