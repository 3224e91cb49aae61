"""What the shop understood, as filters a shopper can remove or change (no web framework imports).

:func:`filter_chips` turns an answer's structured query into one chip per filter -- the category, the
price bounds, each option value, each exclusion, the sort -- each carrying the query *without* it, so
removing a filter is a plain form post of that query (``/ui/shop/chat`` with ``query``).
:func:`edited_query` reads such a post back, with a changed price when the form sends one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_QUERY_CHARS = 8000


def _money(value: float) -> str:
    return f"${value:,.2f}".replace(".00", "")


def _without(query: Mapping[str, Any], **changes: Any) -> str:
    out = {k: v for k, v in query.items()}
    out.update(changes)
    return json.dumps(out, sort_keys=True)


def filter_chips(query: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``[{"kind", "label", "without"}]``: every filter of ``query``; ``without`` is the query (JSON)
    with that filter removed."""
    if not query:
        return []
    q = dict(query)
    chips: list[dict[str, str]] = []
    if q.get("category"):
        names = [alt.strip().split(" > ")[-1] for alt in str(q["category"]).split("|")]
        label = " or ".join(dict.fromkeys(names))
        chips.append({"kind": "category", "label": label, "without": _without(q, category=None)})
    lo, hi = q.get("price_min"), q.get("price_max")
    if lo is not None and hi is not None:
        label = f"{_money(lo)}-{_money(hi)}"
    elif hi is not None:
        label = f"under {_money(hi)}"
    elif lo is not None:
        label = f"over {_money(lo)}"
    else:
        label = ""
    if label:
        chips.append({"kind": "price", "label": label, "without": _without(q, price_min=None, price_max=None)})
    attributes: dict[str, list[str]] = dict(q.get("attributes") or {})
    for key, values in attributes.items():
        for value in values:
            rest = {k: [v for v in vs if not (k == key and v == value)] for k, vs in attributes.items()}
            rest = {k: vs for k, vs in rest.items() if vs}
            shown = key if value == "yes" else f"not {key}" if value == "no" else f"{key}: {value}"
            chips.append({"kind": "option", "label": shown, "without": _without(q, attributes=rest)})
    exclusions = list(q.get("exclusions") or [])
    for term in exclusions:
        rest_terms = [e for e in exclusions if e != term]
        chips.append({"kind": "exclusion", "label": f"not {term}", "without": _without(q, exclusions=rest_terms)})
    if q.get("sort") in ("price_asc", "price_desc"):
        label = "cheapest first" if q["sort"] == "price_asc" else "priciest first"
        chips.append({"kind": "sort", "label": label, "without": _without(q, sort="relevance")})
    return chips


class FilterError(ValueError):
    """An edited query the form could not have sent (bad JSON, a bad price)."""


def _price(raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw.strip().lstrip("$").replace(",", ""))
    except ValueError:
        raise FilterError(f"{raw!r} is not a price") from None
    if value < 0 or value != value or value > 1e9:
        raise FilterError(f"{raw!r} is not a price")
    return round(value, 2)


def edited_query(raw: str, price_min: str | None = None, price_max: str | None = None) -> dict[str, Any]:
    """The query a filter form posts (JSON), with the price fields the form changed (blank: no bound)."""
    if len(raw) > MAX_QUERY_CHARS:
        raise FilterError("the filters are too long")
    try:
        query = json.loads(raw)
    except json.JSONDecodeError:
        raise FilterError("the filters could not be read") from None
    if not isinstance(query, dict):
        raise FilterError("the filters could not be read")
    if price_min is not None:
        query["price_min"] = _price(price_min)
    if price_max is not None:
        query["price_max"] = _price(price_max)
    return query
