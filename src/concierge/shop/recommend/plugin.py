"""The built-in recommenders, registered through the plugin door like any company's own.

Each factory takes ``epochs`` (SASRec's maximum; early stopping decides) and ``seed`` (any RNG)
as keywords and returns a fresh, unfitted model; :func:`concierge.shop.recommend.make_model`
looks them up by name. The order here is the order ``model_names()`` lists them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge.plugins import Register, hookimpl

if TYPE_CHECKING:
    from concierge.shop.recommend.base import Recommender


@hookimpl
def register_recommenders(register: Register) -> None:
    register("pop", popularity)
    register("itemknn", itemknn)
    register("itemknn-seq", itemknn_seq)
    register("als", als)
    register("als-numpy", als_numpy)
    register("als-implicit", als_implicit)
    register("sasrec", sasrec)
    register("sasrec+knn", sasrec_knn)
    register("sasrec-x2", sasrec_x2)
    register("sasrec-x2+knn", sasrec_x2_knn)


def popularity(*, epochs: int, seed: int) -> Recommender:
    from concierge.shop.recommend.baselines import Popularity

    return Popularity()


def itemknn(*, epochs: int, seed: int) -> Recommender:
    from concierge.shop.recommend.baselines import ItemKNN

    return ItemKNN()


def itemknn_seq(*, epochs: int, seed: int) -> Recommender:
    """ItemKNN that weighs recent items more (half-life of five interactions)."""
    from concierge.shop.recommend.baselines import ItemKNN

    model = ItemKNN(half_life=5.0)
    model.name = "itemknn-seq"
    return model


def _als(name: str, backend: str, seed: int) -> Recommender:
    from concierge.shop.recommend.baselines import ALS

    model = ALS(backend=backend, seed=seed)
    model.name = name
    return model


def als(*, epochs: int, seed: int) -> Recommender:
    """Implicit ALS: the ``implicit`` package when installed, else numpy."""
    return _als("als", "auto", seed)


def als_numpy(*, epochs: int, seed: int) -> Recommender:
    return _als("als-numpy", "numpy", seed)


def als_implicit(*, epochs: int, seed: int) -> Recommender:
    return _als("als-implicit", "implicit", seed)


def sasrec(*, epochs: int, seed: int) -> Recommender:
    from concierge.shop.recommend.sasrec import SASRec

    return SASRec(epochs=epochs, seed=seed)


def sasrec_knn(*, epochs: int, seed: int) -> Recommender:
    from concierge.shop.recommend.blend import Blend

    return Blend(sasrec(epochs=epochs, seed=seed), itemknn_seq(epochs=epochs, seed=seed), name="sasrec+knn")


def sasrec_x2(*, epochs: int, seed: int) -> Recommender:
    """Two SASRecs with seeds seed and seed + 1: the ensemble is as reproducible as one model."""
    from concierge.shop.recommend.blend import Ensemble
    from concierge.shop.recommend.sasrec import SASRec

    return Ensemble([SASRec(epochs=epochs, seed=seed + k) for k in range(2)], name="sasrec-x2")


def sasrec_x2_knn(*, epochs: int, seed: int) -> Recommender:
    from concierge.shop.recommend.blend import Blend

    return Blend(
        sasrec_x2(epochs=epochs, seed=seed), itemknn_seq(epochs=epochs, seed=seed), name="sasrec-x2+knn"
    )
