"""Shop catalogues: the product model, validated all-or-nothing ingest, and loading back.

Product files (one product per line/row)
----------------------------------------
JSONL (``.jsonl`` / ``.ndjson``): one JSON object per line with the fields

    id           str, required, unique in the catalogue
    title        str, required
    description  str
    category     path such as ``"Women > Shoes > Sneakers"`` (segments are trimmed)
    brand        str
    price        number >= 0; optional when every variant has a price (then the lowest variant price)
    currency     3 letters, default ``USD``
    attributes   object: name -> string | number | bool | list of those (``color``, ``material`` ...)
    image_url    str
    stock        int >= 0, only for a product without variants (absent: stock not tracked)
    variants     list of ``{id (required, unique in the catalogue), options {name: value},
                 price (default: the product price), stock (int >= 0; absent/null: not tracked)}``

A product without variants is sold as one variant whose id is the product id. Attribute and option
names are lower-cased; values keep their case (search compares them case-insensitively). Unknown
fields are rejected (a typo such as ``stok`` must not silently drop data).

CSV (``.csv``): a header row with the same column names, **one row per product**. ``attributes`` and
``variants`` are JSON cells (variants as a JSON array, as above); any ``attr_<name>`` column adds the
attribute ``<name>`` (handy for spreadsheets). Empty cells count as absent.

Parquet (``.parquet``): the same columns as JSONL (``variants`` as ``list<struct>`` or a JSON string,
``attributes`` as a struct, a map or a JSON string). Needs ``pyarrow``.

Interaction files: columns ``user``, ``item`` (a variant id or a product id of the catalogue), ``event``
(``view`` | ``cart`` | ``purchase``) and ``timestamp`` (ISO 8601, naive means UTC, or epoch seconds),
in CSV, JSONL or Parquet.

Rejected rows are reported with their line number: the physical line for JSONL and CSV (the CSV
header is line 1), the 1-based row number for Parquet and in-memory records.

Transactions: the ``ingest_*`` functions validate everything before touching the database; if any
row is rejected nothing is written (not even the tenant). Writes happen in the caller's session, so
they commit or roll back as one transaction with :func:`concierge.store.db.session_scope`; passing
``session=None`` opens (and commits) one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from concierge.shop.store_tables import SHOP_TABLES, ShopCatalog, ShopInteraction, ShopProduct, ShopVariant
from concierge.store.db import Base, session_scope
from concierge.store.tables import Tenant

EVENTS = ("view", "cart", "purchase")
PRODUCT_FIELDS = (
    "id", "title", "description", "category", "brand", "price", "currency",
    "attributes", "image_url", "stock", "variants",
)  # fmt: skip
INTERACTION_FIELDS = ("user", "item", "event", "timestamp")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_CHUNK = 500  # ids per IN clause (well under SQLite's variable limit)


class CatalogError(ValueError):
    """Bad input that is not one row's fault: missing file, unknown format, unknown catalogue."""


class CatalogValidationError(CatalogError):
    """Some rows were rejected (in-memory construction, where there is no report to return)."""

    def __init__(self, rejected: list[RejectedRow]) -> None:
        self.rejected = rejected
        first = "; ".join(str(r) for r in rejected[:3])
        more = f" (+{len(rejected) - 3} more)" if len(rejected) > 3 else ""
        super().__init__(f"{len(rejected)} rejected rows: {first}{more}")


# --------------------------------------------------------------------------------------------------
# In-memory model


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


