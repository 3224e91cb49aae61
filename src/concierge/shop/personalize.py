"""Personalisation from the shop's own interactions: re-ranking for a known shopper, co-purchases.

:class:`Personalizer` fits an item-to-item recommender (ItemKNN co-occurrence by default; any
``concierge.shop.recommend.base.Recommender`` works) on every shopper's product sequence, then

* :meth:`Personalizer.scores` is the in-house SASRec ensemble, served from ONNX without torch
  (:mod:`concierge.shop.recommend.serving`), blended with co-occurrence at the weight chosen on
  validation when the catalogue has a trained model (``concierge shop train-recommender``), else
  co-occurrence alone; a history outside the model's vocabulary falls back to co-occurrence, and a
  product the model has not seen gets its co-occurrence score in place of the model's;
* :meth:`Personalizer.rerank` blends each search hit's rank with the shopper's recommender score
  (a cold shopper, or one whose history touches none of the candidates, keeps the search order);
* :meth:`Personalizer.co_purchases` lists products bought (carted or purchased) together with a
  product, in the same session first, then by the same shoppers;
* :meth:`Personalizer.category_complements` lifts that to categories, the data-driven fallback for
  "complete the look".

A shopper id the catalogue's interactions have never seen (and that was not registered as known) is a
:class:`~concierge.shop.query.ShopperNotFoundError` (404).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from concierge.shop.catalog import Catalog, Interaction
from concierge.shop.query import ShopperNotFoundError
from concierge.shop.recommend.base import Recommender, Split
from concierge.shop.recommend.baselines import ItemKNN
from concierge.shop.recommend.blend import standardise
from concierge.shop.recommend.serving import ModelSlot, OnnxSASRec, recommender_path

BOUGHT = ("cart", "purchase")
SESSION_GAP = timedelta(minutes=30)


@dataclass(frozen=True)
class _Event:
    user: str
    product_id: str
    event: str
    ts: datetime


@dataclass(frozen=True)
class Ranked:
    """One re-ranked candidate: the blended score, the shopper's part, and the history item behind it."""

    item: Any
    score: float
    personal: float
    because: str | None  # a product id from the shopper's history
    because_event: str | None  # view | cart | purchase


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _events(catalog: Catalog, interactions: Iterable[Interaction | Mapping[str, Any]]) -> list[_Event]:
    """Interactions (store rows or raw ``{user, item, event, timestamp}`` records) on this catalogue."""
    out: list[_Event] = []
    for row in interactions:
        if isinstance(row, Interaction):
            pid, user, event, ts = row.product_id, row.user, row.event, row.timestamp
        else:
            item = str(row.get("item", ""))
            try:
                product, _ = catalog.resolve(item)
            except KeyError:
                continue
            pid, user, event, ts = product.id, str(row["user"]), str(row["event"]), _ts(row["timestamp"])
        if catalog.get_product(pid) is not None:
            out.append(_Event(user, pid, event, _ts(ts)))
    out.sort(key=lambda e: (e.user, e.ts))
    return out


