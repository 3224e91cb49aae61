"""Recommenders for the shop: popularity, ItemKNN, implicit ALS (numpy/scipy), SASRec (torch, optional), blends.

All follow ``concierge.shop.recommend.base.Recommender``: ``fit(split)`` then ``score(histories)``, where a
history is a sequence of item indices. ``make_model`` builds one by name, from the factories
registered through :mod:`concierge.plugins` (the built-ins in ``plugin.py``, plus any installed
plugin's); ``recommend`` turns scores into a top-k list that leaves out what the shopper already has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concierge import plugins
from concierge.shop.recommend.base import Recommender, top_k
from concierge.shop.recommend.baselines import ALS, ItemKNN, Popularity
from concierge.shop.recommend.blend import Blend, Ensemble
from concierge.shop.recommend.sasrec import SASRec, torch_available

DEFAULT_MODELS = ("pop", "itemknn", "itemknn-seq", "als", "sasrec-x2+knn")


def model_names() -> list[str]:
    """Every registered recommender, built-ins first (see ``shop/recommend/plugin.py``), then plugins'."""
    return list(plugins.entries("recommenders"))


def make_model(name: str, *, epochs: int = 200, seed: int = 0) -> Recommender:
    """A fresh, unfitted model; ``epochs`` is SASRec's maximum (early stopping decides), ``seed`` any RNG."""
    factory = plugins.get("recommenders", name) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(model_names())})")
    return factory(epochs=epochs, seed=seed)


def __getattr__(name: str) -> object:
    if name == "MODEL_NAMES":  # the old constant, now a view of the registry
        return tuple(model_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "ItemKNN",
    "Popularity",
    "SASRec",
    "make_model",
    "model_names",
    "recommend",
    "torch_available",
]
