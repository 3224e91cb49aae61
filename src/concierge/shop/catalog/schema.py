"""The catalogue's data types (products, variants, interactions, rejected rows) and its errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

EVENTS = ("view", "cart", "purchase")
PRODUCT_FIELDS = (
    "id", "title", "description", "category", "brand", "price", "currency",
    "attributes", "image_url", "stock", "variants",
)  # fmt: skip
INTERACTION_FIELDS = ("user", "item", "event", "timestamp")


class CatalogError(ValueError):
    """Bad input that is not one row's fault: missing file, unknown format, unknown catalogue."""


class CatalogValidationError(CatalogError):
    """Some rows were rejected (in-memory construction, where there is no report to return)."""

    def __init__(self, rejected: list[RejectedRow]) -> None:
        self.rejected = rejected
        first = "; ".join(str(r) for r in rejected[:3])
        more = f" (+{len(rejected) - 3} more)" if len(rejected) > 3 else ""
        super().__init__(f"{len(rejected)} rejected rows: {first}{more}")


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str
    id: str | None = None

    def __str__(self) -> str:
        ident = f" (id {self.id})" if self.id else ""
        return f"line {self.line}{ident}: {self.reason}"


_Row = tuple[int, dict[str, Any] | str]  # (line, fields) or (line, reason it could not be parsed)
_ERROR = "\x00error"  # key a reader sets on fields it parsed only partly (the id stays reportable)


@dataclass(frozen=True)
class Variant:
    """One sellable variant. ``stock`` None means stock is not tracked (treated as available)."""

    id: str
    product_id: str
    options: dict[str, str]
    price: float
    stock: int | None = None

    @property
    def in_stock(self) -> bool:
        return self.stock is None or self.stock > 0

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "options": dict(self.options), "price": self.price, "stock": self.stock}


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    description: str
    category: str
    brand: str
    price: float
    currency: str
    attributes: dict[str, str | list[str]]
    image_url: str | None
    variants: tuple[Variant, ...]

    @property
    def category_path(self) -> tuple[str, ...]:
        return tuple(self.category.split(" > ")) if self.category else ()

    @property
    def in_stock(self) -> bool:
        return any(v.in_stock for v in self.variants)

    def to_record(self) -> dict[str, Any]:
        """The JSONL form (what :func:`ingest_catalog` accepts back)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "currency": self.currency,
            "attributes": {k: list(v) if isinstance(v, list) else v for k, v in self.attributes.items()},
            "image_url": self.image_url,
            "variants": [v.to_record() for v in self.variants],
        }

    @cached_property
    def content_hash(self) -> str:
        """Hash of everything a shopper or the search index can see of the product."""
        blob = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str  # as given: a variant id or a product id
    product_id: str  # resolved
    event: str  # view | cart | purchase
    timestamp: datetime
