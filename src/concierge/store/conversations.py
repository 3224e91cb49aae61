"""Conversation storage: shop chats, the read side of every conversation, and their errors.

Shop conversations are ``Conversation`` rows of kind ``shop``: the chat so far and the assistant's
state live in ``Conversation.state``, so a conversation continues by id from any process. Support
conversations are written by :class:`concierge.support.session.SupportSession`; the operator's
handoff actions live in :mod:`concierge.support.handoffs`. No web framework imports.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, bindparam, func, insert, select, update

from concierge.errors import Conflict, NotFound
from concierge.store.db import session_scope
from concierge.store.tables import Conversation, Message, Tenant, utcnow

_CONV = Conversation.__table__
_MESSAGES = Message.__table__
# A turn's statements, built once (building and cache-keying them per call cost CPU on every turn);
# parameters are named p_* (not a column's name). TENANT_ID_BY_NAME and ADD_MESSAGES serve support
# conversations too (concierge.support.session).
TENANT_ID_BY_NAME = select(Tenant.id).where(Tenant.name == bindparam("p_name"))
_NEW_SHOP = insert(_CONV).values(
    id=bindparam("p_id"), tenant_id=bindparam("p_tenant"), kind="shop", state=bindparam("p_state"),
    status="open", created_at=bindparam("p_now"), updated_at=bindparam("p_now"),
)
_READ_SHOP = select(_CONV.c.kind, _CONV.c.state, _CONV.c.tenant_id).where(_CONV.c.id == bindparam("p_id"))
_LOCK_SHOP = (  # the first write: takes the row's (or SQLite's) write lock, then reads the version
    update(_CONV).where(_CONV.c.id == bindparam("p_id")).values(updated_at=bindparam("p_now"))
    .returning(_CONV.c.state)
)
_SAVE_SHOP = update(_CONV).where(_CONV.c.id == bindparam("p_id")).values(state=bindparam("p_state"))
ADD_MESSAGES = insert(_MESSAGES).values(  # executemany; a None ``data`` is SQL NULL, as the ORM wrote it
    conversation_id=bindparam("p_conv"), role=bindparam("p_role"), content=bindparam("p_content"),
    data=bindparam("p_data", type_=JSON(none_as_null=True)), created_at=bindparam("p_now"),
)


class ConversationNotFound(NotFound, LookupError):
    """No conversation with that id for this tenant (or of that kind)."""

    code = "conversation_not_found"
    param = "conversation_id"


class ConversationBusy(Conflict, RuntimeError):
    """The conversation changed while a turn was being written; send the message again."""

    code = "conversation_busy"
    hint = "send the message again."


class ConversationConflict(ConversationBusy):
    """Another process answered the same conversation at the same time; retry the message."""


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def tenant_id(name: str | None, *, db_url: str | None = None) -> int | None:
    if name is None:
        return None
    with session_scope(db_url) as db:
        return db.scalar(select(Tenant.id).where(Tenant.name == name))


def plain(value: Any) -> Any:
    """A JSON-ready copy of an answer object (dataclass, pydantic model, mapping or list)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return plain(value.model_dump())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------------------------------
# Shop conversations


