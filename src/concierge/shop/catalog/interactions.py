"""Shopper interactions (view, cart, purchase) in the database: ingest, record, load and count."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from concierge.shop.catalog.readers import _rows
from concierge.shop.catalog.schema import _ERROR, CatalogError, Interaction, RejectedRow, _Row
from concierge.shop.catalog.storage import _aware, _catalog_row, _chunks
from concierge.shop.catalog.validation import _InteractionIn, _reason
from concierge.shop.store_tables import ShopInteraction, ShopProduct, ShopVariant
from concierge.store.db import session_scope


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
