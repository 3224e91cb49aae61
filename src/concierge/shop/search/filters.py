"""Hard filters: :class:`SearchFilters` (the reference definition) and the numpy masks that compute the
same thing over a whole catalogue before top-k."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from concierge.shop.catalog import Product, Variant
from concierge.shop.search.text import product_text, tokenize, variant_text


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
