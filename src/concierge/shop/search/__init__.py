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

Modules: :mod:`.text` (tokenising, product texts, the hashing embedder), :mod:`.filters` (hard
filters and their masks), :mod:`.lexical` (BM25), :mod:`.dense` (FAISS), :mod:`.index`
(:class:`SearchIndex`: build, persist, update, fused search).
"""

from __future__ import annotations

from concierge.shop.search.dense import (
    BRUTE_FORCE_MAX,
    COMPACT_DEAD_FRACTION,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    HNSW_MIN_PRODUCTS,
    SEARCH_THREADS,
)
from concierge.shop.search.filters import SearchFilters
from concierge.shop.search.index import (
    FORMAT_VERSION,
    RRF_K,
    Hit,
    IndexMismatchError,
    SearchIndex,
    UpdateReport,
    index_folder,
)
from concierge.shop.search.text import (
    PROBE_TEXT,
    STOPWORDS,
    Embedder,
    HashingEmbedder,
    embed_text,
    product_text,
    tokenize,
    variant_text,
)

__all__ = [
    "BRUTE_FORCE_MAX",
    "COMPACT_DEAD_FRACTION",
    "Embedder",
    "FORMAT_VERSION",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "HNSW_MIN_PRODUCTS",
    "HashingEmbedder",
    "Hit",
    "IndexMismatchError",
    "PROBE_TEXT",
    "RRF_K",
    "SEARCH_THREADS",
    "STOPWORDS",
    "SearchFilters",
    "SearchIndex",
    "UpdateReport",
    "embed_text",
    "index_folder",
    "product_text",
    "tokenize",
    "variant_text",
]
