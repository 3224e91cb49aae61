"""Exact matches and near alternatives.

A hit is an **exact** match when its variant meets every hard constraint; otherwise it is **near** and
carries the constraints it misses ("color is black, not navy", "$64.99, over the $50 budget"). When a
request has no exact match, :func:`near_alternatives` relaxes one constraint group at a time (then two)
and returns the closest variants, each marked ``match="near"`` with what it misses -- never presented
as a match.

The shop assistant shows them with one call (see :func:`near_alternatives`)::

    if not cards:
        near = near_alternatives(self.index, search_text(query, self.vocab), constraints, k=self.max_products)
        cards = [self._card(m.product.id, m.variant.id) | m.card_fields() for m in near]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from concierge.shop.catalog import Product, Variant
from concierge.shop.grounding import HardConstraints
from concierge.shop.search import product_text, tokenize, variant_text

Match = Literal["exact", "near"]


def _money(value: float) -> str:
    return f"${value:,.2f}".replace(".00", "")


def _values(product: Product, variant: Variant, key: str) -> set[str]:
    key = key.lower()
    options = {k.lower(): v for k, v in variant.options.items()}
    if key in options:
        return {options[key].lower()}
    if key == "brand":
        return {product.brand.lower()} if product.brand else set()
    attrs = {k.lower(): v for k, v in product.attributes.items()}
    value = attrs.get(key)
    if value is None:
        return set()
    return {str(v).lower() for v in (value if isinstance(value, list) else [value])}


def unmet_constraints(product: Product, variant: Variant, c: HardConstraints) -> list[str]:
    """Every hard constraint the variant misses, in words (empty: an exact match)."""
    out: list[str] = []
    if c.in_stock and not variant.in_stock:
        out.append("out of stock")
    if c.price_min is not None and variant.price < c.price_min:
        out.append(f"{_money(variant.price)}, under the {_money(c.price_min)} minimum")
    if c.price_max is not None and variant.price > c.price_max:
        out.append(f"{_money(variant.price)}, over the {_money(c.price_max)} budget")
    if c.categories:
        path = [s.strip().lower() for s in (product.category or "").split(">")]
        if not any(
            path[: len(w)] == w for w in ([s.strip().lower() for s in x.split(">")] for x in c.categories)
        ):
            out.append(f"in {product.category}, not {' or '.join(c.categories)}")
    for key, wanted in c.attributes.items():
        have = _values(product, variant, key)
        if not have & {w.lower() for w in wanted}:
            shown = ", ".join(sorted(have)) or "none"
            out.append(f"{key} is {shown}, not {' or '.join(wanted)}")
    for key, banned in c.exclude_attributes.items():
        hit = _values(product, variant, key) & {b.lower() for b in banned}
        if hit:
            out.append(f"{key} is {', '.join(sorted(hit))}")
    if c.exclude_terms:
        words = set(tokenize(product_text(product))) | set(tokenize(variant_text(variant)))
        for term in c.exclude_terms:
            toks = set(tokenize(term))
            if toks and toks <= words:
                out.append(f"mentions {term}")
    return out


@dataclass
class MatchedHit:
    """A hit with its match kind and the constraints it misses."""

    product: Product
    variant: Variant
    match: Match
    unmet: list[str] = field(default_factory=list)
    hit: Any = None

    def card_fields(self) -> dict[str, Any]:
        """What a product card carries about the match: ``{"match": "near", "unmet": [...]}``."""
        return {"match": self.match, "unmet": list(self.unmet)}


def classify_hits(hits: Iterable[Any], constraints: HardConstraints) -> list[MatchedHit]:
    """Each hit (anything with ``.product`` and ``.variant``) marked exact or near, with what it misses."""
    out = []
    for h in hits:
        unmet = unmet_constraints(h.product, h.variant, constraints)
        out.append(MatchedHit(h.product, h.variant, "near" if unmet else "exact", unmet, h))
    return out


def _relaxations(c: HardConstraints) -> list[tuple[str, HardConstraints]]:
    """(name, constraints minus one group): price, each attribute, each exclusion, the category."""
    out: list[tuple[str, HardConstraints]] = []
    if c.price_min is not None or c.price_max is not None:
        out.append(("price", replace(c, price_min=None, price_max=None)))
    for key in c.attributes:
        out.append(
            (f"attr:{key}", replace(c, attributes={k: v for k, v in c.attributes.items() if k != key}))
        )
    for key in c.exclude_attributes:
        rest = {k: v for k, v in c.exclude_attributes.items() if k != key}
        out.append((f"exclude:{key}", replace(c, exclude_attributes=rest)))
    if c.exclude_terms:
        out.append(("exclude_terms", replace(c, exclude_terms=[])))
    return out


def near_alternatives(
    index: Any,
    text: str,
    constraints: HardConstraints,
    k: int = 5,
    *,
    exclude_ids: Sequence[str] = (),
) -> list[MatchedHit]:
    """Up to ``k`` in-stock variants that miss as few of the constraints as possible (never none: those
    are exact matches, which the caller searched for first). One constraint group is relaxed at a time,
    then two; the category is relaxed last. Sorted by how many constraints they miss, then search rank."""
    seen: set[str] = set(exclude_ids)
    found: list[tuple[int, int, MatchedHit]] = []
    order = 0

    def collect(relaxed: HardConstraints) -> None:
        nonlocal order
        for hit in index.search(text, relaxed.to_filters(), k=max(k * 2, 10)):
            if hit.variant.id in seen or hit.product.id in seen:
                continue
            unmet = unmet_constraints(hit.product, hit.variant, constraints)
            if not unmet or not hit.variant.in_stock:
                continue
            seen.add(hit.product.id)
            seen.add(hit.variant.id)
            found.append((len(unmet), order, MatchedHit(hit.product, hit.variant, "near", unmet, hit)))
            order += 1

    singles = _relaxations(constraints)
    for _, relaxed in singles:
        collect(relaxed)
    if len(found) < k:
        for i, (_, first) in enumerate(singles):
            for _, relaxed in _relaxations(first)[i:]:
                collect(relaxed)
    if len(found) < k and constraints.categories:
        collect(replace(constraints, categories=[]))
    found.sort(key=lambda x: (x[0], x[1]))
    return [m for _, _, m in found[:k]]