class Personalizer:
    """Shopper histories and a fitted item-to-item model over one catalogue's interactions."""

    def __init__(
        self,
        catalog: Catalog,
        interactions: Iterable[Interaction | Mapping[str, Any]],
        *,
        model: Recommender | None = None,
        known_shoppers: Iterable[str] = (),
        weight: float = 0.35,
        session_gap: timedelta = SESSION_GAP,
        served: ModelSlot | str | None = "auto",
    ) -> None:
        """``served``: the catalogue's trained SASRec (``"auto"``: the file ``train-recommender`` writes for
        ``catalog.tenant``/``catalog.name``, picked up whenever it appears or changes; None: co-occurrence
        only)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must be between 0 and 1")
        self.catalog = catalog
        self.weight = weight
        self.session_gap = session_gap
        events = _events(catalog, interactions)
        self._history: dict[str, list[tuple[str, str]]] = defaultdict(list)  # user -> [(pid, event)]
        # product -> [(user, session number)] for carts and purchases
        self._bought_by: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self._baskets: dict[tuple[str, int], set[str]] = defaultdict(set)
        self._user_bought: dict[str, set[str]] = defaultdict(set)
        users_of: dict[str, set[str]] = defaultdict(set)
        last: dict[str, datetime] = {}
        session: dict[str, int] = defaultdict(int)
        for e in events:
            if e.user in last and e.ts - last[e.user] > session_gap:
                session[e.user] += 1
            last[e.user] = e.ts
            self._history[e.user].append((e.product_id, e.event))
            users_of[e.product_id].add(e.user)
            if e.event in BOUGHT:
                key = (e.user, session[e.user])
                if e.product_id not in self._baskets[key]:
                    self._bought_by[e.product_id].append(key)
                self._baskets[key].add(e.product_id)
                self._user_bought[e.user].add(e.product_id)
        self.known = set(self._history) | set(known_shoppers)
        self.popularity: Counter[str] = Counter({pid: len(users) for pid, users in users_of.items()})
        self.n_events = len(events)

        # Item index over the products that occur in the interactions.
        self.items = sorted(users_of)
        self._item_pos = {pid: i for i, pid in enumerate(self.items)}
        self.model: Recommender | None = None
        self._split: Split | None = None
        if self.items:
            users = sorted(self._history)
            train = []
            for u in users:
                seq = list(dict.fromkeys(self._item_pos[pid] for pid, _ in self._history[u]))
                train.append(np.asarray(seq, dtype=np.int64))
            split = Split(
                user_index=np.asarray(users),
                item_index=np.asarray(self.items),
                train=train,
                valid=np.full(len(users), -1, dtype=np.int64),
                test=np.full(len(users), -1, dtype=np.int64),
            )
            self._split = split
            self.model = model if model is not None else ItemKNN(neighbours=100, shrink=5.0)
            self.model.fit(split)
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        if served == "auto":
            try:
                served = ModelSlot(recommender_path(catalog.tenant, catalog.name))
            except ValueError:  # no tenant/name (an in-memory catalogue): nothing trained to serve
                served = None
        if served is not None and not isinstance(served, ModelSlot):
            raise ValueError("served must be 'auto', None or a ModelSlot")
        self.served = served
        self._helpers: dict[tuple[Any, ...], ItemKNN] = {}
        self._model_pos: tuple[int, np.ndarray] | None = None  # (slot version, model index -> our position)

    @classmethod
    def from_store(cls, catalog: Catalog, session: Any = None, **kwargs: Any) -> Personalizer:
        """Fit on the catalogue's stored interactions (``catalog.tenant`` / ``catalog.name``)."""
        from concierge.shop.catalog import load_interactions

        return cls(catalog, load_interactions(session, catalog.tenant, catalog.name), **kwargs)

    # -- shoppers -----------------------------------------------------------------------------

    def has_shopper(self, shopper_id: str) -> bool:
        return shopper_id in self.known

    def require_shopper(self, shopper_id: str) -> None:
        if not isinstance(shopper_id, str) or shopper_id not in self.known:
            raise ShopperNotFoundError(
                f"unknown shopper {shopper_id!r} for catalogue {self.catalog.tenant}/{self.catalog.name}",
                param="shopper_id",
            )

    def history(self, shopper_id: str) -> list[str]:
        """The shopper's products, oldest first, each once."""
        return list(dict.fromkeys(pid for pid, _ in self._history.get(shopper_id, ())))

    def bought(self, shopper_id: str) -> set[str]:
        return set(self._user_bought.get(shopper_id, ()))

    def scores(self, shopper_id: str) -> np.ndarray | None:
        """Recommender scores over ``self.items`` for the shopper (None: cold, nothing to go on)."""
        if self.model is None:
            return None
        served = self.served.current() if self.served is not None else None
        key = (shopper_id, self.served.version if served is not None and self.served is not None else -1)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        hist = [self._item_pos[p] for p in self.history(shopper_id) if p in self._item_pos]
        if not hist:
            return None
        history = np.asarray(hist, dtype=np.int64)
        if served is None:
            row = np.asarray(self.model.score([history])[0], dtype=np.float64)
        else:
            row = self._served_scores(served, history)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = row
        return row

    def _helper(self, params: Mapping[str, Any]) -> ItemKNN:
        """The co-occurrence model the served blend was evaluated with, fitted on these interactions."""
        key = tuple(sorted(params.items()))
        helper = self._helpers.get(key)
        if helper is None:
            helper = ItemKNN(
                neighbours=int(params.get("neighbours", 200)),
                shrink=float(params.get("shrink", 10.0)),
                half_life=params.get("half_life"),
            )
            assert self._split is not None
            helper.fit(self._split)
            self._helpers[key] = helper
        return helper

    def _served_scores(self, served: OnnxSASRec, history: np.ndarray) -> np.ndarray:
        """``Blend.score`` over our items: standardised SASRec + weight x standardised co-occurrence.

        History items the model has never seen are left out of its input; with none left the row is
        co-occurrence alone. A product outside the model's vocabulary has no SASRec score, so its
        co-occurrence z-score stands in for it (``(1 + weight) x co``), on the same scale as the rest.
        """
        weight = served.info.weight
        co = standardise(self._helper(served.info.helper).score([history]).astype(np.float64))[0]
        co = co.astype(np.float64)
        version = self.served.version if self.served is not None else 0
        if self._model_pos is None or self._model_pos[0] != version:
            pos = np.array([self._item_pos.get(pid, -1) for pid in served.info.items], dtype=np.int64)
            self._model_pos = (version, pos)
        pos = self._model_pos[1]
        vocab = [served.index[self.items[i]] for i in history if self.items[i] in served.index]
        if not vocab:
            return co
        seq = standardise(served.score([np.asarray(vocab, dtype=np.int64)]))[0].astype(np.float64)
        row = (1.0 + weight) * co
        known = pos >= 0
        row[pos[known]] = seq[known] + weight * co[pos[known]]
        return row

    def _because(self, shopper_id: str, product_id: str) -> tuple[str | None, str | None]:
        """The history item most similar to ``product_id`` (ItemKNN's similarity rows), and its event."""
        sim = getattr(self.model, "sim", None)
        pos = self._item_pos.get(product_id)
        if sim is None or pos is None:
            return None, None
        best, best_sim, best_event = None, 0.0, None
        events: dict[str, str] = {}
        for pid, event in self._history.get(shopper_id, ()):
            if event == "purchase" or events.get(pid) != "purchase":
                events[pid] = event
        for pid, event in events.items():
            hp = self._item_pos.get(pid)
            if hp is None or pid == product_id:
                continue
            value = float(sim[hp, pos])
            if value > best_sim:
                best, best_sim, best_event = pid, value, event
        return best, best_event

    def rerank(
        self,
        items: Sequence[Any],
        shopper_id: str,
        product_id_of: Any = lambda hit: hit.product.id,
    ) -> list[Ranked]:
        """Candidates (best first) re-ordered by (1 - w) * search rank score + w * shopper score.

        Both parts are scaled to [0, 1] over the candidates. A cold shopper, or one whose scores are zero
        on every candidate, gets the input order back unchanged (with ``personal`` 0).
        """
        n = len(items)
        plain = [Ranked(item, 1.0 - i / max(n, 1), 0.0, None, None) for i, item in enumerate(items)]
        row = self.scores(shopper_id)
        if row is None or n == 0:
            return plain
        raw = []
        for item in items:
            pos = self._item_pos.get(product_id_of(item))
            raw.append(max(float(row[pos]), 0.0) if pos is not None else 0.0)
        top = max(raw)
        if top <= 0:
            return plain
        ranked = []
        for i, (item, value) in enumerate(zip(items, raw, strict=True)):
            personal = value / top
            score = (1 - self.weight) * (1.0 - i / n) + self.weight * personal
            because, event = self._because(shopper_id, product_id_of(item)) if personal > 0 else (None, None)
            ranked.append(Ranked(item, score, personal, because, event))
        # Stable: equal scores keep the search order.
        order = sorted(range(n), key=lambda i: (-ranked[i].score, i))
        return [ranked[i] for i in order]

    # -- bought together ----------------------------------------------------------------------

    def co_purchases(self, product_id: str) -> list[tuple[str, float]]:
        """Products carted or bought with ``product_id``: same session counts 2, same shopper 1, damped by
        the other product's popularity so best-sellers do not win everything."""
        weights: Counter[str] = Counter()
        for user, sess in self._bought_by.get(product_id, ()):
            same_session = self._baskets.get((user, sess), set())
            for other in self._user_bought.get(user, ()):
                if other != product_id:
                    weights[other] += 2.0 if other in same_session else 1.0
        scored = [(pid, w / math.sqrt(1.0 + self.popularity.get(pid, 0))) for pid, w in weights.items()]
        return sorted(scored, key=lambda kv: (-kv[1], kv[0]))

    def category_complements(self, category: str, min_lift: float = 1.2) -> list[tuple[str, float]]:
        """Other categories bought by the shoppers who bought in ``category``, more often than shoppers at
        large (lift = P(other | category) / P(other) above ``min_lift``, at least two shoppers)."""
        user_cats = [
            {self.catalog.product(pid).category for pid in basket if self.catalog.get_product(pid)}
            for basket in self._user_bought.values()
        ]
        base: Counter[str] = Counter(c for cats in user_cats for c in cats)
        with_cat = [cats for cats in user_cats if category in cats]
        if not with_cat:
            return []
        both: Counter[str] = Counter(c for cats in with_cat for c in cats if c != category)
        n, m = len(user_cats), len(with_cat)
        out = []
        for other, count in both.items():
            lift = (count / m) / (base[other] / n)
            if count >= 2 and lift >= min_lift:
                out.append((other, lift))
        return sorted(out, key=lambda kv: (-kv[1], kv[0]))


