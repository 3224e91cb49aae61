"""The search index: build, persist, update, and search (BM25 and dense fused with reciprocal rank fusion)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np

from concierge import config
from concierge.shop.catalog import Catalog, Product, Variant
from concierge.shop.search.dense import (
    _BUILD_THREADS,
    COMPACT_DEAD_FRACTION,
    HNSW_EF_SEARCH,
    HNSW_MIN_PRODUCTS,
    PROGRESS_BATCH,
    DenseSearch,
    _embed_batched,
    _faiss_vectors,
)
from concierge.shop.search.filters import SearchFilters, _FilterIndex
from concierge.shop.search.lexical import LexicalSearch
from concierge.shop.search.text import PROBE_TEXT, Embedder, _text_hash, embed_text, tokenize, variant_text

log = logging.getLogger("concierge.shop.search")  # the logger name from before the split


RRF_K = 60
FORMAT_VERSION = 1


class IndexMismatchError(RuntimeError):
    """The saved index cannot be used as is (different embedder, format or missing files)."""


@dataclass(frozen=True)
class Hit:
    product: Product
    variant: Variant
    score: float
    retrievers: tuple[str, ...]  # which retrievers ranked it: "bm25", "dense" (empty: filters only)
    ranks: dict[str, int] = field(default_factory=dict)  # 1-based rank in each retriever's list

    @property
    def variant_id(self) -> str:
        return self.variant.id

    @property
    def product_id(self) -> str:
        return self.product.id


@dataclass
class UpdateReport:
    added: int = 0
    changed: int = 0  # content changed (price, stock, text ...)
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0  # texts sent to the embedder
    compacted: bool = False
    seconds: float = 0.0


def index_folder(tenant: str, catalog: str) -> Path:
    """Where a tenant's catalogue index lives: ``CONCIERGE_HOME/indexes/<tenant>/<catalog>``."""
    for part in (tenant, catalog):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise ValueError(f"bad index name part {part!r}")
    return config.home() / "indexes" / tenant / catalog


def _spread_order(n: int) -> np.ndarray:
    """0..n-1 in an order whose every prefix is spread evenly (a golden-ratio low-discrepancy sequence)."""
    return np.argsort((np.arange(n) * 0.6180339887498949) % 1.0, kind="stable")


