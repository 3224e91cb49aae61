"""Hybrid product search: BM25 (bm25s) + dense vectors (FAISS), reciprocal rank fusion, exact filters.

Documents are products; hits are variants. A query runs BM25 over title, description, category,
brand, attributes and option values, and a nearest-neighbour search over product embeddings made by
the ``embed`` function the caller gives (unit-normalised float32 rows; in production the gateway's
``embed`` alias). The two rankings are fused with RRF (k=60), and each product returns its best
variant that satisfies the filters (option values named in the query first, then in stock).

Filters are hard constraints, applied as a mask *before* top-k, never after:

* price range on the **variant** price; ``in_stock`` on the variant;
* categories: segment-wise prefix of the category path (``"Women > Shoes"`` matches
  ``"Women > Shoes > Sneakers"``), case-insensitive, several = any of them;
* attributes: ``{"color": {"blue", "navy"}}`` -- the variant's value (its option, else the product
  attribute; ``brand`` is an attribute too) must be one of the values, case-insensitive; several
  keys must all hold;
* exclusions: ``exclude_attributes`` (same matching, negated) and ``exclude_terms`` -- a variant is
  excluded when every word of the term occurs in its product's text (title, description, category,
  brand, attributes) or in its own option values; words are compared after the same tokenising
  and light plural stemming as search (``"leather"`` also drops ``"vegan leather"``);
* ``exclude_ids`` / ``product_ids``: product or variant ids to drop / to restrict to.

:meth:`SearchFilters.matches` is the reference definition; the index computes the same thing with
numpy masks. BM25 scores every document, so masking it is exact. On the dense side only allowed
rows can enter the top-k: a flat index scans exactly the allowed rows; HNSW searches its graph with
the mask as a row bitmap (``IDSelectorBitmap``) and, when the allowed set is small or the graph
yields too few, falls back to the exact scan of the allowed rows. Every hit is
checked against :meth:`SearchFilters.matches` before it is returned. One query runs on one thread
(``SEARCH_THREADS``): under load, OpenMP teams on a busy machine cost ~10x (measured).

On disk (``CONCIERGE_HOME/indexes/<tenant>/<catalog>/``): ``meta.json`` (ids, per-product content
and text hashes, an embedder probe vector), ``dense.faiss``, ``bm25/`` and ``catalog.jsonl`` (the
snapshot the index was built from). :meth:`SearchIndex.update` re-embeds only products whose text
changed; the FAISS index appends them and tombstones their old rows (HNSW cannot delete), compacting
when a quarter of the rows are dead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import faiss
import numpy as np

from concierge import config
from concierge.shop.catalog import Catalog, Product, Variant

log = logging.getLogger(__name__)

Embedder = Callable[[list[str]], np.ndarray]

RRF_K = 60
FORMAT_VERSION = 1
HNSW_MIN_PRODUCTS = 20_000  # below this an exact flat scan is as fast (see scripts/bench_search.py)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
BRUTE_FORCE_MAX = 10_000  # HNSW: at or under this many allowed products, scan them exactly instead
SEARCH_THREADS = 1  # one query uses one thread; concurrency comes from concurrent requests
_BUILD_THREADS = faiss.omp_get_max_threads()  # bulk adds (HNSW graph building) use every core
COMPACT_DEAD_FRACTION = 0.25
PROBE_TEXT = "concierge embedder probe: a blue cotton t-shirt"

STOPWORDS = frozenset(
    "a an and are as at be but by for from has have i in is it its me my of on or our so that the this "
    "to was we with you your".split()
)
_TOKEN_RE = re.compile(r"[a-z0-9]+")


class IndexMismatchError(RuntimeError):
    """The saved index cannot be used as is (different embedder, format or missing files)."""


# --------------------------------------------------------------------------------------------------
# Text


_stem_cache: dict[str, str] = {}


def _stem(token: str) -> str:
    """Light plural stemming: sneakers -> sneaker, dresses -> dress, batteries -> battery."""
    out = _stem_cache.get(token)
    if out is None:
        out = token
        if len(token) > 3 and not token.isdigit():
            if token.endswith("ies") and len(token) > 4:
                out = token[:-3] + "y"
            elif token.endswith(("sses", "xes", "zes", "ches", "shes")):
                out = token[:-2]
            elif token.endswith("s") and not token.endswith(("ss", "us", "is")):
                out = token[:-1]
        if len(_stem_cache) < 500_000:
            _stem_cache[token] = out
    return out


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, lightly stemmed (the same for documents and queries)."""
    return [_stem(t) for t in _TOKEN_RE.findall(text.lower()) if t not in STOPWORDS]


