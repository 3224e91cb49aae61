"""A tiny τ²-shaped retail database (one customer, three orders) for guided-mode tests that assert the
database before and after, with no real data needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EMAIL = "ada.lee@example.com"
LAMP, LAMP_WHITE = "1000000001", "1000000002"
BOTTLE = "2000000001"
BACKPACK = "3000000001"
WATCH, WATCH_BLACK = "4000000001", "4000000002"


def _item(name: str, pid: str, item_id: str, price: float, options: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "product_id": pid, "item_id": item_id, "price": price, "options": options}


def _order(oid: str, status: str, items: list[dict[str, Any]], address: dict[str, str]) -> dict[str, Any]:
    total = sum(i["price"] for i in items)
    return {
        "order_id": oid,
        "user_id": "ada_lee_1",
        "address": address,
        "items": items,
        "status": status,
        "fulfillments": [] if status == "pending" else [{"tracking_id": ["111"], "item_ids": [i["item_id"] for i in items]}],
        "payment_history": [{"transaction_type": "payment", "amount": total, "payment_method_id": "credit_card_1"}],
    }


def retail_db() -> dict[str, Any]:
    address = {"address1": "1 Elm Street", "address2": "", "city": "Toronto", "country": "Canada", "state": "ON", "zip": "12345"}
    lamp, bottle = {"color": "black", "brightness": "low"}, {"capacity": "500ml", "color": "blue"}
    backpack, watch = {"color": "green", "size": "large"}, {"dial color": "white", "strap": "leather"}
    variants = {
        "p1": ("Desk Lamp", {LAMP: (lamp, 100.0), LAMP_WHITE: ({"color": "white", "brightness": "low"}, 90.0)}),
        "p2": ("Water Bottle", {BOTTLE: (bottle, 20.0)}),
        "p3": ("Backpack", {BACKPACK: (backpack, 60.0)}),
        "p4": ("Watch", {WATCH: (watch, 200.0), WATCH_BLACK: ({"dial color": "black", "strap": "leather"}, 210.0)}),
    }
    return {
        "users": {
            "ada_lee_1": {
                "user_id": "ada_lee_1",
                "name": {"first_name": "Ada", "last_name": "Lee"},
                "address": address,
                "email": EMAIL,
                "payment_methods": {
                    "credit_card_1": {"source": "credit_card", "id": "credit_card_1", "brand": "visa", "last_four": "4242"},
                    "gift_card_2": {"source": "gift_card", "id": "gift_card_2", "balance": 500.0},
                },
                "orders": ["#W0000001", "#W0000002", "#W0000003"],
            }
        },
        "orders": {
            "#W0000001": _order("#W0000001", "pending", [_item("Desk Lamp", "p1", LAMP, 100.0, lamp), _item("Water Bottle", "p2", BOTTLE, 20.0, bottle)], address),
            "#W0000002": _order("#W0000002", "delivered", [_item("Backpack", "p3", BACKPACK, 60.0, backpack)], address),
            "#W0000003": _order("#W0000003", "pending", [_item("Watch", "p4", WATCH, 200.0, watch)], address),
        },
        "products": {
            pid: {
                "name": name,
                "product_id": pid,
                "variants": {iid: {"item_id": iid, "options": opts, "available": True, "price": price} for iid, (opts, price) in vs.items()},
            }
            for pid, (name, vs) in variants.items()
        },
    }


def write_retail_db(folder: Path) -> Path:
    (folder / "db.json").write_text(json.dumps(retail_db()), encoding="utf-8")
    return folder
