"""Tables for shop catalogues: catalogues, products, variants and shopper interactions.

Declared on :class:`concierge.store.base.Base`; the store imports this module by name (it is listed
in ``concierge.store.base.TABLE_MODULES``), so migrations and ``create_all`` see them. Products and
variants are keyed by their catalogue-scoped string ids; interactions keep plain string ids (no
foreign key to product rows) so replacing a catalogue never cascades into the shopper history.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from concierge.store.base import Base


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ShopCatalog(Base):
    __tablename__ = "shop_catalogs"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_shop_catalog_tenant_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    product_count: Mapped[int] = mapped_column(Integer, default=0)
    variant_count: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow, onupdate=_utcnow)


class ShopProduct(Base):
    __tablename__ = "shop_products"
    __table_args__ = (UniqueConstraint("catalog_id", "product_id", name="uq_shop_product"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    catalog_id: Mapped[int] = mapped_column(ForeignKey("shop_catalogs.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)  # order in the ingested file
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(500), default="", index=True)
    brand: Mapped[str] = mapped_column(String(200), default="")
    price: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    image_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))


class ShopVariant(Base):
    __tablename__ = "shop_variants"
    __table_args__ = (
        UniqueConstraint("catalog_id", "variant_id", name="uq_shop_variant"),
        Index("ix_shop_variants_product", "catalog_id", "product_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    catalog_id: Mapped[int] = mapped_column(ForeignKey("shop_catalogs.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[str] = mapped_column(String(200))
    variant_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    price: Mapped[float] = mapped_column(Float)
    stock: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: not tracked (sellable)


class ShopInteraction(Base):
    __tablename__ = "shop_interactions"
    __table_args__ = (Index("ix_shop_interactions_user", "catalog_id", "user_id", "ts"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    catalog_id: Mapped[int] = mapped_column(ForeignKey("shop_catalogs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    item_id: Mapped[str] = mapped_column(String(200))  # a variant id or a product id
    product_id: Mapped[str] = mapped_column(String(200), index=True)  # resolved at ingest
    event: Mapped[str] = mapped_column(String(20))  # view | cart | purchase
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))


SHOP_TABLES = [
    ShopCatalog.__table__,
    ShopProduct.__table__,
    ShopVariant.__table__,
    ShopInteraction.__table__,
]