def _attr_text(attributes: Mapping[str, str | list[str]]) -> str:
    parts = []
    for key, value in attributes.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"{key} {' '.join(values)}")
    return ". ".join(parts)


def product_text(product: Product) -> str:
    """The product's own text (no variant options): what keyword exclusions look at, with the options."""
    return " . ".join(
        x
        for x in (
            product.title,
            product.description,
            product.category,
            product.brand,
            _attr_text(product.attributes),
        )
        if x
    )


def variant_text(variant: Variant) -> str:
    return " ".join(variant.options.values())


def embed_text(product: Product) -> str:
    """What the dense side embeds: the most telling fields first (small models truncate)."""
    options: list[str] = []
    for v in product.variants:
        for value in v.options.values():
            if value not in options:
                options.append(value)
    head = ". ".join(x for x in (product.title, product.category, product.brand) if x)
    attrs = _attr_text(product.attributes)
    return ". ".join(x for x in (head, attrs, ", ".join(options), product.description) if x)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class HashingEmbedder:
    """A cheap deterministic embedder: hashed bag of words and word bigrams, unit-normalised.

    No model, no download: for tests, benchmarks of the index itself, and a last-resort fallback.
    It knows nothing of synonyms -- only shared words bring texts together.
    """

    def __init__(self, dim: int = 384, bigram_weight: float = 0.5) -> None:
        self.dim = dim
        self.bigram_weight = bigram_weight
        self._slots: dict[str, tuple[int, float]] = {}

    def _slot(self, feature: str) -> tuple[int, float]:
        slot = self._slots.get(feature)
        if slot is None:
            h = zlib.crc32(feature.encode())
            slot = (h % self.dim, 1.0 if (h >> 31) & 1 else -1.0)
            if len(self._slots) < 1_000_000:
                self._slots[feature] = slot
        return slot

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            vec = out[row]
            for tok in tokens:
                i, s = self._slot(tok)
                vec[i] += s
            for a, b in zip(tokens, tokens[1:], strict=False):
                i, s = self._slot(f"{a} {b}")
                vec[i] += s * self.bigram_weight
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                vec /= norm
        return out


# --------------------------------------------------------------------------------------------------
# Filters


def _norm_category(value: str) -> str:
    return " > ".join(seg.strip().lower() for seg in value.split(">") if seg.strip())


def _lower_set(values: Collection[str] | str) -> set[str]:
    if isinstance(values, str):
        values = [values]
    return {str(v).strip().lower() for v in values}


def _effective_attributes(product: Product, variant: Variant) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if product.brand:
        out["brand"] = [product.brand.lower()]
    for key, value in product.attributes.items():
        out[key.lower()] = [v.lower() for v in (value if isinstance(value, list) else [value])]
    for key, value in variant.options.items():
        out[key.lower()] = [value.lower()]
    return out


