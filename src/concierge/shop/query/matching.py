"""Exact matches and near alternatives.

A hit is an **exact** match when its variant meets every hard constraint; otherwise it is **near** and
carries the constraints it misses ("color is black, not navy", "$64.99, over the $50 budget"). When a
request has no exact match, :func:`near_alternatives` relaxes one constraint group at a time (then two)
and returns the closest variants, each marked ``match="near"`` with what it misses -- never presented
as a match.

A card is exact only when the rules read everything the request asks: words that name an option value
of the categories in scope but were read into no constraint (:func:`unverified_terms`) must be among the
card's own values, or the card is near ("not checked: quiet").

The shop assistant shows all this with one call, after ``validate_products`` in ``_plan``::

    cards = present_matches(cards, self.catalog, self.index, text, query, constraints, self.vocab,
                            k=self.max_products)

and answers with the exact ones as ``products`` and the near ones as ``alternatives``; every card
carries ``meets`` (the stated constraints it meets, in words) beside ``match`` and ``unmet``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from concierge.shop.catalog import Product, Variant
from concierge.shop.grounding import HardConstraints
from concierge.shop.query.vocabulary import GENERIC_WORDS
from concierge.shop.search import STOPWORDS, product_text, tokenize, variant_text

Match = Literal["exact", "near"]
MAX_PER_PRODUCT = 2  # near alternatives: at most this many variants of one product


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
        out.append(f"{_money(variant.price)}, below the minimum of {_money(c.price_min)}")
    if c.price_max is not None and variant.price > c.price_max:
        out.append(f"{_money(variant.price)}, above the budget of {_money(c.price_max)}")
    if c.categories:
        path = [s.strip().lower() for s in (product.category or "").split(">")]
        if not any(
            path[: len(w)] == w for w in ([s.strip().lower() for s in x.split(">")] for x in c.categories)
        ):
            leaf = (product.category or "").split(" > ")[-1].lower()
            wanted = " or ".join(dict.fromkeys(x.split(" > ")[-1].lower() for x in c.categories))
            out.append(f"a {leaf}, not {wanted}")
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


def met_constraints(product: Product, variant: Variant, c: HardConstraints) -> list[str]:
    """The stated constraints the variant meets, in words ("color black", "under $50", "no leather"):
    what a card says it fits by. Price and stock are checked like :func:`unmet_constraints` does."""
    out: list[str] = []
    if c.categories:
        path = [s.strip().lower() for s in (product.category or "").split(">")]
        for x in c.categories:
            want = [s.strip().lower() for s in x.split(">")]
            if path[: len(want)] == want:
                out.append(product.category.split(" > ")[-1].lower())
                break
    for key, wanted in c.attributes.items():
        have = _values(product, variant, key) & {w.lower() for w in wanted}
        if have:
            value = sorted(have)[0]
            if key == "brand":
                out.append(f"by {product.brand}")
            elif value in ("yes", "no"):
                out.append(key if value == "yes" else f"not {key}")
            else:
                out.append(f"{key} {value}")
    lo, hi = c.price_min, c.price_max
    if (lo is None or variant.price >= lo) and (hi is None or variant.price <= hi):
        if lo is not None and hi is not None:
            out.append(f"within {_money(lo)}-{_money(hi)}")
        elif hi is not None:
            out.append(f"under {_money(hi)}")
        elif lo is not None:
            out.append(f"over {_money(lo)}")
    banned = []
    for key, values in c.exclude_attributes.items():
        if not _values(product, variant, key) & {b.lower() for b in values}:
            banned += [v for v in values if v not in banned]
    if c.exclude_terms:
        words = set(tokenize(product_text(product))) | set(tokenize(variant_text(variant)))
        banned += [t for t in c.exclude_terms if not (set(tokenize(t)) and set(tokenize(t)) <= words)]
    if banned:
        out.append("no " + " or ".join(banned))
    return out


@dataclass
class MatchedHit:
    """A hit with its match kind and the constraints it misses."""

    product: Product
    variant: Variant
    match: Match
    unmet: list[str] = field(default_factory=list)
    hit: Any = None

    meets: list[str] = field(default_factory=list)

    def card_fields(self) -> dict[str, Any]:
        """What a product card carries about the match: ``{"match": "near", "unmet": [...], "meets": [...]}``."""
        return {"match": self.match, "unmet": list(self.unmet), "meets": list(self.meets)}


def classify_hits(hits: Iterable[Any], constraints: HardConstraints) -> list[MatchedHit]:
    """Each hit (anything with ``.product`` and ``.variant``) marked exact or near, with what it misses."""
    out = []
    for h in hits:
        unmet = unmet_constraints(h.product, h.variant, constraints)
        meets = met_constraints(h.product, h.variant, constraints)
        out.append(MatchedHit(h.product, h.variant, "near" if unmet else "exact", unmet, h, meets))
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
    then two; the category is relaxed last, and only when nothing in it comes close. At most
    :data:`MAX_PER_PRODUCT` variants of one product. Sorted by how many constraints they miss, then search
    rank."""
    seen: set[str] = set(exclude_ids)
    per_product: dict[str, int] = {}
    found: list[tuple[int, int, MatchedHit]] = []
    order = 0

    def collect(relaxed: HardConstraints) -> None:
        nonlocal order
        for hit in index.search(text, relaxed.to_filters(), k=max(k * 2, 10)):
            if hit.variant.id in seen or per_product.get(hit.product.id, 0) >= MAX_PER_PRODUCT:
                continue
            unmet = unmet_constraints(hit.product, hit.variant, constraints)
            if not unmet or not hit.variant.in_stock:
                continue
            per_product[hit.product.id] = per_product.get(hit.product.id, 0) + 1
            seen.add(hit.variant.id)
            meets = met_constraints(hit.product, hit.variant, constraints)
            found.append((len(unmet), order, MatchedHit(hit.product, hit.variant, "near", unmet, hit, meets)))
            order += 1

    singles = _relaxations(constraints)
    for _, relaxed in singles:
        collect(relaxed)
    if len(found) < k:
        for i, (_, first) in enumerate(singles):
            for _, relaxed in _relaxations(first)[i:]:
                collect(relaxed)
    if not found and constraints.categories:
        # Other categories only when the one asked for has nothing close: a desk lamp is no laptop.
        collect(replace(constraints, categories=[]))
    found.sort(key=lambda x: (x[0], x[1]))
    return [m for _, _, m in found[:k]]


