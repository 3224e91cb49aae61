""""More like this" and "complete the look" on catalogues other than the demo store.

Closeness is judged here from the catalogue data alone -- shared option names, shared option values and
the shared part of the category path -- never by the search index's vectors, which rank the items under
test. "Complete the look" must work from any catalogue's own data: co-purchases when there are
interactions, the category tree when there are none; no category name is written into the code.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from concierge.shop.assistant import ShopAssistant
from concierge.shop.catalog import Catalog, Product
from concierge.shop.demo_store import generate_demo_store
from concierge.shop.personalize import Personalizer
from concierge.shop.search import HashingEmbedder, SearchIndex
from concierge.store import db
from helpers.paths import ROOT


class _NoModelHub:
    def chat(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # pragma: no cover - never called
        raise AssertionError("the model must not be called")

    stream_chat = chat


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield
    db.reset_engines()


def assistant_for(catalog: Catalog, interactions: list[dict[str, Any]] | None = None) -> ShopAssistant:
    index = SearchIndex.build(catalog, HashingEmbedder())
    personalizer = Personalizer(catalog, interactions) if interactions else None
    return ShopAssistant(_NoModelHub(), catalog, index, personalizer, query_model="never", answer_model=False)


@pytest.fixture(scope="module")
def tau2(shared_data: Path) -> ShopAssistant:
    from concierge.shop.tau2_adapter import tau2_catalog

    path = shared_data / "tau2" / "retail" / "db.json"
    if not path.is_file():
        pytest.skip(f"τ² retail catalogue {path} not found")
    return assistant_for(tau2_catalog(path))


# --------------------------------------------------------------------------------------------------
# An independent closeness measure


def _option_names(p: Product) -> set[str]:
    return {k.lower() for v in p.variants for k in v.options} | {k.lower() for k in p.attributes}


def _option_values(p: Product) -> set[str]:
    return {f"{k.lower()}={str(x).lower()}" for v in p.variants for k, x in v.options.items()}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _shared_path(a: Product, b: Product) -> int:
    n = 0
    for x, y in zip(a.category.split(" > "), b.category.split(" > "), strict=False):
        if x != y:
            break
        n += 1
    return n


def closeness(a: Product, b: Product) -> float:
    return _jaccard(_option_names(a), _option_names(b)) + _jaccard(_option_values(a), _option_values(b)) + (
        _shared_path(a, b)
    )


def test_more_like_this_on_tau2_is_closer_than_random_items(tau2: ShopAssistant) -> None:
    catalog = tau2.catalog
    rng = random.Random(17)
    wins, gaps = 0, []
    for product in catalog.products:
        similar = tau2.more_like_this(product.id, k=5)
        assert len(similar) == 5
        assert all(c["product_id"] != product.id and catalog.get_variant(c["id"]).in_stock for c in similar)
        near = statistics.mean(closeness(product, catalog.product(c["product_id"])) for c in similar)
        others = [p for p in catalog.products if p.id != product.id]
        drawn = statistics.mean(closeness(product, p) for p in rng.sample(others, 5))
        wins += near > drawn
        gaps.append(near - drawn)
    # Over the 50 products: clearly closer on average, and closer than a random draw for most products.
    assert statistics.mean(gaps) > 0.15, statistics.mean(gaps)
    assert wins >= 0.7 * len(catalog.products), wins


# --------------------------------------------------------------------------------------------------
# A small catalogue written here: a garden shop and a stationery shop under one roof


def _product(pid: str, title: str, category: str, colour: str, price: float, **options: str) -> dict[str, Any]:
    return {
        "id": pid, "title": title, "category": category, "brand": "Field & Desk", "price": price,
        "description": f"{title}.",
        "variants": [{"id": f"{pid}-1", "options": {"color": colour, **options}, "stock": 5}],
    }  # fmt: skip


SMALL = [
    _product("G1", "Steel Garden Spade", "Garden > Tools > Spades", "green", 30, handle="ash wood"),
    _product("G2", "Border Garden Spade", "Garden > Tools > Spades", "black", 34, handle="ash wood"),
    _product("G3", "Drainage Garden Spade", "Garden > Tools > Spades", "green", 41, handle="fibreglass"),
    _product("G9", "Suede Garden Gloves", "Garden > Wear > Gloves", "brown", 17, size="M"),
    _product("G4", "Leather Garden Gloves", "Garden > Wear > Gloves", "green", 15, size="M"),
    _product("G5", "Rubber Garden Boots", "Garden > Wear > Boots", "green", 45, size="9"),
    _product("G6", "Tomato Seed Packet", "Garden > Plants > Seeds", "red", 3, variety="cherry"),
    _product("G7", "Rose Bush", "Garden > Plants > Shrubs", "red", 22, variety="climbing"),
    _product("G8", "Garden Kneeler Pad", "Garden > Tools > Kneelers", "green", 12, handle="none"),
    _product("S1", "Dotted Notebook A5", "Stationery > Paper > Notebooks", "blue", 9, ruling="dotted"),
    _product("S2", "Lined Notebook A5", "Stationery > Paper > Notebooks", "black", 8, ruling="lined"),
    _product("S3", "Fountain Pen", "Stationery > Writing > Pens", "blue", 25, nib="fine"),
    _product("S4", "Gel Pen Set", "Stationery > Writing > Pens", "black", 7, nib="medium"),
]


def _interactions() -> list[dict[str, Any]]:
    """Shoppers who buy a spade buy gloves with it (the same session); a few buy notebooks and pens."""
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    rows = []
    for n in range(6):
        user = f"u{n}"
        at = t0 + timedelta(days=n)
        rows += [
            {"user": user, "item": "G1-1", "event": "purchase", "timestamp": at},
            {"user": user, "item": "G4-1", "event": "purchase", "timestamp": at + timedelta(minutes=3)},
        ]
    for n in range(6, 10):
        at = t0 + timedelta(days=n)
        rows += [
            {"user": f"u{n}", "item": "S1-1", "event": "purchase", "timestamp": at},
            {"user": f"u{n}", "item": "S3-1", "event": "purchase", "timestamp": at + timedelta(minutes=2)},
        ]
    return rows


@pytest.fixture(scope="module")
def small() -> Catalog:
    return Catalog.from_records(SMALL, tenant="t", name="garden-and-desk")


def test_more_like_this_on_a_small_catalogue_stays_with_its_kind(small: Catalog) -> None:
    a = assistant_for(small)
    spades = a.more_like_this("G1", k=2)
    assert {small.product(c["product_id"]).category for c in spades} == {"Garden > Tools > Spades"}
    pens = a.more_like_this("S3", k=1)
    assert small.product(pens[0]["product_id"]).category.startswith("Stationery > ")


def test_complete_the_look_from_co_purchases_on_another_catalogue(small: Catalog) -> None:
    a = assistant_for(small, _interactions())
    look = a.complete_the_look("G1", k=3)
    assert look[0]["product_id"] == "G4"  # bought with the spade by every buyer
    assert look[0]["reason"].startswith("often bought together")
    assert all(small.product(c["product_id"]).category != "Garden > Tools > Spades" for c in look)
    look = a.complete_the_look("S1", k=1)
    assert look[0]["product_id"] == "S3"


def test_complete_the_look_without_interactions_follows_the_category_tree(small: Catalog) -> None:
    a = assistant_for(small)
    look = a.complete_the_look("G1", k=4)
    cats = [small.product(c["product_id"]).category for c in look]
    assert len(cats) == 4 and "Garden > Tools > Spades" not in cats
    # Other branches of the garden department first (wear, plants), one item per category before repeats,
    # never the stationery shop while the garden still has categories to offer.
    assert all(c.startswith("Garden > ") for c in cats)
    assert len(set(cats)) == 4
    assert not any(c.startswith("Garden > Tools > ") for c in cats[:3])
    # Within a category, an item sharing the product's colour is preferred: the green gloves, not the
    # brown ones listed first.
    gloves = [c["product_id"] for c in look if small.product(c["product_id"]).category == "Garden > Wear > Gloves"]
    assert gloves == ["G4"]


def test_complete_the_look_on_tau2_uses_the_tree_of_that_catalogue(tau2: ShopAssistant) -> None:
    catalog = tau2.catalog
    for product in catalog.products:
        look = tau2.complete_the_look(product.id, k=4)
        assert look, product.category
        top = product.category.split(" > ")[0]
        department = [p for p in catalog.products if p.category.startswith(top + " > ") and p.category != product.category]
        for card in look:
            other = catalog.product(card["product_id"])
            assert other.category != product.category and catalog.get_variant(card["id"]).in_stock
        if department:  # the department has other categories: the look starts there
            assert catalog.product(look[0]["product_id"]).category.startswith(top + " > ")


def test_no_demo_store_category_is_named_in_the_shop_code() -> None:
    products, _ = generate_demo_store(seed=7, n_products=200, n_shoppers=10)
    segments = {seg for p in products for seg in p["category"].split(" > ")}
    # Department names that are also ordinary words of the code ("Home", "Bags") are left out; the leaf
    # and branch names are what category rules were keyed by.
    names = {s for s in segments if s not in {"Women", "Men", "Home", "Bags", "Kitchen", "Toys", "Beauty",
                                              "Outdoor", "Electronics", "Accessories", "Clothing", "Shoes",
                                              "Storage", "Travel", "Decor", "Gear", "Appliances"}}  # fmt: skip
    folder = ROOT / "src" / "concierge" / "shop"
    files = [folder / "assistant.py", folder / "writing.py", folder / "personalize.py", folder / "session.py"]
    files += sorted((folder / "recommend").glob("*.py"))
    for path in files:
        code = path.read_text(encoding="utf-8").lower()
        for name in names:
            assert not re.search(rf"[\"']{re.escape(name.lower())}[\"']", code), (path.name, name)