@dataclass
class SearchFilters:
    """Hard constraints on the sellable variant (see the module docstring for exact semantics)."""

    min_price: float | None = None
    max_price: float | None = None
    categories: Sequence[str] = ()
    attributes: Mapping[str, Collection[str]] = field(default_factory=dict)
    in_stock: bool = False
    exclude_attributes: Mapping[str, Collection[str]] = field(default_factory=dict)
    exclude_terms: Sequence[str] = ()
    exclude_ids: Collection[str] = ()
    product_ids: Collection[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.categories, str):
            self.categories = (self.categories,)
        if isinstance(self.exclude_terms, str):
            self.exclude_terms = (self.exclude_terms,)

    def is_empty(self) -> bool:
        return (
            self.min_price is None
            and self.max_price is None
            and not self.categories
            and not self.attributes
            and not self.in_stock
            and not self.exclude_attributes
            and not self.exclude_terms
            and not self.exclude_ids
            and self.product_ids is None
        )

    def matches(self, product: Product, variant: Variant) -> bool:
        """The reference definition of every filter, on one variant (slow; the index uses masks)."""
        if self.min_price is not None and variant.price < self.min_price:
            return False
        if self.max_price is not None and variant.price > self.max_price:
            return False
        if self.in_stock and not variant.in_stock:
            return False
        if self.categories:
            path = _norm_category(product.category).split(" > ") if product.category else []
            wanted = [_norm_category(c).split(" > ") for c in self.categories]
            if not any(w and path[: len(w)] == w for w in wanted):
                return False
        attrs = _effective_attributes(product, variant) if self.attributes or self.exclude_attributes else {}
        for key, values in self.attributes.items():
            if not set(attrs.get(key.lower(), ())) & _lower_set(values):
                return False
        for key, values in self.exclude_attributes.items():
            if set(attrs.get(key.lower(), ())) & _lower_set(values):
                return False
        if self.exclude_terms:
            words = set(tokenize(product_text(product))) | set(tokenize(variant_text(variant)))
            for term in self.exclude_terms:
                toks = set(tokenize(term))
                if toks and toks <= words:
                    return False
        if product.id in self.exclude_ids or variant.id in self.exclude_ids:
            return False
        if (
            self.product_ids is not None
            and product.id not in self.product_ids
            and variant.id not in self.product_ids
        ):
            return False
        return True


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