def _embed_first(
    embed: Embedder, texts: list[str], limit: int, seconds: float | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed up to ``limit`` texts in spread order, stopping once ``seconds`` are spent.

    Returns (the embedded positions in ascending order, their vectors in that order)."""
    order = _spread_order(len(texts))[:limit]
    deadline = time.perf_counter() + seconds if seconds is not None else None
    chosen: list[int] = []
    chunks: list[np.ndarray] = []
    if progress is not None:
        progress(0, limit)
    for i in range(0, limit, PROGRESS_BATCH):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        batch = [int(j) for j in order[i : i + PROGRESS_BATCH]]
        vecs = np.asarray(embed([texts[j] for j in batch]), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(batch):
            raise ValueError(f"embed returned shape {vecs.shape} for {len(batch)} texts")
        chosen.extend(batch)
        chunks.append(vecs)
        if progress is not None:
            progress(len(chosen), limit)
    if progress is not None and len(chosen) < limit:
        progress(len(chosen), len(chosen))  # stopped by the time budget: this part is done
    if not chosen:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    rows = np.asarray(chosen, dtype=np.int64)
    keep = np.argsort(rows)
    return rows[keep], np.vstack(chunks)[keep]


class SearchIndex(LexicalSearch, DenseSearch):
    """Hybrid search over one catalogue. Build, load, update, search, similar."""

    def __init__(self) -> None:
        self.catalog: Catalog
        self.embed: Embedder
        self.folder: Path | None = None
        self.partial = False  # a quick first index: not every product has a vector yet
        self.kind = "flat"
        self.dim = 0
        self.probe: list[float] = []
        self._dense: faiss.Index
        self._vectors: np.ndarray
        self._row_product: np.ndarray  # faiss row -> product position, -1 for a dead row
        self._row_text_hash: list[str | None]
        self._product_row: np.ndarray  # product position -> faiss row
        self._bm25: bm25s.BM25
        self._filters: _FilterIndex

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        embed: Embedder,
        folder: str | Path | None = None,
        *,
        kind: str = "auto",
        batch_size: int = 256,
        progress: Callable[[int, int], None] | None = None,
        first: int | None = None,
        first_seconds: float | None = None,
    ) -> SearchIndex:
        """Embed every product and build both retrievers; saved to ``folder`` when given.

        ``kind``: ``"flat"`` (exact), ``"hnsw"`` (approximate graph) or ``"auto"`` (HNSW from
        ``HNSW_MIN_PRODUCTS`` products).

        A quick first index for a large catalogue: ``first`` (at most this many products) and/or
        ``first_seconds`` (embed for about this long) embed only part of the catalogue, in an order
        whose every prefix is spread evenly over it; BM25 and the filters cover every product, the
        others are found by their words only. A partial index is not saved (``partial`` is True);
        :meth:`completed` makes the full index from it.
        """
        self = cls()
        self.catalog = catalog
        self.embed = embed
        products = [p for p in catalog.products if p.variants]
        texts = [embed_text(p) for p in products]
        rows = np.arange(len(products), dtype=np.int64)
        limit = len(products) if first is None else max(0, min(first, len(products)))
        if limit < len(products) or first_seconds is not None:
            rows, vectors = _embed_first(embed, texts, limit, first_seconds, progress)
            texts = [texts[i] for i in rows]
        else:
            vectors = _embed_batched(embed, texts, batch_size, progress)
        self.partial = len(rows) < len(products)
        if self.partial:
            folder = None
        self.folder = Path(folder) if folder is not None else None
        self.probe = [float(x) for x in np.asarray(embed([PROBE_TEXT]), dtype=np.float32)[0]]
        self.dim = len(self.probe)
        if kind == "auto":
            kind = "hnsw" if len(products) >= HNSW_MIN_PRODUCTS else "flat"
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"unknown index kind {kind!r}")
        self.kind = kind
        self._row_text_hash = [_text_hash(t) for t in texts]
        self._row_product = rows
        self._set_dense(vectors if len(texts) else np.zeros((0, self.dim), np.float32))
        self._rebuild_lexical(products)
        if self.folder is not None:
            self.save(self.folder)
        return self

    def completed(
        self, folder: str | Path | None = None, *, batch_size: int = 256,
        progress: Callable[[int, int], None] | None = None, embed: Embedder | None = None,
    ) -> SearchIndex:
        """The full index of this index's catalogue, reusing the vectors it has (a new object: this
        one keeps serving while it is made); saved to ``folder`` (default: this index's).

        ``embed``: what embeds the missing products (default: this index's embedder; the same model,
        perhaps wrapped to give way to requests). The full index searches with this index's embedder.
        """
        known = {
            self._row_text_hash[row]: np.array(self._vectors[row])
            for row in range(len(self._row_product))
            if self._row_product[row] >= 0 and self._row_text_hash[row] is not None
        }
        query_embed = self.embed
        embed = embed or self.embed

        def reuse(texts: list[str]) -> np.ndarray:
            found = [known.get(_text_hash(t)) for t in texts]
            missing = [i for i, v in enumerate(found) if v is None]
            fresh = np.asarray(embed([texts[i] for i in missing]), dtype=np.float32) if missing else None
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for i, v in enumerate(found):
                if v is not None:
                    out[i] = v
            for k, i in enumerate(missing):
                out[i] = fresh[k]
            return out

        full = type(self).build(
            self.catalog, reuse, folder if folder is not None else self.folder, kind=self.kind,
            batch_size=batch_size, progress=progress,
        )
        full.embed = query_embed
        return full

    @property
    def products(self) -> list[Product]:
        return self._filters.products

    # ---- persistence ------------------------------------------------------------------------

    def save(self, folder: str | Path | None = None) -> Path:
        """Write the index to ``folder`` (atomically: a temp folder swapped in)."""
        target = Path(folder) if folder is not None else self.folder
        if target is None:
            raise ValueError("no folder to save the index to")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Unique per process and thread: a background completion and a refresh may save at once.
        tag = f"{os.getpid()}-{threading.get_ident()}"
        tmp = target.parent / f".{target.name}.tmp-{tag}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        faiss.write_index(self._dense, str(tmp / "dense.faiss"))
        if self.products:
            self._bm25.save(str(tmp / "bm25"), show_progress=False)
        with (tmp / "catalog.jsonl").open("w", encoding="utf-8") as fh:
            for p in self.products:
                fh.write(json.dumps(p.to_record(), ensure_ascii=False) + "\n")
        ids = [p.id for p in self.products]
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "tenant": self.catalog.tenant,
            "catalog": self.catalog.name,
            "product_ids": ids,
            "content_hashes": [p.content_hash for p in self.products],
            "row_products": [ids[i] if i >= 0 else None for i in self._row_product.tolist()],
            "row_text_hashes": self._row_text_hash,
            "probe": self.probe,
            "saved_at": time.time(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        old = target.parent / f".{target.name}.old-{tag}"
        for attempt in range(3):  # another process (a second gateway worker) may swap its copy in between
            try:
                if target.exists():
                    target.rename(old)
                tmp.rename(target)
                break
            except OSError:
                if attempt == 2:
                    raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        self.folder = target
        return target

    @classmethod
    def load(cls, folder: str | Path, embed: Embedder, catalog: Catalog | None = None) -> SearchIndex:
        """Open a saved index. With ``catalog`` given and different from the snapshot, it is updated.

        Raises :class:`IndexMismatchError` when files are missing or ``embed`` is not the embedder the
        index was built with (checked on a probe sentence).
        """
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file() or not (folder / "dense.faiss").is_file():
            raise IndexMismatchError(f"no search index in {folder}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{folder}: index format {meta.get('format')} (expected {FORMAT_VERSION})"
            )
        probe = np.asarray(embed([PROBE_TEXT]), dtype=np.float32)[0]
        stored = np.asarray(meta["probe"], dtype=np.float32)
        if probe.shape != stored.shape or float(np.max(np.abs(probe - stored))) > 1e-3:
            raise IndexMismatchError(f"{folder}: built with a different embedder; rebuild the index")
        self = cls()
        self.embed = embed
        self.folder = folder
        self.kind = meta["kind"]
        self.dim = int(meta["dim"])
        self.probe = [float(x) for x in meta["probe"]]
        snapshot = Catalog.from_snapshot(
            (json.loads(line) for line in (folder / "catalog.jsonl").open(encoding="utf-8") if line.strip()),
            tenant=meta.get("tenant", ""),
            name=meta.get("catalog", ""),
        )
        self.catalog = snapshot
        pos = {p.id: i for i, p in enumerate(snapshot.products)}
        self._row_product = np.asarray(
            [pos[pid] if pid is not None else -1 for pid in meta["row_products"]], dtype=np.int64
        )
        self._row_text_hash = list(meta["row_text_hashes"])
        self._dense = faiss.read_index(str(folder / "dense.faiss"))
        if isinstance(self._dense, faiss.IndexHNSW):
            self._dense.hnsw.efSearch = HNSW_EF_SEARCH
        self._vectors = _faiss_vectors(self._dense)
        if self._dense.ntotal != len(self._row_product):
            raise IndexMismatchError(f"{folder}: dense.faiss and meta.json disagree; rebuild the index")
        bm25_dir = folder / "bm25"
        self._rebuild_lexical(snapshot.products, bm25_dir if bm25_dir.is_dir() else None)
        if catalog is not None:
            self.update(catalog)
        return self

    @classmethod
    def open(cls, catalog: Catalog, embed: Embedder, folder: str | Path | None = None) -> SearchIndex:
        """Load the saved index for ``catalog`` and bring it up to date, or build it if unusable."""
        folder = Path(folder) if folder is not None else index_folder(catalog.tenant, catalog.name)
        try:
            return cls.load(folder, embed, catalog)
        except IndexMismatchError as exc:
            log.info("rebuilding search index: %s", exc)
            return cls.build(catalog, embed, folder)

    # ---- incremental update -----------------------------------------------------------------

    def update(self, catalog: Catalog, *, batch_size: int = 256) -> UpdateReport:
        """Bring the index in line with ``catalog``: embed only products whose text changed."""
        t0 = time.perf_counter()
        report = UpdateReport()
        old_pos = {p.id: i for i, p in enumerate(self.products)}
        old_hash = {p.id: p.content_hash for p in self.products}
        products = [p for p in catalog.products if p.variants]
        new_ids = {p.id for p in products}
        for p in products:
            if p.id not in old_hash:
                report.added += 1
            elif old_hash[p.id] != p.content_hash:
                report.changed += 1
            else:
                report.unchanged += 1
        report.removed = sum(1 for pid in old_hash if pid not in new_ids)

        # Reuse the row of every product whose embedded text is the same; embed the rest.
        row_of: dict[str, int] = {}
        to_embed: list[tuple[int, str]] = []
        for i, p in enumerate(products):
            text = embed_text(p)
            j = old_pos.get(p.id)
            row = int(self._product_row[j]) if j is not None else -1
            if row >= 0 and self._row_text_hash[row] == _text_hash(text):
                row_of[p.id] = row
            else:
                to_embed.append((i, text))
        new_vecs = _embed_batched(self.embed, [t for _, t in to_embed], batch_size, None)
        report.embedded = len(to_embed)

        kept_rows = set(row_of.values())
        dead_after = len(self._row_product) - len(kept_rows)
        total_after = len(self._row_product) + len(to_embed)
        if self.kind == "flat" or dead_after > COMPACT_DEAD_FRACTION * max(total_after, 1):
            # Compact: a fresh index in catalogue order, from kept vectors (copied) plus new ones.
            vectors = np.zeros((len(products), self.dim), dtype=np.float32)
            hashes: list[str | None] = [None] * len(products)
            for i, p in enumerate(products):
                if p.id in row_of:
                    vectors[i] = self._vectors[row_of[p.id]]
                    hashes[i] = self._row_text_hash[row_of[p.id]]
            for (i, text), vec in zip(to_embed, new_vecs, strict=True):
                vectors[i] = vec
                hashes[i] = _text_hash(text)
            self._row_text_hash = hashes
            self._row_product = np.arange(len(products), dtype=np.int64)
            self._set_dense(vectors)
            report.compacted = True
        else:
            # Append the new vectors; rows of removed or re-embedded products become tombstones.
            first_new = self._dense.ntotal
            if len(to_embed):
                faiss.omp_set_num_threads(_BUILD_THREADS)
                self._dense.add(np.ascontiguousarray(new_vecs, dtype=np.float32))
                self._vectors = _faiss_vectors(self._dense)
            pos = {p.id: i for i, p in enumerate(products)}
            row_product = np.full(self._dense.ntotal, -1, dtype=np.int64)
            for pid, row in row_of.items():
                row_product[row] = pos[pid]
            hashes = list(self._row_text_hash) + [None] * len(to_embed)
            for k, (i, text) in enumerate(to_embed):
                row_product[first_new + k] = i
                hashes[first_new + k] = _text_hash(text)
            for row in range(first_new):
                if row_product[row] < 0:
                    hashes[row] = None
            self._row_product = row_product
            self._row_text_hash = hashes
        self.catalog = catalog
        self._rebuild_lexical(products)
        if self.folder is not None:
            self.save(self.folder)
        report.seconds = time.perf_counter() - t0
        return report

    # ---- search -----------------------------------------------------------------------------

    def count(self, filters: SearchFilters | None = None) -> int:
        """How many products have at least one variant passing ``filters``."""
        vmask = self._filters.variant_mask(filters)
        return len(self.products) if vmask is None else int(self._filters.product_mask(vmask).sum())

    def _best_variant(self, pos: int, vmask: np.ndarray | None, query_tokens: set[str]) -> Variant | None:
        f = self._filters
        start, count = int(f.v_start[pos]), int(f.v_count[pos])
        best: tuple[int, int, int] | None = None
        chosen: Variant | None = None
        for off in range(count):
            if vmask is not None and not vmask[start + off]:
                continue
            v = f.variants[start + off]
            named = len(query_tokens & set(tokenize(variant_text(v)))) if query_tokens else 0
            key = (named, int(v.in_stock), -off)
            if best is None or key > best:
                best, chosen = key, v
        return chosen

    def _hit(
        self,
        pos: int,
        vmask: np.ndarray | None,
        filters: SearchFilters | None,
        query_tokens: set[str],
        **kw: Any,
    ) -> Hit | None:
        variant = self._best_variant(pos, vmask, query_tokens)
        product = self.products[pos]
        if variant is None:
            return None
        if filters is not None and not filters.matches(product, variant):
            # The masks and the reference disagree: a bug. Never show a product that breaks a constraint.
            log.error("search filter mismatch on %s/%s; dropped", product.id, variant.id)
            return None
        return Hit(product=product, variant=variant, **kw)

    def search(self, query: str, filters: SearchFilters | None = None, k: int = 10) -> list[Hit]:
        """Top ``k`` products for ``query`` under ``filters``, each as its best matching variant."""
        if k <= 0 or not self.products:
            return []
        vmask = self._filters.variant_mask(filters)
        pmask = self._filters.product_mask(vmask) if vmask is not None else None
        query_tokens = tokenize(query or "")
        qset = set(query_tokens)
        if not query_tokens:
            # No text: the filtered catalogue in its own order.
            positions = np.flatnonzero(pmask) if pmask is not None else np.arange(len(self.products))
            hits = []
            for pos in positions:
                hit = self._hit(int(pos), vmask, filters, qset, score=0.0, retrievers=(), ranks={})
                if hit is not None:
                    hits.append(hit)
                    if len(hits) == k:
                        break
            return hits
        n_cand = max(50, 4 * k)
        lexical = self._bm25_ranked(query_tokens, pmask, n_cand)
        qvec = np.asarray(self.embed([query]), dtype=np.float32)[0]
        dense = [pos for pos, _ in self._dense_ranked(qvec, pmask, n_cand)]
        fused: dict[int, float] = {}
        ranks: dict[int, dict[str, int]] = {}
        for name, ranking in (("bm25", lexical), ("dense", dense)):
            for rank, pos in enumerate(ranking, 1):
                fused[pos] = fused.get(pos, 0.0) + 1.0 / (RRF_K + rank)
                ranks.setdefault(pos, {})[name] = rank
        order = sorted(fused, key=lambda p: (-fused[p], min(ranks[p].values()), p))
        hits = []
        for pos in order:
            r = ranks[pos]
            retrievers = tuple(name for name in ("bm25", "dense") if name in r)
            hit = self._hit(pos, vmask, filters, qset, score=fused[pos], retrievers=retrievers, ranks=r)
            if hit is not None:
                hits.append(hit)
                if len(hits) == k:
                    break
        return hits

    def similar(self, item_id: str, k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        """More like this: nearest products to a product (or a variant's product) by dense vector."""
        f = self._filters
        pos = f.product_pos.get(item_id)
        if pos is None:
            vi = f.variant_pos.get(item_id)
            if vi is None:
                raise KeyError(item_id)
            pos = int(f.v_product[vi])
        row = int(self._product_row[pos])
        if row < 0:
            return []
        vmask = f.variant_mask(filters)
        pmask = f.product_mask(vmask) if vmask is not None else None
        ranked = self._dense_ranked(np.array(self._vectors[row]), pmask, k, exclude=pos)
        hits = []
        for rank, (p, sim) in enumerate(ranked, 1):
            hit = self._hit(p, vmask, filters, set(), score=sim, retrievers=("dense",), ranks={"dense": rank})
            if hit is not None:
                hits.append(hit)
        return hits