# --------------------------------------------------------------------------------------------------
# What the rules could not read


def unverified_terms(
    text: str, query: Any, vocab: Any, context_paths: Sequence[str] = (), parsed: Any = None
) -> list[str]:
    """Words of the request that name an option value of the categories in scope but that no rule read
    into a hard constraint ("quiet", "9 or 10" without "size"), and values of options the chosen
    categories do not have ("waterproof" for a speaker, whose option is "water resistance"). A card is
    an exact match only if each of these words is among its own option/attribute values.

    ``parsed``: the rules' reading of ``text`` this turn already made; used when it was read in the
    same categories (then a second parse would give the same result), else the text is read again."""
    from concierge.shop.query.rules import parse_rules  # noqa: PLC0415 - rules imports this package

    paths = vocab.resolve_category(query.category) or list(context_paths)
    scope = vocab.attributes_for(paths)
    same = parsed is not None and tuple(getattr(parsed, "paths", ())) == tuple(paths)
    delta = parsed if same else parse_rules(text, vocab, paths)
    value_words: set[str] = set()
    word_keys: dict[str, set[str]] = {}
    for key, values in scope.items():
        if key in (vocab.gender_key, "brand"):
            continue
        for value in values:
            if key in vocab.bool_keys:
                continue
            for word in re.findall(r"[a-z0-9]+", value.lower()):
                value_words.add(word)
                word_keys.setdefault(word, set()).add(key)
    # A word of another value of an option already read names that option ("fixed arms, standard back":
    # "back" of "high-back", with the backrest read as standard), not a further constraint.
    read = set(query.attributes)
    whole = {v.lower() for values in scope.values() for v in values}
    value_words = {w for w in value_words if w in whole or not word_keys[w] <= read}
    category_words = {w for seg in vocab.segment_paths for w in re.findall(r"[a-z0-9]+", seg)}
    out: list[str] = []
    for word in re.findall(r"[a-z0-9]+", delta.leftover):
        if (
            word in value_words
            and word not in GENERIC_WORDS
            and word not in STOPWORDS
            and word not in category_words
            and word not in out
        ):
            out.append(word)
    # A value of another category's option left unread ("2K camera for indoors, 130 degrees, wifi" read as
    # the camera department: "2k", "130 degrees" are the security camera's): the request was not wholly
    # understood, so no card passes as exact on it (a card's own values may still hold it).
    if paths and delta.leftover:
        for key, value in _outside_values(delta.leftover, scope, vocab):
            term = f"{key}={value}"
            if term not in out and value not in out:
                out.append(term)
    # A word read for one option that names a value of another too ("brass": colour or material).
    for key, value in delta.ambiguous:
        if key in scope and f"{key}={value}" not in out:
            out.append(f"{key}={value}")
    # Values of options that the chosen categories lack: read, then dropped as soft by constraints_for.
    for key, values in query.attributes.items():
        if key != "brand" and paths and key not in scope:
            for value in values:
                word = key if value in ("yes", "no") else value
                if word not in out:
                    out.append(word)
    return out