def _postings(pairs_doc: np.ndarray, pairs_key: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc, key) pairs -> CSR by key: docs of key k are docs[indptr[k]:indptr[k+1]]."""
    order = np.argsort(pairs_key, kind="stable")
    docs = pairs_doc[order].astype(np.int32)
    indptr = np.zeros(n_keys + 1, dtype=np.int64)
    np.add.at(indptr, pairs_key + 1, 1)
    return docs, np.cumsum(indptr)


class _FilterIndex:
    """Columnar views of the catalogue that turn :class:`SearchFilters` into boolean masks."""

    def __init__(self, products: list[Product], vocab: dict[str, int], p_tokens: list[list[int]]) -> None:
        self.products = products
        self.vocab = vocab
        n = len(products)
        counts = np.fromiter((len(p.variants) for p in products), dtype=np.int64, count=n)
        self.v_start = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.v_count = counts
        nv = int(counts.sum())
        self.n_variants = nv
        self.variants: list[Variant] = [v for p in products for v in p.variants]
        self.v_product = np.repeat(np.arange(n, dtype=np.int32), counts)
        self.v_price = np.fromiter((v.price for v in self.variants), dtype=np.float64, count=nv)
        self.v_in_stock = np.fromiter((v.in_stock for v in self.variants), dtype=bool, count=nv)
        self.variant_pos = {v.id: i for i, v in enumerate(self.variants)}
        self.product_pos = {p.id: i for i, p in enumerate(products)}

        cats: dict[str, list[int]] = {}
        p_attr: dict[str, dict[str, list[int]]] = {}
        for i, p in enumerate(products):
            if p.category:
                segs = _norm_category(p.category).split(" > ")
                for j in range(1, len(segs) + 1):
                    cats.setdefault(" > ".join(segs[:j]), []).append(i)
            attrs = {k.lower(): v for k, v in p.attributes.items()}
            if p.brand and "brand" not in attrs:
                attrs["brand"] = p.brand
            for key, value in attrs.items():
                slot = p_attr.setdefault(key, {})
                for val in value if isinstance(value, list) else [value]:
                    slot.setdefault(val.lower(), []).append(i)
        self.categories = {k: np.asarray(v, dtype=np.int32) for k, v in cats.items()}
        self.p_attr = {
            k: {val: np.asarray(ix, dtype=np.int32) for val, ix in d.items()} for k, d in p_attr.items()
        }

        v_attr: dict[str, dict[str, list[int]]] = {}
        v_tok_doc: list[int] = []
        v_tok_key: list[int] = []
        value_tokens: dict[str, list[int]] = {}  # option values repeat a lot ("M", "blue"): tokenise once
        for vi, v in enumerate(self.variants):
            for key, value in v.options.items():
                v_attr.setdefault(key.lower(), {}).setdefault(value.lower(), []).append(vi)
                tids = value_tokens.get(value)
                if tids is None:
                    tids = value_tokens[value] = [
                        vocab.setdefault(tok, len(vocab)) for tok in tokenize(value)
                    ]
                for tid in tids:
                    v_tok_doc.append(vi)
                    v_tok_key.append(tid)
        self.v_attr = {
            k: {val: np.asarray(ix, dtype=np.int32) for val, ix in d.items()} for k, d in v_attr.items()
        }
        self.v_has_key: dict[str, np.ndarray] = {}
        for key, by_value in self.v_attr.items():
            has = np.zeros(nv, dtype=bool)
            for ix in by_value.values():
                has[ix] = True
            self.v_has_key[key] = has
        # Product p's variants are v_start[p] .. v_end[p] - 1 (for counting passes per product).
        self.v_end = self.v_start + counts
        # Inverted lists of token -> products (own text) and token -> variants (options), for exclusions.
        p_doc = np.repeat(np.arange(n, dtype=np.int32), [len(t) for t in p_tokens])
        p_key = np.fromiter((t for toks in p_tokens for t in toks), dtype=np.int64, count=len(p_doc))
        self.p_tok_docs, self.p_tok_ptr = _postings(p_doc, p_key, len(vocab))
        self.v_tok_docs, self.v_tok_ptr = _postings(
            np.asarray(v_tok_doc, dtype=np.int32), np.asarray(v_tok_key, dtype=np.int64), len(vocab)
        )

    def product_mask(self, vmask: np.ndarray) -> np.ndarray:
        """A product passes when at least one of its variants passes."""
        if not len(vmask):
            return np.zeros(len(self.products), dtype=bool)
        # Passing variants per product from a running count (several times faster than reduceat on bools).
        passed = np.concatenate(([0], np.cumsum(vmask, dtype=np.int64)))
        return passed[self.v_end] > passed[self.v_start]

    def _attr_mask(self, key: str, values: Collection[str] | str) -> np.ndarray:
        key = key.lower()
        wanted = _lower_set(values)
        pm = np.zeros(len(self.products), dtype=bool)
        for val in wanted:
            ix = self.p_attr.get(key, {}).get(val)
            if ix is not None:
                pm[ix] = True
        vm = pm[self.v_product]
        # A variant option overrides the product attribute of the same name.
        has_key = self.v_has_key.get(key)
        if has_key is not None:
            vm &= ~has_key
            for val in wanted:
                ix = self.v_attr[key].get(val)
                if ix is not None:
                    vm[ix] = True
        return vm

    def _term_mask(self, term: str) -> np.ndarray | None:
        toks = set(tokenize(term))
        if not toks:
            return None
        hit = np.ones(self.n_variants, dtype=bool)
        for tok in toks:
            tid = self.vocab.get(tok)
            has = np.zeros(self.n_variants, dtype=bool)
            if tid is not None and tid < len(self.p_tok_ptr) - 1:
                pm = np.zeros(len(self.products), dtype=bool)
                pm[self.p_tok_docs[self.p_tok_ptr[tid] : self.p_tok_ptr[tid + 1]]] = True
                has = pm[self.v_product]
                has[self.v_tok_docs[self.v_tok_ptr[tid] : self.v_tok_ptr[tid + 1]]] = True
            hit &= has
        return hit

    def _id_mask(self, ids: Iterable[str]) -> np.ndarray:
        m = np.zeros(self.n_variants, dtype=bool)
        for item in ids:
            vi = self.variant_pos.get(item)
            if vi is not None:
                m[vi] = True
            pi = self.product_pos.get(item)
            if pi is not None:
                start = self.v_start[pi]
                m[start : start + self.v_count[pi]] = True
        return m

    def variant_mask(self, f: SearchFilters | None) -> np.ndarray | None:
        """Boolean mask over all variants, or None when nothing is filtered."""
        if f is None or f.is_empty():
            return None
        m = np.ones(self.n_variants, dtype=bool)
        if f.min_price is not None:
            m &= self.v_price >= f.min_price
        if f.max_price is not None:
            m &= self.v_price <= f.max_price
        if f.in_stock:
            m &= self.v_in_stock
        if f.categories:
            pm = np.zeros(len(self.products), dtype=bool)
            for cat in f.categories:
                ix = self.categories.get(_norm_category(cat))
                if ix is not None:
                    pm[ix] = True
            m &= pm[self.v_product]
        for key, values in f.attributes.items():
            m &= self._attr_mask(key, values)
        for key, values in f.exclude_attributes.items():
            m &= ~self._attr_mask(key, values)
        for term in f.exclude_terms:
            tm = self._term_mask(term)
            if tm is not None:
                m &= ~tm
        if f.exclude_ids:
            m &= ~self._id_mask(f.exclude_ids)
        if f.product_ids is not None:
            m &= self._id_mask(f.product_ids)
        return m


# --------------------------------------------------------------------------------------------------
# The index


def index_folder(tenant: str, catalog: str) -> Path:
    """Where a tenant's catalogue index lives: ``CONCIERGE_HOME/indexes/<tenant>/<catalog>``."""
    for part in (tenant, catalog):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise ValueError(f"bad index name part {part!r}")
    return config.home() / "indexes" / tenant / catalog


