"""Recommenders for the shop: popularity, ItemKNN, implicit ALS (numpy/scipy), SASRec (torch, optional), blends.

All follow ``concierge.evals.recsys.Recommender``: ``fit(split)`` then ``score(histories)``, where a
history is a sequence of item indices. ``make_model`` builds one by name; ``recommend`` turns scores
into a top-k list that leaves out what the shopper already has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concierge.shop.recommend.base import Recommender, top_k
from concierge.shop.recommend.baselines import ALS, ItemKNN, Popularity
from concierge.shop.recommend.blend import Blend, Ensemble
from concierge.shop.recommend.sasrec import SASRec, torch_available

MODEL_NAMES = (
    "pop",
    "itemknn",
    "itemknn-seq",
    "als",
    "als-numpy",
    "als-implicit",
    "sasrec",
    "sasrec+knn",
    "sasrec-x2",
    "sasrec-x2+knn",
)
DEFAULT_MODELS = ("pop", "itemknn", "itemknn-seq", "als", "sasrec-x2+knn")


def make_model(name: str, *, epochs: int = 200, seed: int = 0) -> Recommender:
    """A fresh, unfitted model; ``epochs`` is SASRec's maximum (early stopping decides), ``seed`` any RNG."""
    if name == "pop":
        return Popularity()
    if name == "itemknn":
        return ItemKNN()
    if name == "itemknn-seq":
        model = ItemKNN(half_life=5.0)
        model.name = "itemknn-seq"
        return model
    if name in ("als", "als-numpy", "als-implicit"):
        backend = {"als": "auto", "als-numpy": "numpy", "als-implicit": "implicit"}[name]
        model = ALS(backend=backend, seed=seed)
        model.name = name
        return model
    if name == "sasrec":
        return SASRec(epochs=epochs, seed=seed)
    if name == "sasrec+knn":
        return Blend(SASRec(epochs=epochs, seed=seed), make_model("itemknn-seq"), name="sasrec+knn")
    if name == "sasrec-x2":
        # Seeds seed, seed + 1, ...: the ensemble is as reproducible as one model.
        return Ensemble([SASRec(epochs=epochs, seed=seed + k) for k in range(2)], name=name)
    if name == "sasrec-x2+knn":
        return Blend(make_model("sasrec-x2", epochs=epochs, seed=seed), make_model("itemknn-seq"), name=name)
    raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES)})")


def recommend(model: Recommender, history: Sequence[int], k: int = 10) -> list[int]:
    """Top-k item indices for one history, excluding the items already in it."""
    scores = np.array(model.score([np.asarray(history, dtype=np.int64)]), dtype=np.float64)
    scores[0, np.asarray(history, dtype=np.int64)] = -np.inf
    return [int(i) for i in top_k(scores, k)[0]]


__all__ = [
    "ALS",
    "Blend",
    "DEFAULT_MODELS",
    "Ensemble",
    "MODEL_NAMES",
    "ItemKNN",
    "Popularity",
    "SASRec",
    "make_model",
    "recommend",
    "torch_available",
]
