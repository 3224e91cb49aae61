"""The core persistent tables (tenants, keys, usage, conversations, support state).

Capabilities declare theirs in their own modules on the same :class:`~concierge.store.base.Base`
(listed in :data:`concierge.store.base.TABLE_MODULES`); this module imports none of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from concierge.store.base import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    # Only a hash is stored; the prefix lets people tell keys apart in listings.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(20), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UsageRecord(Base):
    __tablename__ = "usage"
    __table_args__ = (Index("ux_usage_uid", "uid", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    # Given when the call is metered: a row replayed from the outbox after a crash or an outage
    # is written once (NULL for rows from before revision 0004).
    uid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    endpoint: Mapped[str] = mapped_column(String(50))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    status: Mapped[int] = mapped_column(Integer, default=200)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RequestLog(Base):
    """Opt-in request log; text is redacted (emails, phones, cards) before it is written."""

    __tablename__ = "request_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(20))  # "shop" | "support"
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | handoff | human | closed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Handoff(Base):
    """A support conversation waiting for a person: the agent's summary of the case."""

    __tablename__ = "handoffs"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=True)
    domain: Mapped[str] = mapped_column(String(50))
    customer_id: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the domain's user id, if known
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)  # queued | taken | closed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class TenantBudget(Base):
    """Per-tenant limits the gateway enforces (NULL: no limit). One row per tenant."""

    __tablename__ = "tenant_budgets"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TenantCounter(Base):
    """A tenant's use in one window, shared by every gateway replica (``concierge.gateway.limits``).

    ``bucket`` names the counter and its window: ``rpm:YYYY-MM-DDTHH:MM`` (requests admitted in
    that UTC minute) or ``tpd:YYYY-MM-DD`` (tokens reserved or used that UTC day). Replicas change
    ``used`` only by conditional increments (``used = used + n WHERE used < limit``), so the check
    and the count are one atomic statement. ``expires_at`` (epoch seconds) lets old rows be deleted.
    """

    __tablename__ = "tenant_counters"
    tenant: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class DomainRecord(Base):
    """A support domain's record as live conversations left it: the per-tenant overlay on its source data.

    Only records that differ from the source (``db.json`` or the generated demo db) are stored;
    ``record`` is NULL for a deleted one. ``version`` is the revision of the (scope, domain) that
    last wrote the row. The row with empty ``table_name`` and ``record_key`` is the head: it holds
    the latest revision, and updating it first serialises writers across gateway replicas.
    ``scope`` is the tenant's name ('' for none) rather than ``tenant_id`` alone, because unique
    constraints treat NULLs as distinct and a conversation's tenant may have no ``tenants`` row.
    """

    __tablename__ = "domain_records"
    __table_args__ = (
        UniqueConstraint("scope", "domain", "table_name", "record_key", name="uq_domain_records_key"),
        Index("ix_domain_records_revision", "scope", "domain", "version"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True, nullable=True)
    scope: Mapped[str] = mapped_column(String(100), default="")
    domain: Mapped[str] = mapped_column(String(50))
    table_name: Mapped[str] = mapped_column(String(100))
    record_key: Mapped[str] = mapped_column(String(200))
    record: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class StoredResponse(Base):
    """A stored Responses API answer (``store: true``), kept per tenant for ``previous_response_id``."""

    __tablename__ = "gateway_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    # The conversation up to and with this response, as chat messages (instructions excluded:
    # OpenAI does not carry them over to a follow-up).
    history: Mapped[list[Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


class ExternalWrite(Base):
    """One write a support tool made to a company's own system (an OpenAPI service, an MCP server).

    The row is written BEFORE the call (``status`` ``pending``) and finished after it (``ok``,
    ``error``: the system refused or failed; ``unknown``: no answer, it may or may not have applied),
    each in its own transaction, so a crash mid-call leaves a ``pending`` row, never no trace.
    ``idempotency_key`` is what the call carried (``Idempotency-Key`` header, MCP ``_meta``): a retry
    of the same confirmed write sends the same key, so the system applies it once (see
    :mod:`concierge.support.connectors.audit` for how it is derived).
    """

    __tablename__ = "external_writes"
    __table_args__ = (Index("ix_external_writes_conversation", "conversation_id", "tool"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), default="", index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The conversation's saved version the turn started from: a row whose turn was never saved (a
    # crash) has the same number as the retry of that turn, which is how the retry reuses its key.
    turn: Mapped[int | None] = mapped_column(Integer, nullable=True)
    domain: Mapped[str] = mapped_column(String(50))
    tool: Mapped[str] = mapped_column(String(100))
    connector: Mapped[str] = mapped_column(String(100), default="")
    arguments: Mapped[Any] = mapped_column(JSON)
    arguments_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80), index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    result: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
