"""Catalogues in the database: ingest (validate everything, then write in the caller's session),
load and list."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from concierge.shop.catalog.memory import Catalog
from concierge.shop.catalog.readers import _rows
from concierge.shop.catalog.schema import CatalogError, Product, RejectedRow, Variant
from concierge.shop.catalog.validation import _validate_products
from concierge.shop.store_tables import ShopCatalog, ShopProduct, ShopVariant
from concierge.store.db import session_scope
from concierge.store.tables import Tenant

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_CHUNK = 500  # ids per IN clause (well under SQLite's variable limit)


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


@dataclass(frozen=True)
class CatalogInfo:
    tenant: str
    name: str
    products: int
    variants: int
    source: str
    updated_at: datetime


def _aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


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
    fmt: str = "auto",
    currency: str = "USD",
) -> IngestReport:
    """Validate a whole product file (or records) and replace the catalogue ``tenant/name`` with it.

    ``fmt`` is the file's kind: ``catalog`` (the catalogue's own CSV/JSONL/Parquet), ``shopify``
    (a Shopify product CSV export), ``merchant`` (a Google Merchant Center TSV or XML feed), or
    ``auto`` (from the extension and the header). ``currency`` is for feeds that carry none (Shopify).

    All or nothing: any rejected row -> the report lists every rejected row and nothing is written.
    Otherwise only the difference is written (by content hash): removed and changed products are
    deleted with their variants, new and changed ones inserted, in the caller's transaction.
    """
    _check_name("tenant", tenant)
    _check_name("catalogue", name)
    rows, label = _rows(source, "products", fmt=fmt, currency=currency)
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
    query = select(Tenant.name, ShopCatalog).join(Tenant, Tenant.id == ShopCatalog.tenant_id)
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    return [
        CatalogInfo(t, c.name, c.product_count, c.variant_count, c.source, _aware(c.updated_at))
        for t, c in session.execute(query.order_by(Tenant.name, ShopCatalog.name))
    ]
