"""baseline: the schema of the releases before migrations (what create_all made)

Revision ID: 0001
Revises:
Create Date: 2026-12-02

The tables are frozen here as they were, not taken from the models, so later model changes never
change what this revision creates. It also adopts a database made by a release before migrations
(its tables there, no ``alembic_version``): when ``adopt`` is set (concierge.store.migrate does it
for such a database), tables that exist are checked for every column listed here and left as they
are, and only missing tables are created, as create_all did on every start of those releases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from concierge.store.migrate import MigrationError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = sa.MetaData()

sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_tenants_name", "name", unique=True),
)
sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=False),
    sa.Column("key_hash", sa.String(length=64), nullable=False),
    sa.Column("prefix", sa.String(length=16), nullable=False),
    sa.Column("scope", sa.String(length=20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),
    sa.Index("ix_api_keys_tenant_id", "tenant_id"),
)
sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(length=64), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=True),
    sa.Column("kind", sa.String(length=20), nullable=False),
    sa.Column("state", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(length=20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_conversations_tenant_id", "tenant_id"),
)
sa.Table(
    "domain_records",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=True),
    sa.Column("scope", sa.String(length=100), nullable=False),
    sa.Column("domain", sa.String(length=50), nullable=False),
    sa.Column("table_name", sa.String(length=100), nullable=False),
    sa.Column("record_key", sa.String(length=200), nullable=False),
    sa.Column("record", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("scope", "domain", "table_name", "record_key", name="uq_domain_records_key"),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_domain_records_revision", "scope", "domain", "version"),
    sa.Index("ix_domain_records_tenant_id", "tenant_id"),
)
sa.Table(
    "request_log",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=True),
    sa.Column("model", sa.String(length=200), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),
    sa.Column("response", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
)
sa.Table(
    "shop_catalogs",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=100), nullable=False),
    sa.Column("product_count", sa.Integer(), nullable=False),
    sa.Column("variant_count", sa.Integer(), nullable=False),
    sa.Column("source", sa.String(length=500), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_shop_catalog_tenant_name"),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_shop_catalogs_tenant_id", "tenant_id"),
)
sa.Table(
    "tenant_budgets",
    metadata,
    sa.Column("tenant_id", sa.Integer(), nullable=False),
    sa.Column("requests_per_minute", sa.Integer(), nullable=True),
    sa.Column("tokens_per_day", sa.Integer(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("tenant_id"),
)
sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=True),
    sa.Column("model", sa.String(length=200), nullable=False),
    sa.Column("endpoint", sa.String(length=50), nullable=False),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("latency_ms", sa.Double(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_usage_created_at", "created_at"),
    sa.Index("ix_usage_model", "model"),
    sa.Index("ix_usage_tenant_id", "tenant_id"),
)
sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("conversation_id", sa.String(length=64), nullable=False),
    sa.Column("tenant_id", sa.Integer(), nullable=True),
    sa.Column("domain", sa.String(length=50), nullable=False),
    sa.Column("customer_id", sa.String(length=100), nullable=True),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("status", sa.String(length=20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
    sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_handoffs_conversation_id", "conversation_id"),
    sa.Index("ix_handoffs_created_at", "created_at"),
    sa.Index("ix_handoffs_status", "status"),
    sa.Index("ix_handoffs_tenant_id", "tenant_id"),
)
sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("conversation_id", sa.String(length=64), nullable=False),
    sa.Column("role", sa.String(length=20), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("data", sa.JSON(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_messages_conversation_id", "conversation_id"),
)
sa.Table(
    "shop_interactions",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("catalog_id", sa.Integer(), nullable=False),
    sa.Column("user_id", sa.String(length=200), nullable=False),
    sa.Column("item_id", sa.String(length=200), nullable=False),
    sa.Column("product_id", sa.String(length=200), nullable=False),
    sa.Column("event", sa.String(length=20), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["catalog_id"], ["shop_catalogs.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_shop_interactions_catalog_id", "catalog_id"),
    sa.Index("ix_shop_interactions_product_id", "product_id"),
    sa.Index("ix_shop_interactions_user", "catalog_id", "user_id", "ts"),
)
sa.Table(
    "shop_products",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("catalog_id", sa.Integer(), nullable=False),
    sa.Column("product_id", sa.String(length=200), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("title", sa.String(length=500), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("category", sa.String(length=500), nullable=False),
    sa.Column("brand", sa.String(length=200), nullable=False),
    sa.Column("price", sa.Float(), nullable=False),
    sa.Column("currency", sa.String(length=3), nullable=False),
    sa.Column("attributes", sa.JSON(), nullable=False),
    sa.Column("image_url", sa.String(length=1000), nullable=True),
    sa.Column("content_hash", sa.String(length=64), nullable=False),
    sa.UniqueConstraint("catalog_id", "product_id", name="uq_shop_product"),
    sa.ForeignKeyConstraint(["catalog_id"], ["shop_catalogs.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_shop_products_catalog_id", "catalog_id"),
    sa.Index("ix_shop_products_category", "category"),
)
sa.Table(
    "shop_variants",
    metadata,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("catalog_id", sa.Integer(), nullable=False),
    sa.Column("product_id", sa.String(length=200), nullable=False),
    sa.Column("variant_id", sa.String(length=200), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("options", sa.JSON(), nullable=False),
    sa.Column("price", sa.Float(), nullable=False),
    sa.Column("stock", sa.Integer(), nullable=True),
    sa.UniqueConstraint("catalog_id", "variant_id", name="uq_shop_variant"),
    sa.ForeignKeyConstraint(["catalog_id"], ["shop_catalogs.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_shop_variants_catalog_id", "catalog_id"),
    sa.Index("ix_shop_variants_product", "catalog_id", "product_id"),
)


class AdoptError(MigrationError):
    """An existing database's tables do not match the baseline; it is left untouched."""


def check_existing(bind: sa.Connection) -> list[str]:
    """Problems with the baseline tables that already exist in ``bind``'s database (empty: it matches)."""
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    problems = []
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column.name for column in table.columns if column.name not in have]
        if missing:
            problems.append(f"table {table.name} lacks column(s) {', '.join(missing)}")
    return problems


def upgrade() -> None:
    bind = op.get_bind()
    if context.config.attributes.get("adopt"):
        problems = check_existing(bind)
        if problems:
            raise AdoptError(
                "the existing database does not match the baseline schema: " + "; ".join(problems)
            )
        metadata.create_all(bind, checkfirst=True)
    else:
        metadata.create_all(bind, checkfirst=False)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