def _outside_values(leftover: str, scope: Mapping[str, Any], vocab: Any) -> list[tuple[str, str]]:
    """Whole option values the categories in scope lack (of their own options or others), found in the
    unread text: specific
    ones only (with a number, "2k", "130 degrees", or of several words), not bare numbers, colours, yes/no,
    common words or values the scope has under any option."""
    in_scope = {v for values in scope.values() for v in values}
    found: list[tuple[str, str]] = []
    for pattern, key, value in vocab._value_patterns:
        if value in in_scope or key in vocab.bool_keys or key == vocab.color_key:
            continue
        if len(value) < 2 or re.fullmatch(r"[\d.,\s]+", value) or (key, value) in vocab._context_values:
            continue
        if value in GENERIC_WORDS or value in STOPWORDS or value not in vocab.attr_counts.get(key, {}):
            continue
        if not re.search(r"\d", value) and " " not in value:
            continue  # a single plain word ("battery", "plain") is too often an ordinary word or an option's name
        if pattern.search(leftover) and (key, value) not in found:
            found.append((key, value))
    return found


def _has_term(product: Product, variant: Variant, term: str) -> bool:
    if "=" in term:
        key, value = term.split("=", 1)
        return value.lower() in _values(product, variant, key)
    values: list[str] = [str(v).lower() for v in variant.options.values()]
    for value in product.attributes.values():
        values += [str(v).lower() for v in (value if isinstance(value, list) else [value])]
    words = {w for v in values for w in re.findall(r"[a-z0-9]+", v)}
    return all(w in words for w in re.findall(r"[a-z0-9]+", term.lower()))


def mark(
    product: Product, variant: Variant, constraints: HardConstraints, unverified: Sequence[str] = ()
) -> MatchedHit:
    """One variant as an exact or near match of the constraints plus the words the rules left unread."""
    unmet = unmet_constraints(product, variant, constraints)
    unmet += [
        f"not checked: {term.replace('=', ' ')}"
        for term in unverified
        if not _has_term(product, variant, term)
    ]
    meets = met_constraints(product, variant, constraints)
    # The words the rules left unread that the card carries ("clear" glass jars) are met too.
    meets += [term.replace("=", " ") for term in unverified if _has_term(product, variant, term)]
    return MatchedHit(product, variant, "near" if unmet else "exact", unmet, meets=meets)


def present_matches(
    cards: Sequence[dict[str, Any]],
    catalog: Any,
    index: Any,
    text: str,
    query: Any,
    constraints: HardConstraints,
    vocab: Any,
    k: int = 5,
    parsed: Any = None,
) -> list[dict[str, Any]]:
    """The cards to show for a request: each card gets ``match`` ("exact" | "near") and ``unmet`` (the
    constraints it misses, in words); exact matches first. When none is exact, near alternatives from
    :func:`near_alternatives` follow, marked as such -- the answer then says there is no exact match.
    New cards are built from the catalogue with the same fields as the assistant's own cards."""
    unverified = unverified_terms(text, query, vocab, parsed=parsed)
    out: list[dict[str, Any]] = []
    for card in cards:
        variant = catalog.get_variant(card["id"])
        product = catalog.get_product(card["product_id"]) if variant is not None else None
        if variant is None or product is None:
            continue
        m = mark(product, variant, constraints, unverified)
        out.append({**card, **m.card_fields()})
    out.sort(key=lambda c: c["match"] != "exact")
    if any(c["match"] == "exact" for c in out):
        return out[:k]
    shown = {c["id"] for c in out} | {c["product_id"] for c in out}
    words = [term.split("=", 1)[-1] for term in unverified]
    search = " ".join(x for x in (_search_text(query, vocab), " ".join(words)) if x)
    for m in near_alternatives(index, search, constraints, k=k, exclude_ids=sorted(shown)):
        m = mark(m.product, m.variant, constraints, unverified)
        out.append({**_card(m.product, m.variant), **m.card_fields()})
    out.sort(key=lambda c: len(c["unmet"]))
    return out[:k]


def _search_text(query: Any, vocab: Any) -> str:
    from concierge.shop.query.update import search_text  # noqa: PLC0415

    return search_text(query, vocab)


def _card(product: Product, variant: Variant) -> dict[str, Any]:
    return {
        "id": variant.id,
        "product_id": product.id,
        "title": product.title,
        "price": variant.price,
        "currency": product.currency,
        "options": dict(variant.options),
        "category": product.category,
        "brand": product.brand,
        "image_url": product.image_url,
        "reason": "",
    }