def _embed_batched(
    embed: Embedder, texts: list[str], batch: int, progress: Callable[[int, int], None] | None
):
    out: list[np.ndarray] = []
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


class SearchIndex:
    """Hybrid search over one catalogue. Build, load, update, search, similar."""

    def __init__(self) -> None:
        self.catalog: Catalog
        self.embed: Embedder
        self.folder: Path | None = None
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
    ) -> SearchIndex:
        """Embed every product and build both retrievers; saved to ``folder`` when given.

        ``kind``: ``"flat"`` (exact), ``"hnsw"`` (approximate graph) or ``"auto"`` (HNSW from
        ``HNSW_MIN_PRODUCTS`` products).
        """
        self = cls()
        self.catalog = catalog
        self.embed = embed
        self.folder = Path(folder) if folder is not None else None
        products = [p for p in catalog.products if p.variants]
        texts = [embed_text(p) for p in products]
        vectors = _embed_batched(embed, texts, batch_size, progress)
        self.probe = [float(x) for x in np.asarray(embed([PROBE_TEXT]), dtype=np.float32)[0]]
        self.dim = len(self.probe)
        if kind == "auto":
            kind = "hnsw" if len(products) >= HNSW_MIN_PRODUCTS else "flat"
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"unknown index kind {kind!r}")
        self.kind = kind
        self._row_text_hash = [_text_hash(t) for t in texts]
        self._row_product = np.arange(len(products), dtype=np.int64)
        self._set_dense(vectors if len(products) else np.zeros((0, self.dim), np.float32))
        self._rebuild_lexical(products)
        if self.folder is not None:
            self.save(self.folder)
        return self

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

    def _rebuild_lexical(self, products: list[Product], bm25_dir: Path | None = None) -> None:
        """BM25 and the filter masks, from scratch (cheap next to embedding); BM25 read from disk if given."""
        vocab: dict[str, int] = {}
        p_token_ids: list[list[int]] = []
        corpus: list[list[str]] = []
        for p in products:
            own = tokenize(product_text(p))
            p_token_ids.append([vocab.setdefault(tok, len(vocab)) for tok in set(own)])
            if bm25_dir is None:
                # Option values count once per product, however many variants repeat them.
                opts = dict.fromkeys(tok for v in p.variants for tok in tokenize(variant_text(v)))
                corpus.append(own + list(opts))
        self._filters = _FilterIndex(products, vocab, p_token_ids)
        if bm25_dir is not None:
            self._bm25 = bm25s.BM25.load(str(bm25_dir), show_progress=False)
        else:
            self._bm25 = bm25s.BM25()
            if products:
                self._bm25.index(corpus, show_progress=False)
        # Which faiss row holds each product (rows of removed or re-embedded products are -1 in _row_product).
        self._product_row = np.full(len(products), -1, dtype=np.int64)
        alive = np.flatnonzero(self._row_product >= 0)
        self._product_row[self._row_product[alive]] = alive

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
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
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
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
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

    def _bm25_ranked(self, query_tokens: list[str], pmask: np.ndarray | None, n: int) -> list[int]:
        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in query_tokens if t in vocab]
        if not ids or not len(self.products):
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)
        # Only documents with a positive score matched a query word; the mask applies before top-k.
        matched = scores > 0
        if pmask is not None:
            matched &= pmask
        cand = np.flatnonzero(matched)
        if not len(cand):
            return []
        cand_scores = scores[cand]
        if len(cand) > n:
            part = np.argpartition(-cand_scores, n - 1)[:n]
            cand, cand_scores = cand[part], cand_scores[part]
        order = np.lexsort((cand, -cand_scores))
        return [int(i) for i in cand[order]]

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
