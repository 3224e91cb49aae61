"""Shop checks: does a shown variant (and a whole answer) meet a written request's hard constraints."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _attr_values(product: Any, variant: Any, key: str) -> set[str]:
    if key in variant.options:
        return {str(variant.options[key]).lower()}
    if key in product.attributes:
        value = product.attributes[key]
        return {str(v).lower() for v in (value if isinstance(value, list) else [value])}
    if key == "brand":
        return {str(product.brand).lower()}
    return set()


def constraint_problems(product: Any, variant: Any, expect: Mapping[str, Any]) -> list[str]:
    """Every way a shown variant breaks a written request's hard constraints (empty: it meets them)."""
    problems = []
    if not variant.in_stock:
        problems.append("out of stock")
    if "price_min" in expect and variant.price < expect["price_min"]:
        problems.append(f"price {variant.price} < {expect['price_min']}")
    if "price_max" in expect and variant.price > expect["price_max"]:
        problems.append(f"price {variant.price} > {expect['price_max']}")
    cats = expect.get("categories")
    if cats and not any(product.category == c or product.category.startswith(c + " > ") for c in cats):
        problems.append(f"category {product.category}")
    for key, allowed in (expect.get("attributes") or {}).items():
        if not _attr_values(product, variant, key) & {str(v).lower() for v in allowed}:
            problems.append(f"{key} not in {allowed}")
    for key, banned in (expect.get("exclude_attributes") or {}).items():
        if _attr_values(product, variant, key) & {str(v).lower() for v in banned}:
            problems.append(f"{key} is one of the excluded {banned}")
    attrs = " ".join(
        f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in product.attributes.items()
    )
    text = " ".join([product.title, product.description, product.category, product.brand, attrs])
    text = (text + " " + " ".join(map(str, variant.options.values()))).lower()
    for word in expect.get("exclude_words") or []:
        if re.search(rf"\b{re.escape(str(word).lower())}", text):
            problems.append(f"mentions {word}")
    return problems


def check_shop_answer(answer: Any, catalog: Any, expect: Mapping[str, Any], available: int) -> list[str]:
    """Why an answer fails its request (empty: satisfied); ``available`` = matching in-stock variants."""
    problems: list[str] = []
    for card in answer.products:
        variant = catalog.get_variant(card.get("id"))
        if variant is None:
            problems.append(f"{card.get('id')} is not a variant of the catalogue")
            continue
        product = catalog.product(variant.product_id)
        problems += [f"{card.get('id')}: {p}" for p in constraint_problems(product, variant, expect)]
    if expect.get("clarifying"):
        if not answer.clarifying or answer.products:
            problems.append("a clarifying question (and no products) was needed")
    elif answer.clarifying:
        problems.append("asked a question where products were expected")
    elif bool(answer.products) != (available > 0):
        problems.append(
            "showed nothing though the catalogue has matches" if available else "showed products for none"
        )
    for key, value in (expect.get("query") or {}).items():
        if answer.query.get(key) != value:
            problems.append(f"query {key} is {answer.query.get(key)!r}, expected {value!r}")
    if expect.get("sorted") == "price_asc":
        prices = [c["price"] for c in answer.products]
        if prices != sorted(prices):
            problems.append("not sorted by price")
    return problems
