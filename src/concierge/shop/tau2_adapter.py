"""τ²-bench retail ``db.json`` as a shop catalogue plus purchase interactions.

The file is read from wherever the caller says (it is never copied into the project):

* each τ² product -> a product (id = ``product_id``, title = ``name``), category from a fixed
  mapping of the 50 retail product names (``"Electronics > Audio > Headphones"``; unknown names go
  under ``"Retail > <name>"``), price = the lowest variant price, attributes = the options every
  variant shares, description = a factual summary of the options on offer;
* each τ² item -> a variant (id = ``item_id``, options, price); τ² only says ``available``, so stock
  is 1 when available and 0 when not;
* each item of each order -> a ``purchase`` by the order's ``user_id``. Cancelled orders are skipped
  unless asked for. τ² orders carry no dates, so timestamps are ordinal: the i-th order in the file
  is dated ``2024-01-01 + i hours`` -- they order events, they are not real dates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from concierge.shop.catalog import Catalog, CatalogError

# τ² retail product name -> department path (the product name becomes the leaf).
DEPARTMENTS: dict[str, str] = {
    "T-Shirt": "Clothing", "Fleece Jacket": "Clothing",
    "Running Shoes": "Shoes", "Hiking Boots": "Shoes", "Sneakers": "Shoes",
    "Backpack": "Bags", "Luggage Set": "Bags",
    "Sunglasses": "Accessories", "Wristwatch": "Accessories",
    "Laptop": "Electronics > Computers", "Tablet": "Electronics > Computers", "E-Reader": "Electronics > Computers",
    "Gaming Mouse": "Electronics > Computer Accessories", "Mechanical Keyboard": "Electronics > Computer Accessories",
    "Smartphone": "Electronics > Phones", "Smart Watch": "Electronics > Wearables",
    "Bluetooth Speaker": "Electronics > Audio", "Wireless Earbuds": "Electronics > Audio",
    "Headphones": "Electronics > Audio",
    "Action Camera": "Electronics > Cameras", "Digital Camera": "Electronics > Cameras",
    "Portable Charger": "Electronics > Accessories",
    "Indoor Security Camera": "Electronics > Smart Home", "Smart Thermostat": "Electronics > Smart Home",
    "Coffee Maker": "Kitchen > Coffee", "Espresso Machine": "Kitchen > Coffee",
    "Electric Kettle": "Kitchen > Kettles", "Tea Kettle": "Kitchen > Kettles", "Water Bottle": "Kitchen > Drinkware",
    "Desk Lamp": "Home > Lighting", "LED Light Bulb": "Home > Lighting", "Wall Clock": "Home > Decor",
    "Bookshelf": "Home > Furniture", "Office Chair": "Home > Furniture",
    "Air Purifier": "Home > Appliances", "Vacuum Cleaner": "Home > Appliances",
    "Notebook": "Office",
    "Electric Toothbrush": "Beauty > Personal Care", "Makeup Kit": "Beauty > Makeup", "Perfume": "Beauty > Fragrance",
    "Yoga Mat": "Sports > Fitness", "Dumbbell Set": "Sports > Fitness", "Cycling Helmet": "Sports > Cycling",
    "Bicycle": "Sports > Cycling", "Skateboard": "Sports > Skateboarding",
    "Garden Hose": "Garden", "Patio Umbrella": "Garden", "Grill": "Garden",
    "Pet Bed": "Pets", "Jigsaw Puzzle": "Toys > Puzzles",
}  # fmt: skip

ORDER_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def resolve_db_path(path: str | Path) -> Path:
    """``db.json`` itself, or a folder holding it (``.../tau2/retail``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "db.json"
    if not path.is_file():
        raise CatalogError(f"no τ² retail db.json at {path}")
    return path


def _load(path: str | Path) -> dict[str, Any]:
    db_path = resolve_db_path(path)
    try:
        data = json.loads(db_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{db_path}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("products"), dict):
        raise CatalogError(f"{db_path}: not a τ² retail db (no 'products' object)")
    return data


def _describe(name: str, variants: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    values: dict[str, list[str]] = {}
    for v in variants:
        for key, value in (v.get("options") or {}).items():
            seen = values.setdefault(str(key), [])
            if str(value) not in seen:
                seen.append(str(value))
    shared = {k: vs[0] for k, vs in values.items() if len(vs) == 1}
    parts = [f"{k} {', '.join(vs)}" for k, vs in values.items()]
    available = sum(1 for v in variants if v.get("available"))
    text = f"{name}. Options: {'; '.join(parts)}." if parts else f"{name}."
    text += f" {available} of {len(variants)} variants available."
    return text, shared


def load_tau2_retail(
    path: str | Path, *, include_cancelled: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(product records, purchase interaction records) from a τ² retail db, ready for ingest."""
    data = _load(path)
    products: list[dict[str, Any]] = []
    for pid, product in data["products"].items():
        name = str(product.get("name") or pid)
        variants = list((product.get("variants") or {}).values())
        description, shared = _describe(name, variants)
        dept = DEPARTMENTS.get(name, "Retail")
        products.append(
            {
                "id": str(product.get("product_id") or pid),
                "title": name,
                "description": description,
                "category": f"{dept} > {name}",
                "attributes": shared,
                "variants": [
                    {
                        "id": str(v["item_id"]),
                        "options": dict(v.get("options") or {}),
                        "price": v.get("price"),
                        "stock": 1 if v.get("available") else 0,
                    }
                    for v in variants
                ],
            }
        )
    interactions: list[dict[str, Any]] = []
    for i, order in enumerate((data.get("orders") or {}).values()):
        if order.get("status") == "cancelled" and not include_cancelled:
            continue
        ts = (ORDER_EPOCH + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for item in order.get("items") or []:
            interactions.append(
                {
                    "user": str(order["user_id"]),
                    "item": str(item["item_id"]),
                    "event": "purchase",
                    "timestamp": ts,
                }
            )
    return products, interactions


def tau2_catalog(path: str | Path, tenant: str = "", name: str = "tau2-retail") -> Catalog:
    """The τ² retail products as an in-memory :class:`Catalog` (no database)."""
    products, _ = load_tau2_retail(path)
    return Catalog.from_records(products, tenant=tenant, name=name)
