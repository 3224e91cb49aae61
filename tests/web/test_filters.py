"""The filter chips of an answer: one per filter, each posting the query without exactly that filter."""

from __future__ import annotations

import json

import pytest

from concierge.web.filters import FilterError, edited_query, filter_chips

QUERY = {
    "keywords": "trail", "category": "Women > Shoes > Boots | Men > Shoes > Boots", "price_min": None,
    "price_max": 120.0, "attributes": {"color": ["black", "brown"], "waterproof": ["yes"]}, "occasion": "hiking",
    "exclusions": ["leather"], "sort": "price_asc",
}  # fmt: skip


def test_every_filter_is_a_chip_that_removes_only_itself() -> None:
    chips = {c["label"]: json.loads(c["without"]) for c in filter_chips(QUERY)}
    assert set(chips) == {"Boots", "under $120", "color: black", "color: brown", "waterproof", "not leather",
                          "cheapest first"}  # fmt: skip
    assert chips["Boots"] == {**QUERY, "category": None}
    assert chips["under $120"] == {**QUERY, "price_max": None}
    assert chips["color: black"]["attributes"] == {"color": ["brown"], "waterproof": ["yes"]}
    assert chips["waterproof"]["attributes"] == {"color": ["black", "brown"]}
    assert chips["not leather"]["exclusions"] == []
    assert chips["cheapest first"]["sort"] == "relevance"
    assert filter_chips(None) == [] and filter_chips({"keywords": "x"}) == []


def test_edited_query_reads_a_changed_price_and_refuses_what_no_form_sends() -> None:
    raw = json.dumps(QUERY)
    assert edited_query(raw, "20", "")["price_min"] == 20 and edited_query(raw, "20", "")["price_max"] is None
    assert edited_query(raw)["price_max"] == 120
    for bad in ("{not json", "[1, 2]", "x" * 9000):
        with pytest.raises(FilterError):
            edited_query(bad)
    for price in ("lots", "-5", "nan", "inf"):
        with pytest.raises(FilterError):
            edited_query(raw, price_max=price)
