"""The lexical side of the index: BM25 (bm25s) over product text, and the filter masks built with it."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np

from concierge.shop.catalog import Product
from concierge.shop.search.filters import _FilterIndex
from concierge.shop.search.text import product_text, tokenize, variant_text


class LexicalSearch:
    """The lexical half of :class:`~concierge.shop.search.index.SearchIndex` (a mixin: it uses the index's state)."""

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
