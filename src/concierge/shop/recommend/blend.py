"""Blends and ensembles of recommenders; a blend's weight is chosen on the validation split.

SASRec learns long-range taste; sequence-aware ItemKNN is exact about "people who just watched X next
watched Y". Their errors differ, so a small ItemKNN share lifts SASRec (measured on MovieLens
latest-small, docs/benchmarks.md). Scores are standardised per user before mixing, because the two
live on unrelated scales (logits vs co-occurrence sums). The weight is picked on validation, never
on the test targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from concierge.shop.recommend.base import Recommender, Split
from concierge.shop.recommend.metrics import evaluate

DEFAULT_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5)


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per-row z-scores; -inf/nan entries (masked items) stay at the bottom."""
    finite = np.isfinite(scores)
    masked = np.where(finite, scores, np.nan)
    mean = np.nanmean(masked, axis=1, keepdims=True)
    std = np.nanstd(masked, axis=1, keepdims=True) + 1e-9
    out = (masked - np.nan_to_num(mean)) / std
    return np.where(finite, out, -1e9).astype(np.float32)


def describe(model: Recommender) -> dict[str, Any]:
    """A member model's name and parameters, as reports print them."""
    params = getattr(model, "params", None)
    return {"name": model.name, **(params() if callable(params) else {})}


class Blend:
    """``base + weight * helper`` on standardised scores; ``weight`` chosen on validation NDCG@10."""

    def __init__(
        self, base: Recommender, helper: Recommender, weights: Sequence[float] = DEFAULT_WEIGHTS, name: str = ""
    ) -> None:
        if not weights or any(w < 0 for w in weights):
            raise ValueError("weights must be a non-empty list of non-negative numbers")
        self.base = base
        self.helper = helper
        self.weights = tuple(float(w) for w in weights)
        self.name = name or f"{base.name}+{helper.name}"
        self.weight = 0.0
        self.valid_ndcg: dict[float, float] = {}

    def fit(self, split: Split, progress: Any | None = None) -> None:
        self.base.fit(split, progress=progress)
        self.helper.fit(split, progress=progress)
        if not len(split.eval_users("valid")):
            self.weight = self.weights[0]
            return
        for weight in self.weights:
            self.weight = weight
            self.valid_ndcg[weight] = evaluate(self, split, "valid", coverage=False)["NDCG@10"]
        # Ties go to the smaller weight (the base model alone when the helper adds nothing).
        self.weight = max(self.weights, key=lambda w: (self.valid_ndcg[w], -w))

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        base = standardise(np.asarray(self.base.score(histories), dtype=np.float64))
        if self.weight == 0.0:
            return base
        return base + self.weight * standardise(np.asarray(self.helper.score(histories), dtype=np.float64))

    def params(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "valid_NDCG@10_by_weight": {str(w): round(v, 4) for w, v in self.valid_ndcg.items()},
            "base": describe(self.base),
            "helper": describe(self.helper),
        }


class Ensemble:
    """The mean of several models' standardised scores, e.g. SASRec trained from different seeds.

    Seeds of SASRec on MovieLens latest-small differ by up to 0.01 NDCG@10 and make different
    mistakes; averaging two of them lifts the result above either (docs/benchmarks.md).
    """

    def __init__(self, members: Sequence[Recommender], name: str = "") -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.name = name or "+".join(m.name for m in self.members)

    def fit(self, split: Split, progress: Any | None = None) -> None:
        for member in self.members:
            member.fit(split, progress=progress)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        total = standardise(np.asarray(self.members[0].score(histories), dtype=np.float64))
        for member in self.members[1:]:
            total += standardise(np.asarray(member.score(histories), dtype=np.float64))
        return total / len(self.members)

    def params(self) -> dict[str, Any]:
        return {"members": [describe(m) for m in self.members]}
