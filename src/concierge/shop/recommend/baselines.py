"""Baseline recommenders on numpy/scipy: popularity, item-to-item cosine (ItemKNN), implicit ALS.

Every model follows ``concierge.shop.recommend.base.Recommender``: ``fit(split)`` learns from the training
sequences only, ``score(histories)`` returns one row of catalogue scores per history. Scoring from a
history (not a user id) means a new shopper, or a shopper whose history grew since training, is scored
without refitting.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse

from concierge.shop.recommend.base import Split


def _task(progress: Any | None, description: str, total: int) -> Any | None:
    return progress.add_task(description, total=total) if progress is not None else None


def _advance(progress: Any | None, task: Any | None, **fields: Any) -> None:
    if progress is not None and task is not None:
        progress.update(task, advance=1, **fields)


class Popularity:
    """Items ranked by how many training users interacted with them (each user-item pair counted once)."""

    name = "pop"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, split: Split, progress: Any | None = None) -> None:
        counts = np.zeros(split.n_items, dtype=np.float64)
        for seq in split.train:
            np.add.at(counts, np.unique(seq), 1.0)
        self.counts = counts

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("fit the model first")
        return np.tile(self.counts.astype(np.float32), (len(histories), 1))

    def params(self) -> dict[str, Any]:
        return {}


class ItemKNN:
    """Item-to-item cosine similarity on the binary user-item training matrix.

    A history is scored as the (optionally recency-weighted) sum of its items' similarity rows, each row
    pruned to its ``neighbours`` most similar items. ``shrink`` damps similarities resting on few
    co-occurrences; ``half_life`` (in items) makes it sequence-aware by down-weighting older history.
    """

    name = "itemknn"

    def __init__(self, neighbours: int = 200, shrink: float = 10.0, half_life: float | None = None) -> None:
        self.neighbours = neighbours
        self.shrink = shrink
        self.half_life = half_life
        self.sim: sparse.csr_matrix | None = None

    def fit(self, split: Split, progress: Any | None = None, chunk: int = 1024) -> None:
        x = split.train_matrix()
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        n = split.n_items
        k = min(self.neighbours, max(n - 1, 1))
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        task = _task(progress, "itemknn similarities", (n + chunk - 1) // chunk)
        # Dense blocks of ``chunk`` rows keep memory bounded (a full dense item x item matrix is n^2).
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            co = (xt[start:stop] @ x).toarray()
            denom = norms[start:stop, None] * norms[None, :] + self.shrink
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom > 0, co / denom, 0.0)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            top = (
                np.argpartition(-sim, k - 1, axis=1)[:, :k]
                if k < n
                else np.tile(np.arange(n), (stop - start, 1))
            )
            top_vals = np.take_along_axis(sim, top, axis=1)
            nz = top_vals > 0
            rows.append(np.repeat(np.arange(start, stop), nz.sum(axis=1)))
            cols.append(top[nz])
            vals.append(top_vals[nz])
            _advance(progress, task)
        self.sim = sparse.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
        )

    def _weights(self, length: int) -> np.ndarray:
        if not self.half_life or length == 0:
            return np.ones(length, dtype=np.float32)
        age = np.arange(length - 1, -1, -1, dtype=np.float32)
        return np.power(0.5, age / self.half_life).astype(np.float32)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self.sim is None:
            raise RuntimeError("fit the model first")
        n = self.sim.shape[0]
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if histories else []
        data = np.concatenate([self._weights(len(h)) for h in histories]) if histories else []
        h = sparse.csr_matrix((data, (rows, cols)), shape=(len(histories), n))
        return np.asarray((h @ self.sim).toarray(), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "shrink": self.shrink, "half_life": self.half_life}


def _cg_half_step(conf: sparse.csr_matrix, x: np.ndarray, y: np.ndarray, reg: float, steps: int) -> None:
    """A few conjugate-gradient steps on every row of ``x`` at once (Hu, Koren & Volinsky implicit ALS).

    Solves (Y'Y + reg I + Y' (C_u - I) Y) x_u = Y' C_u p_u for all u, where ``conf`` holds c_ui > 0 on the
    observed entries (p_ui = 1) and c_ui = 1, p_ui = 0 elsewhere. ``x`` is updated in place, warm-started.
    """
    k = x.shape[1]
    yty = y.T @ y + reg * np.eye(k, dtype=y.dtype)
    row = np.repeat(np.arange(conf.shape[0]), np.diff(conf.indptr))
    col = conf.indices
    c = conf.data.astype(y.dtype)
    y_obs = y[col]

    def apply(p: np.ndarray) -> np.ndarray:
        d = np.einsum("nk,nk->n", y_obs, p[row]) * (c - 1.0)
        extra = sparse.csr_matrix((d, col, conf.indptr), shape=conf.shape) @ y
        return p @ yty + extra

    b = sparse.csr_matrix((c, col, conf.indptr), shape=conf.shape) @ y
    r = b - apply(x)
    p = r.copy()
    rs = np.einsum("uk,uk->u", r, r)
    for _ in range(steps):
        active = rs > 1e-20
        if not active.any():
            break
        ap = apply(p)
        pap = np.einsum("uk,uk->u", p, ap)
        alpha = np.where(active & (pap > 0), rs / np.where(pap > 0, pap, 1.0), 0.0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = np.einsum("uk,uk->u", r, r)
        beta = np.where(rs > 1e-20, rs_new / np.where(rs > 1e-20, rs, 1.0), 0.0)
        p = r + beta[:, None] * p
        rs = rs_new


class ALS:
    """Implicit-feedback matrix factorisation (weighted ALS, confidence ``alpha`` on observed items).

    ``backend="implicit"`` uses the compiled ``implicit`` package, ``"numpy"`` the vectorised conjugate
    gradient solver here, ``"auto"`` the former when importable. Scoring folds the history in: the user
    vector is solved exactly from the item factors, so a history that grew since training (the
    validation item at test time, a new shopper) is scored without refitting.
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 1.0,
        alpha: float = 5.0,
        iterations: int = 15,
        cg_steps: int = 3,
        backend: str = "auto",
        threads: int = 2,
        seed: int = 0,
    ) -> None:
        if backend not in ("auto", "implicit", "numpy"):
            raise ValueError(f"unknown ALS backend {backend!r} (auto, implicit, numpy)")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.cg_steps = cg_steps
        self.backend = backend
        self.threads = threads
        self.seed = seed
        self.item_factors: np.ndarray | None = None
        self.used_backend: str | None = None

    def _resolve_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        try:
            import implicit  # noqa: F401
        except ImportError:
            return "numpy"
        return "implicit"

    def fit(self, split: Split, progress: Any | None = None) -> None:
        self.used_backend = self._resolve_backend()
        x = split.train_matrix()
        task = _task(progress, f"als ({self.used_backend})", self.iterations)
        if self.used_backend == "implicit":
            self.item_factors = self._fit_implicit(x, progress, task)
        else:
            self.item_factors = self._fit_numpy(x, progress, task)

    def _fit_implicit(self, x: sparse.csr_matrix, progress: Any | None, task: Any | None) -> np.ndarray:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # implicit parallelises itself and warns when BLAS is multi-threaded too.
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                use_cg=True,
                num_threads=self.threads,
                random_state=self.seed,
            )
            model.fit(x, show_progress=False, callback=lambda *_: _advance(progress, task))
        return np.asarray(model.item_factors, dtype=np.float32)

    def _fit_numpy(self, x: sparse.csr_matrix, progress: Any | None, task: Any | None) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        users = rng.random((x.shape[0], self.factors), dtype=np.float32) * 0.01
        items = rng.random((x.shape[1], self.factors), dtype=np.float32) * 0.01
        cui = (x * self.alpha).astype(np.float32).tocsr()
        ciu = cui.T.tocsr()
        for _ in range(self.iterations):
            _cg_half_step(cui, users, items, self.regularization, self.cg_steps)
            _cg_half_step(ciu, items, users, self.regularization, self.cg_steps)
            _advance(progress, task)
        return items

    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Exact least-squares user vectors for the given histories (item factors fixed)."""
        if self.item_factors is None:
            raise RuntimeError("fit the model first")
        y = self.item_factors.astype(np.float64)
        k = y.shape[1]
        base = y.T @ y + self.regularization * np.eye(k)
        a = np.empty((len(histories), k, k))
        b = np.empty((len(histories), k))
        for row, hist in enumerate(histories):
            yh = y[np.unique(np.asarray(hist, dtype=np.int64))]
            a[row] = base + (self.alpha - 1.0) * (yh.T @ yh)
            b[row] = self.alpha * yh.sum(axis=0)
        return np.linalg.solve(a, b[..., None])[..., 0]

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        vectors = self.user_vectors(histories)
        return (vectors @ self.item_factors.T.astype(np.float64)).astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "backend": self.used_backend or self.backend,
        }