class Catalog:
    """An in-memory catalogue with O(1) lookup of products and variants by id."""

    def __init__(self, products: Iterable[Product], tenant: str = "", name: str = "") -> None:
        self.tenant = tenant
        self.name = name
        self.products: list[Product] = list(products)
        self._products = {p.id: p for p in self.products}
        self._variants = {v.id: v for p in self.products for v in p.variants}
        if len(self._products) != len(self.products):
            raise CatalogError("duplicate product ids")

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], tenant: str = "", name: str = "") -> Catalog:
        """Validate product records (the JSONL form); raises :class:`CatalogValidationError`."""
        products, rejected, _ = _validate_products(_read_records(records))
        if rejected:
            raise CatalogValidationError(rejected)
        return cls(products, tenant=tenant, name=name)

    @classmethod
    def from_snapshot(cls, records: Iterable[Mapping[str, Any]], tenant: str = "", name: str = "") -> Catalog:
        """Rebuild from records this module wrote (``Product.to_record``) without re-validating them."""
        products = []
        for r in records:
            variants = tuple(
                Variant(v["id"], r["id"], dict(v["options"]), float(v["price"]), v["stock"])
                for v in r["variants"]
            )
            products.append(
                Product(
                    id=r["id"],
                    title=r["title"],
                    description=r["description"],
                    category=r["category"],
                    brand=r["brand"],
                    price=float(r["price"]),
                    currency=r["currency"],
                    attributes=dict(r["attributes"]),
                    image_url=r["image_url"],
                    variants=variants,
                )
            )
        return cls(products, tenant=tenant, name=name)

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._products or item_id in self._variants

    def product(self, product_id: str) -> Product:
        return self._products[product_id]

    def variant(self, variant_id: str) -> Variant:
        return self._variants[variant_id]

    def get_product(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def get_variant(self, variant_id: str) -> Variant | None:
        return self._variants.get(variant_id)

    def resolve(self, item_id: str) -> tuple[Product, Variant | None]:
        """A variant id -> (its product, the variant); a product id -> (product, None). KeyError if neither."""
        variant = self._variants.get(item_id)
        if variant is not None:
            return self._products[variant.product_id], variant
        return self._products[item_id], None

    def variants(self) -> Iterator[Variant]:
        for p in self.products:
            yield from p.variants

    @property
    def variant_count(self) -> int:
        return len(self._variants)

    def categories(self) -> dict[str, int]:
        """Every category path and each of its prefixes -> number of products under it."""
        counts: dict[str, int] = {}
        for p in self.products:
            path = p.category_path
            for i in range(1, len(path) + 1):
                key = " > ".join(path[:i])
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def attribute_values(self) -> dict[str, set[str]]:
        """Attribute/option name -> the values seen (lower-cased); lets a query parser know the vocabulary."""
        out: dict[str, set[str]] = {}
        for p in self.products:
            for key, value in p.attributes.items():
                values = value if isinstance(value, list) else [value]
                out.setdefault(key, set()).update(v.lower() for v in values)
            for v in p.variants:
                for key, value in v.options.items():
                    out.setdefault(key, set()).add(value.lower())
        return out

    def to_records(self) -> list[dict[str, Any]]:
        return [p.to_record() for p in self.products]


# --------------------------------------------------------------------------------------------------
# Validation models

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


# --------------------------------------------------------------------------------------------------
# Readers


def _read_records(records: Iterable[Mapping[str, Any]]) -> Iterator[_Row]:
    for i, rec in enumerate(records, 1):
        yield (i, dict(rec)) if isinstance(rec, Mapping) else (i, "not an object")


def _read_jsonl(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            yield (line_no, data) if isinstance(data, dict) else (line_no, "not a JSON object")


_JSON_CELLS = {"attributes": dict, "variants": list}


def _read_csv(path: Path, allowed: tuple[str, ...], json_cells: dict[str, type]) -> Iterator[_Row]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        unknown = [h for h in header if h not in allowed and not (json_cells and h.startswith("attr_"))]
        if unknown:
            raise CatalogError(
                f"{path.name}: unknown column(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
                + (" or attr_<name>" if json_cells else "")
            )
        last = 1  # the header line
        for row in reader:
            line, last = last + 1, reader.line_num
            if None in row:
                yield line, "more cells than header columns"
                continue
            data: dict[str, Any] = {}
            attr_cells: dict[str, str] = {}
            error = None
            for key, cell in row.items():
                if cell is None or cell.strip() == "":
                    continue
                if key in json_cells:
                    try:
                        value = json.loads(cell)
                    except json.JSONDecodeError as exc:
                        error = f"{key}: invalid JSON ({exc.msg})"
                        break
                    if not isinstance(value, json_cells[key]):
                        error = f"{key}: must be a JSON {'object' if json_cells[key] is dict else 'array'}"
                        break
                    data[key] = value
                elif key.startswith("attr_"):
                    attr_cells[key[5:]] = cell.strip()
                else:
                    data[key] = cell
            if attr_cells:
                # attr_<name> columns and a JSON attributes cell merge; the JSON cell wins on a clash.
                data["attributes"] = {**attr_cells, **data.get("attributes", {})}
            yield line, ({**data, _ERROR: error} if error else data)


def _from_arrow(value: Any) -> Any:
    """pyarrow map columns come back as lists of (key, value) tuples; make them dicts."""
    if isinstance(value, list) and value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
        return {k: _from_arrow(v) for k, v in value}
    if isinstance(value, list):
        return [_from_arrow(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_arrow(v) for k, v in value.items() if v is not None}
    return value


def _read_parquet(path: Path, json_cells: dict[str, type]) -> Iterator[_Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise CatalogError("reading Parquet needs pyarrow: pip install pyarrow") from exc
    table = pq.read_table(path)
    for i, rec in enumerate(table.to_pylist(), 1):
        data = {k: _from_arrow(v) for k, v in rec.items() if v is not None}
        error = None
        for key in json_cells:
            if isinstance(data.get(key), str):
                try:
                    data[key] = json.loads(data[key])
                except json.JSONDecodeError as exc:
                    error = f"{key}: invalid JSON ({exc.msg})"
        yield i, ({**data, _ERROR: error} if error else data)


def _rows(source: str | Path | Iterable[Mapping[str, Any]], kind: str) -> tuple[Iterator[_Row], str]:
    """Pick the reader for a path (by extension) or in-memory records; returns (rows, label)."""
    allowed = PRODUCT_FIELDS if kind == "products" else INTERACTION_FIELDS
    json_cells = _JSON_CELLS if kind == "products" else {}
    if not isinstance(source, str | Path):
        return _read_records(source), "records"
    path = Path(source).expanduser()
    if not path.is_file():
        raise CatalogError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path), str(path)
    if suffix == ".csv":
        return _read_csv(path, allowed, json_cells), str(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, json_cells), str(path)
    raise CatalogError(f"{path.name}: unknown file type (use .csv, .jsonl or .parquet)")


# --------------------------------------------------------------------------------------------------
# Database


@dataclass
class IngestReport:
    tenant: str
    catalog: str
    source: str
    rows: int = 0
    products: int = 0
    variants: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        if self.rejected:
            return f"{len(self.rejected)} of {self.rows} rows rejected; nothing written"
        return (
            f"{self.products} products ({self.variants} variants): {self.added} added, "
            f"{self.updated} updated, {self.removed} removed, {self.unchanged} unchanged"
        )


@dataclass
class InteractionReport:
    tenant: str
    catalog: str
    source: str
    rows: int = 0
    inserted: int = 0
    replaced: int = 0  # earlier interactions deleted (replace mode)
    rejected: list[RejectedRow] = field(default_factory=list)
    written: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        if self.rejected:
            return f"{len(self.rejected)} of {self.rows} rows rejected; nothing written"
        return f"{self.inserted} interactions written ({self.replaced} earlier ones replaced)"


@dataclass(frozen=True)
class CatalogInfo:
    tenant: str
    name: str
    products: int
    variants: int
    source: str
    updated_at: datetime


def ensure_tables(session: Session) -> None:
    """Create the shop tables if missing, inside the session's transaction (no second connection)."""
    Base.metadata.create_all(session.connection(), tables=SHOP_TABLES)


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise CatalogError(f"bad {kind} name {value!r}: use letters, digits, '.', '_' or '-' (max 100)")


def _tenant_id(session: Session, tenant: str, create: bool) -> int | None:
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    if tenant_id is None and create:
        row = Tenant(name=tenant)
        session.add(row)
        session.flush()
        tenant_id = row.id
    return tenant_id


def _catalog_row(session: Session, tenant: str, name: str) -> ShopCatalog:
    ensure_tables(session)
    tenant_id = _tenant_id(session, tenant, create=False)
    row = None
    if tenant_id is not None:
        row = session.scalar(
            select(ShopCatalog).where(ShopCatalog.tenant_id == tenant_id, ShopCatalog.name == name)
        )
    if row is None:
        raise CatalogError(f"no catalogue {name!r} for tenant {tenant!r}")
    return row


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def ingest_catalog(
    session: Session | None,
    tenant: str,
    name: str,
    source: str | Path | Iterable[Mapping[str, Any]],
    *,
    source_label: str | None = None,
) -> IngestReport:
    """Validate a whole product file (or records) and replace the catalogue ``tenant/name`` with it.

    All or nothing: any rejected row -> the report lists every rejected row and nothing is written.
    Otherwise only the difference is written (by content hash): removed and changed products are
    deleted with their variants, new and changed ones inserted, in the caller's transaction.
    """
    _check_name("tenant", tenant)
    _check_name("catalogue", name)
    rows, label = _rows(source, "products")
    products, rejected, count = _validate_products(rows)
    report = IngestReport(tenant, name, source_label or label, rows=count, rejected=rejected)
    if rejected:
        return report
    if not products:
        raise CatalogError(f"{report.source}: no products in the source")
    if session is None:
        with session_scope() as own:
            return _write_catalog(own, report, products)
    return _write_catalog(session, report, products)


def _write_catalog(session: Session, report: IngestReport, products: list[Product]) -> IngestReport:
    ensure_tables(session)
    tenant_id = _tenant_id(session, report.tenant, create=True)
    cat = session.scalar(
        select(ShopCatalog).where(ShopCatalog.tenant_id == tenant_id, ShopCatalog.name == report.catalog)
    )
    if cat is None:
        cat = ShopCatalog(tenant_id=tenant_id, name=report.catalog)
        session.add(cat)
        session.flush()
    existing = {
        pid: (row_id, chash, pos)
        for pid, row_id, chash, pos in session.execute(
            select(
                ShopProduct.product_id, ShopProduct.id, ShopProduct.content_hash, ShopProduct.position
            ).where(ShopProduct.catalog_id == cat.id)
        )
    }
    new_ids = {p.id for p in products}
    to_write: list[tuple[int, Product]] = []
    moved: list[dict[str, int]] = []
    for pos, p in enumerate(products):
        old = existing.get(p.id)
        if old is None:
            report.added += 1
            to_write.append((pos, p))
        elif old[1] != p.content_hash:
            report.updated += 1
            to_write.append((pos, p))
        else:
            report.unchanged += 1
            if old[2] != pos:
                moved.append({"id": old[0], "position": pos})
    removed = [pid for pid in existing if pid not in new_ids]
    report.removed = len(removed)
    stale = removed + [p.id for _, p in to_write if p.id in existing]
    # Deletes go first so a variant id may move from one product to another in the same ingest.
    for chunk in _chunks(stale):
        session.execute(
            delete(ShopVariant).where(ShopVariant.catalog_id == cat.id, ShopVariant.product_id.in_(chunk))
        )
        session.execute(
            delete(ShopProduct).where(ShopProduct.catalog_id == cat.id, ShopProduct.product_id.in_(chunk))
        )
    product_rows = [
        {
            "catalog_id": cat.id,
            "product_id": p.id,
            "position": pos,
            "title": p.title,
            "description": p.description,
            "category": p.category,
            "brand": p.brand,
            "price": p.price,
            "currency": p.currency,
            "attributes": p.attributes,
            "image_url": p.image_url,
            "content_hash": p.content_hash,
        }
        for pos, p in to_write
    ]
    variant_rows = [
        {
            "catalog_id": cat.id,
            "product_id": p.id,
            "variant_id": v.id,
            "position": i,
            "options": v.options,
            "price": v.price,
            "stock": v.stock,
        }
        for _, p in to_write
        for i, v in enumerate(p.variants)
    ]
    for chunk in _chunks(product_rows, 5000):
        session.execute(insert(ShopProduct), chunk)
    for chunk in _chunks(variant_rows, 5000):
        session.execute(insert(ShopVariant), chunk)
    if moved:
        session.execute(update(ShopProduct), moved)
    report.products = len(products)
    report.variants = sum(len(p.variants) for p in products)
    cat.product_count = report.products
    cat.variant_count = report.variants
    cat.source = report.source[:500]
    cat.updated_at = datetime.now(UTC)
    session.flush()
    report.written = True
    return report


def load_catalog(session: Session | None, tenant: str, name: str) -> Catalog:
    """The catalogue ``tenant/name`` as an in-memory :class:`Catalog` (CatalogError if it does not exist)."""
    if session is None:
        with session_scope() as own:
            return load_catalog(own, tenant, name)
    cat = _catalog_row(session, tenant, name)
    variants: dict[str, list[Variant]] = {}
    for pid, vid, options, price, stock in session.execute(
        select(
            ShopVariant.product_id,
            ShopVariant.variant_id,
            ShopVariant.options,
            ShopVariant.price,
            ShopVariant.stock,
        )
        .where(ShopVariant.catalog_id == cat.id)
        .order_by(ShopVariant.product_id, ShopVariant.position)
    ):
        variants.setdefault(pid, []).append(Variant(vid, pid, dict(options or {}), float(price), stock))
    products = [
        Product(
            id=row.product_id,
            title=row.title,
            description=row.description,
            category=row.category,
            brand=row.brand,
            price=float(row.price),
            currency=row.currency,
            attributes=dict(row.attributes or {}),
            image_url=row.image_url,
            variants=tuple(variants.get(row.product_id, ())),
        )
        for row in session.scalars(
            select(ShopProduct).where(ShopProduct.catalog_id == cat.id).order_by(ShopProduct.position)
        )
    ]
    return Catalog(products, tenant=tenant, name=name)


def list_catalogs(session: Session | None, tenant: str | None = None) -> list[CatalogInfo]:
    """Every catalogue (of one tenant, or of all)."""
    if session is None:
        with session_scope() as own:
            return list_catalogs(own, tenant)
    ensure_tables(session)
    query = select(Tenant.name, ShopCatalog).join(Tenant, Tenant.id == ShopCatalog.tenant_id)
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    return [
        CatalogInfo(t, c.name, c.product_count, c.variant_count, c.source, _aware(c.updated_at))
        for t, c in session.execute(query.order_by(Tenant.name, ShopCatalog.name))
    ]


# --------------------------------------------------------------------------------------------------
# Interactions


def _aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _timestamp(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    if not math.isfinite(value):
        raise ValueError("timestamp: not a finite number")
    return datetime.fromtimestamp(value, UTC)


def _item_index(session: Session, catalog_id: int) -> dict[str, str]:
    """item id (variant or product) -> product id."""
    index = {
        vid: pid
        for vid, pid in session.execute(
            select(ShopVariant.variant_id, ShopVariant.product_id).where(ShopVariant.catalog_id == catalog_id)
        )
    }
    for (pid,) in session.execute(select(ShopProduct.product_id).where(ShopProduct.catalog_id == catalog_id)):
        index[pid] = pid
    return index


def _validate_interactions(
    rows: Iterable[_Row], items: Mapping[str, str]
) -> tuple[list[Interaction], list[RejectedRow], int]:
    out: list[Interaction] = []
    rejected: list[RejectedRow] = []
    count = 0
    for line, data in rows:
        count += 1
        if isinstance(data, str) or _ERROR in data:
            rejected.append(RejectedRow(line, data if isinstance(data, str) else data[_ERROR]))
            continue
        try:
            row = _InteractionIn.model_validate(data)
            ts = _timestamp(row.timestamp)
        except ValidationError as exc:
            rejected.append(RejectedRow(line, _reason(exc)))
            continue
        except (ValueError, OverflowError, OSError) as exc:
            rejected.append(RejectedRow(line, f"timestamp: {exc}"))
            continue
        product_id = items.get(row.item)
        if product_id is None:
            rejected.append(
                RejectedRow(line, f"item: {row.item!r} is neither a variant nor a product of the catalogue")
            )
            continue
        out.append(Interaction(row.user, row.item, product_id, row.event, ts))
    return out, rejected, count


def ingest_interactions(
    session: Session | None,
    tenant: str,
    name: str,
    source: str | Path | Iterable[Mapping[str, Any]],
    *,
    replace: bool = True,
    source_label: str | None = None,
) -> InteractionReport:
    """Validate interactions against the catalogue and write them (all or nothing).

    ``replace=True`` (a file is a snapshot) deletes the catalogue's earlier interactions in the same
    transaction; ``replace=False`` appends.
    """
    if session is None:
        with session_scope() as own:
            return ingest_interactions(own, tenant, name, source, replace=replace, source_label=source_label)
    cat = _catalog_row(session, tenant, name)
    rows, label = _rows(source, "interactions")
    events, rejected, count = _validate_interactions(rows, _item_index(session, cat.id))
    report = InteractionReport(tenant, name, source_label or label, rows=count, rejected=rejected)
    if rejected:
        return report
    if replace:
        result = session.execute(delete(ShopInteraction).where(ShopInteraction.catalog_id == cat.id))
        report.replaced = result.rowcount or 0
    rows_out = [
        {
            "catalog_id": cat.id,
            "user_id": e.user,
            "item_id": e.item,
            "product_id": e.product_id,
            "event": e.event,
            "ts": e.timestamp,
        }
        for e in events
    ]
    for chunk in _chunks(rows_out, 5000):
        session.execute(insert(ShopInteraction), chunk)
    session.flush()
    report.inserted = len(rows_out)
    report.written = True
    return report


def record_interaction(
    session: Session,
    tenant: str,
    name: str,
    user: str,
    item: str,
    event: str,
    timestamp: datetime | None = None,
) -> Interaction:
    """Append one live interaction (a view, an add-to-cart, a purchase); CatalogError on bad input."""
    cat = _catalog_row(session, tenant, name)
    data = {"user": user, "item": item, "event": event, "timestamp": timestamp or datetime.now(UTC)}
    pid = session.scalar(
        select(ShopVariant.product_id).where(ShopVariant.catalog_id == cat.id, ShopVariant.variant_id == item)
    ) or session.scalar(
        select(ShopProduct.product_id).where(ShopProduct.catalog_id == cat.id, ShopProduct.product_id == item)
    )
    events, rejected, _ = _validate_interactions(iter([(1, data)]), {item: pid} if pid else {})
    if rejected:
        raise CatalogError(rejected[0].reason)
    e = events[0]
    session.add(
        ShopInteraction(
            catalog_id=cat.id,
            user_id=e.user,
            item_id=e.item,
            product_id=e.product_id,
            event=e.event,
            ts=e.timestamp,
        )
    )
    session.flush()
    return e


def load_interactions(
    session: Session | None, tenant: str, name: str, user: str | None = None
) -> list[Interaction]:
    """The catalogue's interactions (optionally one user's), oldest first."""
    if session is None:
        with session_scope() as own:
            return load_interactions(own, tenant, name, user)
    cat = _catalog_row(session, tenant, name)
    query = select(
        ShopInteraction.user_id, ShopInteraction.item_id, ShopInteraction.product_id, ShopInteraction.event,
        ShopInteraction.ts,
    ).where(ShopInteraction.catalog_id == cat.id)  # fmt: skip
    if user is not None:
        query = query.where(ShopInteraction.user_id == user)
    return [
        Interaction(u, i, p, e, _aware(ts))
        for u, i, p, e, ts in session.execute(query.order_by(ShopInteraction.ts, ShopInteraction.id))
    ]


def count_interactions(session: Session, tenant: str, name: str) -> int:
    cat = _catalog_row(session, tenant, name)
    return (
        session.scalar(
            select(func.count()).select_from(ShopInteraction).where(ShopInteraction.catalog_id == cat.id)
        )
        or 0
    )