class ShopConversations:
    """Shop chats persisted as ``Conversation(kind="shop")`` rows."""

    def __init__(self, db_url: str | None = None) -> None:
        self.db_url = db_url

    def start(
        self, tenant: str, catalog: str, shopper_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> str:
        """Open a conversation; ``history``: a stateless client's earlier messages, kept as sent
        (their rows are marked ``{"from_client": true}``)."""
        conversation_id = uuid.uuid4().hex
        earlier = [{"role": m["role"], "content": m["content"]} for m in history or []]
        state = {"catalog": catalog, "shopper_id": shopper_id, "tenant": tenant, "messages": earlier,
                 "assistant_state": None, "version": 0}
        now = utcnow()
        # Core statements, not the ORM's unit of work: a shop turn's storage was a third of its CPU.
        with session_scope(self.db_url) as db:
            conn = db.connection()
            tid = conn.execute(TENANT_ID_BY_NAME, {"p_name": tenant}).scalar()
            conn.execute(_NEW_SHOP, {"p_id": conversation_id, "p_tenant": tid, "p_state": state, "p_now": now})
            if earlier:
                conn.execute(ADD_MESSAGES, [
                    {"p_conv": conversation_id, "p_role": m["role"], "p_content": m["content"],
                     "p_data": {"from_client": True}, "p_now": now} for m in earlier
                ])
        return conversation_id

    def load(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any]:
        """The conversation's state; ConversationNotFound unless it is a shop chat of ``tenant``."""
        with session_scope(self.db_url) as db:
            conn = db.connection()
            row = conn.execute(_READ_SHOP, {"p_id": conversation_id}).first()
            if row is None or row.kind != "shop":
                raise ConversationNotFound(f"no shop conversation {conversation_id}")
            if tenant is not None:
                tid = conn.execute(TENANT_ID_BY_NAME, {"p_name": tenant}).scalar()
                if row.tenant_id != tid:
                    raise ConversationNotFound(f"no shop conversation {conversation_id}")
            return copy.deepcopy(row.state or {})

    def record(
        self, conversation_id: str, version: int, user_text: str, *, message: str, state: Any,
        data: dict[str, Any],
    ) -> None:
        """Append one turn (the shopper's text and the assistant's ``message``) and keep its ``state``.

        ``data`` (the answer's query, products, clarifying flag) is kept with the assistant's message.
        """
        now = utcnow()
        with session_scope(self.db_url) as db:
            conn = db.connection()
            # The write comes first: it takes the row lock (PostgreSQL) or the database's write lock
            # (SQLite) before the version is read, so two turns of one conversation cannot both pass.
            row = conn.execute(_LOCK_SHOP, {"p_id": conversation_id, "p_now": now}).first()
            if row is None:
                raise ConversationNotFound(f"no shop conversation {conversation_id}")
            if int((row.state or {}).get("version", 0)) != version:
                raise ConversationBusy(f"conversation {conversation_id} changed while this turn ran")
            kept = copy.deepcopy(row.state or {})
            kept.setdefault("messages", []).extend(
                [{"role": "user", "content": user_text}, {"role": "assistant", "content": message}]
            )
            kept["assistant_state"] = state
            kept["version"] = version + 1
            conn.execute(ADD_MESSAGES, [
                {"p_conv": conversation_id, "p_role": "user", "p_content": user_text, "p_data": None, "p_now": now},
                {"p_conv": conversation_id, "p_role": "assistant", "p_content": message, "p_data": data, "p_now": now},
            ])
            conn.execute(_SAVE_SHOP, {"p_id": conversation_id, "p_state": kept})


# --------------------------------------------------------------------------------------------------
# Read side for the console and the support page


def list_conversations(limit: int = 50, *, db_url: str | None = None) -> list[dict[str, Any]]:
    """The most recently active conversations, newest first, with their message counts."""
    with session_scope(db_url) as db:
        counts = (
            select(Message.conversation_id, func.count(Message.id).label("n"))
            .group_by(Message.conversation_id)
            .subquery()
        )
        rows = db.execute(
            select(Conversation, Tenant.name, counts.c.n)
            .outerjoin(Tenant, Tenant.id == Conversation.tenant_id)
            .outerjoin(counts, counts.c.conversation_id == Conversation.id)
            .order_by(Conversation.updated_at.desc())
            .limit(limit)
        ).all()
        return [
            {"id": c.id, "kind": c.kind, "status": c.status, "tenant": name,
             "domain": (c.state or {}).get("domain") or (c.state or {}).get("catalog"),
             "messages": int(n or 0), "updated_at": _aware(c.updated_at)}
            for c, name, n in rows
        ]


def conversation(conversation_id: str, *, db_url: str | None = None) -> dict[str, Any]:
    with session_scope(db_url) as db:
        conv = db.get(Conversation, conversation_id)
        if conv is None:
            raise ConversationNotFound(f"no conversation {conversation_id}")
        name = db.scalar(select(Tenant.name).where(Tenant.id == conv.tenant_id)) if conv.tenant_id else None
        return {"id": conv.id, "kind": conv.kind, "status": conv.status, "tenant": name,
                "state": copy.deepcopy(conv.state or {}), "updated_at": _aware(conv.updated_at)}


def messages(conversation_id: str, after_id: int = 0, *, db_url: str | None = None) -> list[dict[str, Any]]:
    """A conversation's messages with id above ``after_id``, oldest first."""
    with session_scope(db_url) as db:
        rows = db.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.id > after_id)
            .order_by(Message.id)
        ).all()
        return [{"id": m.id, "role": m.role, "content": m.content, "data": m.data,
                 "created_at": _aware(m.created_at)} for m in rows]


def last_message_id(conversation_id: str, *, db_url: str | None = None) -> int:
    with session_scope(db_url) as db:
        return int(db.scalar(select(func.max(Message.id)).where(Message.conversation_id == conversation_id)) or 0)
