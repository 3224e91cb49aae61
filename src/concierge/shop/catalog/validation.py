"""Validation: raw rows -> :class:`Product` / interaction fields, each rejection with its line."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from concierge.shop.catalog.schema import _ERROR, EVENTS, Product, RejectedRow, Variant, _Row

_Scalar = str | int | float | bool


def _scalar_str(value: _Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


class _VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=200)
    options: dict[str, _Scalar] = Field(default_factory=dict)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    stock: int | None = Field(default=None, ge=0)


class _ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    category: str = ""
    brand: str = Field(default="", max_length=200)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    currency: str = "USD"
    attributes: dict[str, _Scalar | list[_Scalar]] = Field(default_factory=dict)
    image_url: str | None = None
    stock: int | None = Field(default=None, ge=0)
    variants: list[_VariantIn] = Field(default_factory=list)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise ValueError("must be a 3-letter code such as USD")
        return value.upper()

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return " > ".join(seg.strip() for seg in value.split(">") if seg.strip())


class _InteractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True)
    user: str = Field(min_length=1, max_length=200)
    item: str = Field(min_length=1, max_length=200)
    event: str
    timestamp: datetime | float

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        value = value.lower()
        if value not in EVENTS:
            raise ValueError(f"must be one of {', '.join(EVENTS)}")
        return value


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (put extra data in attributes, or attr_<name> CSV columns)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _norm_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in mapping.items() if str(k).strip()}


def _to_product(row: _ProductIn) -> Product:
    attributes: dict[str, str | list[str]] = {}
    for key, value in _norm_keys(row.attributes).items():
        if isinstance(value, list):
            values = [_scalar_str(v) for v in value if _scalar_str(v)]
            if values:
                attributes[key] = values
        elif _scalar_str(value):
            attributes[key] = _scalar_str(value)
    if row.variants and row.stock is not None:
        raise ValueError(
            "stock: set stock on each variant (product-level stock is for products without variants)"
        )
    price = row.price
    if price is None:
        missing = [v.id for v in row.variants if v.price is None]
        if not row.variants or missing:
            raise ValueError("price: required (on the product, or on every variant)")
        price = min(v.price for v in row.variants if v.price is not None)
    variants: list[Variant] = []
    for v in row.variants or [_VariantIn(id=row.id, price=price, stock=row.stock)]:
        options = {k: _scalar_str(val) for k, val in _norm_keys(v.options).items() if _scalar_str(val)}
        variants.append(
            Variant(v.id, row.id, options, float(v.price if v.price is not None else price), v.stock)
        )
    return Product(
        id=row.id,
        title=row.title,
        description=row.description,
        category=row.category,
        brand=row.brand,
        price=float(price),
        currency=row.currency,
        attributes=attributes,
        image_url=row.image_url or None,
        variants=tuple(variants),
    )


def _validate_products(rows: Iterable[_Row]) -> tuple[list[Product], list[RejectedRow], int]:
    """Validate every row, then cross-row uniqueness. Returns (products, rejected, row count)."""
    products: list[tuple[int, Product]] = []
    rejected: list[RejectedRow] = []
    product_line: dict[str, int] = {}
    variant_line: dict[str, int] = {}
    count = 0
    for line, data in rows:
        count += 1
        if isinstance(data, str):
            rejected.append(RejectedRow(line, data))
            continue
        ident = str(data.get("id")).strip() if data.get("id") is not None else None
        if _ERROR in data:
            rejected.append(RejectedRow(line, data[_ERROR], ident))
            continue
        try:
            product = _to_product(_ProductIn.model_validate(data))
        except ValidationError as exc:
            rejected.append(RejectedRow(line, _reason(exc), ident))
            continue
        except ValueError as exc:
            rejected.append(RejectedRow(line, str(exc), ident))
            continue
        if product.id in product_line:
            rejected.append(
                RejectedRow(line, f"duplicate product id (first on line {product_line[product.id]})", ident)
            )
            continue
        ids = [v.id for v in product.variants]
        clash = next((vid for vid in ids if vid in variant_line), None)
        dup_inside = next((vid for vid, n in Counter(ids).items() if n > 1), None)
        if clash or dup_inside:
            where = f"first on line {variant_line[clash]}" if clash else "twice in this product"
            rejected.append(RejectedRow(line, f"duplicate variant id {clash or dup_inside} ({where})", ident))
            continue
        product_line[product.id] = line
        for v in product.variants:
            variant_line[v.id] = line
        products.append((line, product))
    # A variant id equal to another product's id would make ids ambiguous for interactions and search.
    for line, product in products:
        other = next((v.id for v in product.variants if v.id != product.id and v.id in product_line), None)
        if other is not None:
            reason = f"variant id {other} is also the id of the product on line {product_line[other]}"
            rejected.append(RejectedRow(line, reason, product.id))
    bad_lines = {r.line for r in rejected}
    rejected.sort(key=lambda r: r.line)
    return [p for line, p in products if line not in bad_lines], rejected, count
