"""Applying a turn to the conversation's query, and from the query to hard constraints and search text."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from concierge.shop.grounding import HardConstraints
from concierge.shop.query.rules import TurnDelta
from concierge.shop.query.structured import StructuredQuery
from concierge.shop.query.vocabulary import ShopVocabulary


def gender_of(category: str | None) -> str | None:
    if not category:
        return None
    firsts = {alt.strip().split(" > ")[0].strip().lower() for alt in category.split("|")}
    return firsts.pop() if len(firsts) == 1 and firsts & {"women", "men"} else None


def _narrow_by_gender(category: str | None, gender: str | None, vocab: ShopVocabulary) -> str | None:
    if not category or not gender:
        return category
    paths = vocab.resolve_category(category)
    gendered = [p for p in paths if p.split(" > ")[0].lower() == gender]
    return vocab.canonical_category(gendered) if gendered else category


def _median(prices: Sequence[float]) -> float | None:
    return float(statistics.median(prices)) if prices else None


def update_query(
    previous: StructuredQuery | None,
    delta: TurnDelta,
    vocab: ShopVocabulary,
    *,
    shown_prices: Sequence[float] = (),
    after_clarifying: bool = False,
) -> tuple[StructuredQuery, str]:
    """The conversation's query after this turn, and how it was reached: new | refine | switch."""
    d = delta.query
    if previous is None:
        q = d.model_copy(deep=True)
        q.category = _narrow_by_gender(q.category, delta.gender, vocab)
        if q.category is None and delta.gender and vocab.resolve_category(delta.gender.capitalize()):
            q.category = delta.gender.capitalize()  # "something for men": the men's department
        if delta.cheaper and q.sort == "relevance":
            q.sort = "price_asc"
        return _consistent(q, vocab), "new"
    gender = delta.gender or gender_of(previous.category)
    prev_paths = set(vocab.resolve_category(previous.category))
    new_category = _narrow_by_gender(d.category, gender, vocab)
    new_paths = set(vocab.resolve_category(new_category))
    changes_category = bool(new_paths) and bool(prev_paths) and new_paths != prev_paths
    # A short follow-up ("sandals?") keeps the budget like "instead" does; a full request starts over.
    carries = delta.replace_cue or after_clarifying or (delta.n_words <= 3 and d.price_max is None)
    if changes_category and not carries and not _narrows(prev_paths, new_paths):
        q = d.model_copy(deep=True)
        q.category = _narrow_by_gender(q.category, delta.gender, vocab)
        return _consistent(q, vocab), "new"
    q = previous.model_copy(deep=True)
    mode = "refine"
    if changes_category and not _narrows(prev_paths, new_paths):
        mode = "switch"
        # "Show me boots instead": same budget, exclusions and sort; attributes only where they apply.
        q.category = new_category
        scope = vocab.attributes_for(vocab.resolve_category(q.category))
        q.attributes = {
            k: [v for v in vals if v in scope.get(k, ()) or k == "brand"]
            for k, vals in q.attributes.items()
            if k in scope or k == "brand"
        }
        q.attributes = {k: v for k, v in q.attributes.items() if v}
        q.keywords = ""
    elif new_category:
        q.category = new_category
    elif delta.gender:
        narrowed = _narrow_by_gender(q.category or delta.gender.capitalize(), delta.gender, vocab)
        if vocab.resolve_category(narrowed):
            q.category = narrowed
    # Prices: stated bounds replace old ones; "cheaper"/"pricier" move relative to what was shown.
    if d.price_min is not None or d.price_max is not None:
        q.price_min, q.price_max = d.price_min, d.price_max
    median = _median(shown_prices)
    if delta.cheaper:
        if median is not None:
            cap = round(0.8 * median, 2)
            q.price_max = min(cap, q.price_max) if q.price_max is not None else cap
            if q.price_min is not None and q.price_min >= q.price_max:
                q.price_min = None
        else:
            q.sort = "price_asc"
    if delta.pricier:
        if median is not None:
            floor = round(1.25 * median, 2)
            q.price_min = max(floor, q.price_min or 0.0)
            if q.price_max is not None and q.price_max <= q.price_min:
                q.price_max = None
        else:
            q.sort = "price_desc"
    # Attributes: a newly stated value replaces the old values of that key ("in blue" after "in red").
    for key, values in d.attributes.items():
        q.attributes[key] = list(values)
        q.exclusions = [e for e in q.exclusions if e.lower() not in {v.lower() for v in values}]
    for term in d.exclusions:
        if term.lower() not in {e.lower() for e in q.exclusions}:
            q.exclusions.append(term)
    if "sort" in delta.certain or d.sort != "relevance":
        q.sort = d.sort
    if d.occasion:
        q.occasion = d.occasion
    if d.keywords:
        words = (q.keywords.split() if mode == "refine" else []) + d.keywords.split()
        q.keywords = " ".join(dict.fromkeys(words))
    return _consistent(q, vocab), mode