# -- refitting the served model (training extra) -----------------------------------------------


def train_recommender(
    tenant: str,
    catalog_name: str,
    *,
    session: Any = None,
    members: int = 2,
    epochs: int = 200,
    seed: int = 0,
    path: Any = None,
    progress: Any | None = None,
    **sasrec_options: Any,
) -> dict[str, Any]:
    """Refit the catalogue's SASRec blend from its stored interactions and swap the served file.

    The model is the evaluated ``sasrec-x2+knn`` (``members`` SASRecs from seeds ``seed``.., blended
    with recency-weighted ItemKNN), trained on each shopper's products but the last two: the
    second-to-last is the validation target that early-stops SASRec and picks the blend weight. The
    ONNX file replaces the old one atomically; every running :class:`Personalizer` of the catalogue
    picks it up on its next request. Needs the training extra (RuntimeError with the install line).
    """
    from concierge.shop.catalog import load_interactions
    from concierge.shop.recommend.base import Interactions, leave_last_out
    from concierge.shop.recommend.blend import Blend, Ensemble
    from concierge.shop.recommend.export import export_onnx
    from concierge.shop.recommend.metrics import evaluate
    from concierge.shop.recommend.sasrec import SASRec, _torch

    _torch()  # the one-line install hint before any work
    if members < 1:
        raise ValueError("members must be at least 1")
    rows = load_interactions(session, tenant, catalog_name)
    if not rows:
        raise ValueError(f"catalogue {tenant}/{catalog_name} has no stored interactions to train on")
    data = Interactions.from_records((r.user, r.product_id, _ts(r.timestamp).timestamp()) for r in rows)
    split = leave_last_out(data)
    if not len(split.eval_users("valid")):
        raise ValueError(
            "no shopper has 3 or more products: nothing to validate on (early stopping, blend weight)"
        )
    base = Ensemble([SASRec(epochs=epochs, seed=seed + k, **sasrec_options) for k in range(members)])
    helper = ItemKNN(half_life=5.0)  # as the plugin's itemknn-seq
    model = Blend(base, helper, name="sasrec-x2+knn" if members == 2 else f"sasrec-x{members}+knn")
    model.fit(split, progress=progress)
    valid = evaluate(model, split, "valid", coverage=False)
    extra = {
        "tenant": tenant,
        "catalog": catalog_name,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "interactions": len(rows),
        "shoppers": split.n_users,
        "valid_NDCG@10": round(float(valid["NDCG@10"]), 4),
        "model": model.params(),
    }
    target = path if path is not None else recommender_path(tenant, catalog_name)
    info = export_onnx(model, target, [str(i) for i in split.item_index], extra=extra)
    return {"path": str(target), "items": len(info.items), "weight": info.weight, **extra}
