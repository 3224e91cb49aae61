"""Shop examples: query understanding, from written shopper requests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def shop_examples(requests: Sequence[dict[str, Any]], vocab: Any) -> list[dict[str, Any]]:
    """Query-understanding examples from written shopper requests (``tests/shop_requests.yaml`` style).

    The target is the JSON the shop's model writes (:func:`concierge.shop.query.model_schema`), filled
    from the request's written expectations: one category when the request names one, the price
    bounds, single-valued attributes, exclusions, occasion and sort. Single-turn requests only: for a
    refinement the expectations describe the whole conversation, not the last message.
    """
    from concierge.shop.query import model_request, model_schema

    schema = model_schema(vocab)
    categories = set(schema["properties"]["category"]["enum"]) - {None}
    names = set(schema["properties"]["attributes"]["items"]["properties"]["name"]["enum"])
    records = []
    for request in requests:
        turns = [str(t) for t in request.get("turns") or []]
        if len(turns) != 1:
            continue
        expect = request.get("expect") or {}
        fields = expect.get("query") or {}
        cats = expect.get("categories") or []

        def number(value: Any) -> float | int | None:
            return None if value is None else (int(value) if float(value).is_integer() else float(value))

        attributes = [
            {"name": name, "value": str(values[0])}
            for name, values in (expect.get("attributes") or {}).items()
            if name in names and isinstance(values, list) and len(values) == 1
        ][:4]
        exclusions = [str(w) for w in expect.get("exclude_words") or []]
        for values in (expect.get("exclude_attributes") or {}).values():
            exclusions += [str(v) for v in values]
        query = {
            "keywords": "",
            "category": cats[0] if len(cats) == 1 and cats[0] in categories else None,
            "price_min": number(fields.get("price_min", expect.get("price_min"))),
            "price_max": number(fields.get("price_max", expect.get("price_max"))),
            "attributes": attributes,
            "occasion": fields.get("occasion"),
            "exclusions": exclusions[:3],
            "sort": fields.get("sort", "relevance"),
        }
        messages = model_request([{"role": "user", "content": turns[0]}], vocab, None)["messages"]
        messages.append({"role": "assistant", "content": json.dumps(query, ensure_ascii=False)})
        records.append(
            {
                "kind": "shop",
                "id": str(request.get("id") or len(records)),
                "turns": turns,
                "query": query,
                "messages": messages,
            }
        )
    return records


def demo_shop_vocabulary(seed: int = 7, n_products: int = 800) -> Any:
    """The vocabulary of the generated demo store the written requests are about."""
    from concierge.shop.catalog import Catalog
    from concierge.shop.demo_store import generate_demo_store
    from concierge.shop.query import ShopVocabulary

    products, _ = generate_demo_store(seed=seed, n_products=n_products, n_shoppers=10)
    return ShopVocabulary(Catalog.from_records(products, tenant="demo", name="demo"))