def _narrows(prev: set[str], new: set[str]) -> bool:
    """True when the new categories sit inside the old ones ("boots" after "shoes"): a refinement."""
    return all(any(n == p or n.startswith(p + " > ") for p in prev) for n in new)


def consistent_query(q: StructuredQuery, vocab: ShopVocabulary) -> StructuredQuery:
    """A query as the catalogue can search it (a shopper-edited one too): see :func:`_consistent`."""
    return _consistent(q.model_copy(deep=True), vocab)


def _consistent(q: StructuredQuery, vocab: ShopVocabulary) -> StructuredQuery:
    """Exclusions win over attribute values they name; a category the catalogue lacks is dropped."""
    excluded = {e.lower() for e in q.exclusions}
    q.attributes = {k: [v for v in vals if v.lower() not in excluded] for k, vals in q.attributes.items()}
    q.attributes = {k: v for k, v in q.attributes.items() if v}
    if q.category and not vocab.resolve_category(q.category):
        q.category = None
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        q.price_min = None
    return q


# --------------------------------------------------------------------------------------------------
# From the query to hard constraints and search text


def constraints_for(q: StructuredQuery, vocab: ShopVocabulary) -> HardConstraints:
    """The hard constraints a query implies. Attribute keys that do not exist at all in the chosen
    categories ("season" for dresses) are soft: they move to the search text instead."""
    paths = vocab.resolve_category(q.category)
    scope = vocab.attributes_for(paths)
    attributes: dict[str, list[str]] = {}
    for key, values in q.attributes.items():
        if key == "brand" or key in scope:
            attributes[key] = [vocab.brands.get(v.lower(), v) if key == "brand" else v for v in values]
    exclude_attributes: dict[str, list[str]] = {}
    exclude_terms: list[str] = []

    def exclude(key: str, value: str) -> None:
        slot = exclude_attributes.setdefault(key, [])
        for same in vocab.equivalents(key, value):
            if same not in slot:
                slot.append(same)

    for term in q.exclusions:
        low = term.lower()
        # A value of a variant option in scope ("not PVC", "no leather strap" on τ²): excluded exactly on
        # that option, never by words (the product text lists every option value on offer).
        option_keys = sorted(k for k in vocab.option_keys if k != vocab.color_key and low in scope.get(k, ()))
        if vocab.is_colour(term):
            exclude(vocab.color_key or "color", low)
            for key in option_keys:
                exclude(key, low)
            # "no brass": a colour that is also a product attribute's value in scope (a brass lamp) goes too.
            if any(
                low in values and key not in vocab.option_keys and key != vocab.color_key
                for key, values in scope.items()
            ):
                exclude_terms.append(term)
        elif vocab.is_brand(term):
            exclude_attributes.setdefault("brand", []).append(vocab.brands[low])
        elif option_keys:
            for key in option_keys:
                exclude(key, low)
        else:
            exclude_terms.append(term)
    return HardConstraints(
        price_min=q.price_min,
        price_max=q.price_max,
        categories=paths,
        attributes=attributes,
        exclude_attributes=exclude_attributes,
        exclude_terms=exclude_terms,
        in_stock=True,
    )


def search_text(q: StructuredQuery, vocab: ShopVocabulary) -> str:
    """Words for the ranker: keywords, occasion, the category's own name, wanted attribute values."""
    parts = [q.keywords]
    if q.occasion:
        parts.append(q.occasion)
    paths = vocab.resolve_category(q.category)
    names = dict.fromkeys(p.split(" > ")[-1] for p in paths)
    if len(names) <= 2:
        parts.extend(names)
    for key, values in q.attributes.items():
        if key != "brand":
            parts.extend(values)
    return " ".join(p for p in parts if p).strip()


def is_vague(q: StructuredQuery, vocab: ShopVocabulary) -> bool:
    """No category, no attribute and no catalogue keyword: too little to search on."""
    return not q.category and not q.attributes and not vocab.content_tokens(q.keywords)
