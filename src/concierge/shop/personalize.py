"""Personalisation from the shop's own interactions: re-ranking for a known shopper, co-purchases.

:class:`Personalizer` fits an item-to-item recommender (ItemKNN co-occurrence by default; any
``concierge.shop.recommend.base.Recommender`` works) on every shopper's product sequence, then

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
    ) -> None:
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
            self.model = model if model is not None else ItemKNN(neighbours=100, shrink=5.0)
            self.model.fit(split)
        self._cache: dict[str, np.ndarray] = {}

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
        cached = self._cache.get(shopper_id)
        if cached is not None:
            return cached
        hist = [self._item_pos[p] for p in self.history(shopper_id) if p in self._item_pos]
        if not hist:
            return None
        row = np.asarray(self.model.score([np.asarray(hist, dtype=np.int64)])[0], dtype=np.float64)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[shopper_id] = row
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
