"""The dense side of the index: FAISS (flat or HNSW) over product embeddings, searched under a row mask."""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

from concierge.shop.search.text import Embedder

HNSW_MIN_PRODUCTS = 20_000  # below this an exact flat scan is as fast (see scripts/bench_search.py)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
BRUTE_FORCE_MAX = 10_000  # HNSW: at or under this many allowed products, scan them exactly instead
SEARCH_THREADS = 1  # one query uses one thread; concurrency comes from concurrent requests
_BUILD_THREADS = faiss.omp_get_max_threads()  # bulk adds (HNSW graph building) use every core
COMPACT_DEAD_FRACTION = 0.25
PROGRESS_BATCH = 32  # texts per embed call when someone watches the progress


def _embed_batched(
    embed: Embedder, texts: list[str], batch: int, progress: Callable[[int, int], None] | None
):
    out: list[np.ndarray] = []
    if progress is not None:
        progress(0, len(texts))
        batch = min(batch, PROGRESS_BATCH)  # a bar that moves (the engine batches by 32 anyway)
    for i in range(0, len(texts), batch):
        vecs = np.asarray(embed(texts[i : i + batch]), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts[i : i + batch]):
            raise ValueError(f"embed returned shape {vecs.shape} for {len(texts[i : i + batch])} texts")
        out.append(vecs)
        if progress is not None:
            progress(min(i + batch, len(texts)), len(texts))
    return np.vstack(out) if out else np.zeros((0, 0), dtype=np.float32)


def _faiss_vectors(index: faiss.Index) -> np.ndarray:
    """Zero-copy view of the vectors a flat or HNSW-flat index stores (valid until the next add)."""
    storage = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    n, d = storage.ntotal, storage.d
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    return faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)


class DenseSearch:
    """The dense half of :class:`~concierge.shop.search.index.SearchIndex` (a mixin: it uses the index's state)."""

    def _new_faiss(self) -> faiss.Index:
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
            return index
        return faiss.IndexFlatIP(self.dim)

    def _set_dense(self, vectors: np.ndarray) -> None:
        index = self._new_faiss()
        if len(vectors):
            faiss.omp_set_num_threads(_BUILD_THREADS)
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._dense = index
        self._vectors = _faiss_vectors(index)

    def _dense_ranked(
        self, qvec: np.ndarray, pmask: np.ndarray | None, n: int, exclude: int | None = None
    ) -> list[tuple[int, float]]:
        """(product position, similarity), best first, among the allowed products only."""
        n_products = len(self.products)
        allowed: np.ndarray | None = None
        if pmask is not None or exclude is not None:
            allowed = np.ones(n_products, dtype=bool) if pmask is None else pmask.copy()
            if exclude is not None:
                allowed[exclude] = False
        n_allowed = n_products if allowed is None else int(allowed.sum())
        if n_allowed == 0 or n <= 0:
            return []
        n = min(n, n_allowed)
        q = np.ascontiguousarray(qvec.reshape(1, -1), dtype=np.float32)
        faiss.omp_set_num_threads(SEARCH_THREADS)
        alive = self._row_product >= 0
        if allowed is None and bool(alive.all()):
            sims, rows = self._dense.search(q, n)  # exact for flat, approximate for HNSW
            return self._collect(rows[0], sims[0], n)
        # The filter as a row mask (dead rows off), applied before top-k.
        row_mask = alive if allowed is None else alive & allowed[np.maximum(self._row_product, 0)]
        if self.kind == "hnsw" and n_allowed > BRUTE_FORCE_MAX:
            bits = np.packbits(row_mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(row_mask), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, 2 * n))
            sims, rows = self._dense.search(q, n, params=params)
            found = self._collect(rows[0], sims[0], n)
            if len(found) == n:
                return found
        # Small allowed set, flat index, or the graph found too few: exact scan of the allowed rows only.
        return self._exact(q, np.flatnonzero(row_mask), n)

    def _exact(self, q: np.ndarray, rows: np.ndarray, n: int) -> list[tuple[int, float]]:
        """Exact top-n inner products over the given rows (no copy of the vectors)."""
        n = min(n, len(rows))
        if n <= 0:
            return []
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        sims = np.empty((1, n), dtype=np.float32)
        labels = np.empty((1, n), dtype=np.int64)
        faiss.knn_inner_products_by_idx(
            faiss.swig_ptr(q),
            faiss.swig_ptr(self._vectors),
            faiss.swig_ptr(rows),
            self.dim,
            1,
            self._dense.ntotal,
            len(rows),
            n,
            faiss.swig_ptr(sims),
            faiss.swig_ptr(labels),
            len(rows),
        )
        return self._collect(labels[0], sims[0], n)

    def _collect(self, rows: np.ndarray, sims: np.ndarray, n: int) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
            pos = int(self._row_product[row]) if row >= 0 else -1
            if pos >= 0:
                out.append((pos, float(sim)))
                if len(out) == n:
                    break
        return out
