"""What every recommender builds on: the leave-last-out :class:`Split` it trains on, the
:class:`Recommender` protocol (``fit(split)`` then ``score(histories)``), and :func:`top_k`.

These live with the models (the shop uses them at run time); :mod:`concierge.evals.recsys`, the offline
evaluation, imports them from here and re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import sparse

PROTOCOL = (
    "implicit interactions (first occurrence of each user-item pair); per user sorted by (timestamp, item id); "
    "leave-last-out: last = test, second-to-last = validation, rest = train; users with < 3 interactions "
    "train-only; full ranking over all items, no sampled negatives; excluded from ranking: the user's history "
    "(train at validation, train + validation item at test); rank ties broken by item index against the "
    "target; HR@10, NDCG@10, MRR (full rank), coverage = share of catalogue in any top-10"
)


@dataclass
class Split:
    """Leave-last-out split with users and items re-indexed to 0..n-1 (sorted by raw id)."""

    user_index: np.ndarray  # position -> raw user id
    item_index: np.ndarray  # position -> raw item id
    train: list[np.ndarray]  # per user: training item indices in time order
    valid: np.ndarray  # per user: validation item index, -1 if none
    test: np.ndarray  # per user: test item index, -1 if none
    protocol: str = field(default=PROTOCOL)

    @property
    def n_users(self) -> int:
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        return len(self.item_index)

    @property
    def n_train_interactions(self) -> int:
        return int(sum(len(seq) for seq in self.train))

    def train_matrix(self) -> sparse.csr_matrix:
        """Binary users x items CSR matrix of the training interactions."""
        rows = np.repeat(np.arange(self.n_users), [len(s) for s in self.train])
        cols = np.concatenate(self.train) if self.train else np.array([], dtype=np.int64)
        data = np.ones(len(cols), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(self.n_users, self.n_items))

    def eval_users(self, stage: str) -> np.ndarray:
        targets = self._targets(stage)
        return np.flatnonzero(targets >= 0)

    def targets(self, stage: str, users: np.ndarray) -> np.ndarray:
        return self._targets(stage)[users]

    def histories(self, stage: str, users: Iterable[int]) -> list[np.ndarray]:
        """The sequence a model sees (and that is excluded from ranking) when predicting ``stage``."""
        if stage == "valid":
            return [self.train[u] for u in users]
        if stage == "test":
            out = []
            for u in users:
                v = self.valid[u]
                out.append(np.append(self.train[u], v) if v >= 0 else self.train[u])
            return out
        raise ValueError(f"unknown stage {stage!r} (valid or test)")

    def _targets(self, stage: str) -> np.ndarray:
        if stage == "valid":
            return self.valid
        if stage == "test":
            return self.test
        raise ValueError(f"unknown stage {stage!r} (valid or test)")


class Recommender(Protocol):
    """What the evaluator needs: fit on a split's training data, score the catalogue from a history."""

    name: str

    def fit(self, split: Split, progress: Any | None = None) -> None: ...

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores (len(histories) x n_items); higher is better. History items are masked by the caller."""
        ...


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices per row, ordered by score then item index (same order as ``rank_targets``)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # argpartition does not order ties by index; redo exactly with a lexsort on the candidate set
    # widened to every item tied with the k-th score.
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for row in range(scores.shape[0]):
        kth = scores[row, part[row]].min()
        cand = np.flatnonzero(scores[row] >= kth)
        order = np.lexsort((cand, -scores[row, cand]))
        out[row] = cand[order[:k]]
    return out


@dataclass(frozen=True)
class Interactions:
    """Implicit interactions as three parallel arrays (any hashable-sortable ids, numeric timestamps)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if len(self.item_ids) != n or len(self.timestamps) != n:
            raise ValueError("user_ids, item_ids and timestamps must have the same length")

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_records(cls, records: Iterable[tuple[Any, Any, float]]) -> Interactions:
        """From (user, item, timestamp) tuples, e.g. the shop's own interaction log."""
        rows = list(records)
        if not rows:
            return cls(np.array([]), np.array([]), np.array([], dtype=np.float64))
        users, items, times = zip(*rows, strict=True)
        return cls(np.asarray(users), np.asarray(items), np.asarray(times, dtype=np.float64))


def leave_last_out(data: Interactions) -> Split:
    """Split per user by time (ties by item id): last -> test, second-to-last -> validation."""
    if len(data) == 0:
        raise ValueError("no interactions")
    user_index, u = np.unique(data.user_ids, return_inverse=True)
    item_index, i = np.unique(data.item_ids, return_inverse=True)
    t = np.asarray(data.timestamps, dtype=np.float64)
    # Sort by user, then time, then item index (np.lexsort: last key is primary).
    order = np.lexsort((i, t, u))
    u, i = u[order], i[order]
    # Keep the first occurrence of each (user, item): stable unique on the pair key, in sorted order.
    key = u.astype(np.int64) * len(item_index) + i
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    u, i = u[keep], i[keep]
    bounds = np.searchsorted(u, np.arange(len(user_index) + 1))
    train: list[np.ndarray] = []
    valid = np.full(len(user_index), -1, dtype=np.int64)
    test = np.full(len(user_index), -1, dtype=np.int64)
    for user in range(len(user_index)):
        seq = i[bounds[user] : bounds[user + 1]].astype(np.int64)
        if len(seq) >= 3:
            train.append(seq[:-2])
            valid[user], test[user] = seq[-2], seq[-1]
        else:
            train.append(seq)
    return Split(user_index, item_index, train, valid, test)
