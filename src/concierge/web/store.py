"""Conversation storage the web pages and the shop/support API routes share (no web framework imports).

Shop conversations are ``Conversation`` rows of kind ``shop``: the chat so far and the assistant's
state live in ``Conversation.state``, so a conversation continues by id from any process. The
operator side (handoff queue, take over, reply as a person, hand back) works on the tables the
support session writes (``conversations``, ``messages``, ``handoffs``).
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from concierge.store.db import session_scope
from concierge.store.tables import Conversation, Handoff, Message, Tenant

STAFF_ROLE = "staff"  # messages a person on the company's side wrote from the operator console
HANDOFF_MESSAGE = "I am passing you to a person on our team. They will reply here shortly."
JOINED_MESSAGE = "A person from our team joined the conversation."
LEFT_MESSAGE = "The person from our team left the conversation."
HANDED_BACK_MESSAGE = "You are back with the assistant. How else can I help?"


class ConversationNotFound(LookupError):
    """No conversation with that id for this tenant (or of that kind)."""


class ConversationBusy(RuntimeError):
    """The conversation changed while a turn was being written; send the message again."""


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

    def start(self, tenant: str, catalog: str, shopper_id: str | None = None) -> str:
        conversation_id = uuid.uuid4().hex
        with session_scope(self.db_url) as db:
            tid = db.scalar(select(Tenant.id).where(Tenant.name == tenant))
            state = {"catalog": catalog, "shopper_id": shopper_id, "tenant": tenant, "messages": [],
                     "assistant_state": None, "version": 0}
            db.add(Conversation(id=conversation_id, tenant_id=tid, kind="shop", state=state, status="open"))
        return conversation_id

    def load(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any]:
        """The conversation's state; ConversationNotFound unless it is a shop chat of ``tenant``."""
        with session_scope(self.db_url) as db:
            conv = db.get(Conversation, conversation_id)
            if conv is None or conv.kind != "shop":
                raise ConversationNotFound(f"no shop conversation {conversation_id}")
            if tenant is not None:
                tid = db.scalar(select(Tenant.id).where(Tenant.name == tenant))
                if conv.tenant_id != tid:
                    raise ConversationNotFound(f"no shop conversation {conversation_id}")
            return copy.deepcopy(conv.state or {})

    def record(self, conversation_id: str, version: int, user_text: str, answer: dict[str, Any]) -> None:
        """Append one turn (the shopper's text and the assistant's answer) and keep its state."""
        with session_scope(self.db_url) as db:
            conv = db.get(Conversation, conversation_id, with_for_update=True)
            if conv is None:
                raise ConversationNotFound(f"no shop conversation {conversation_id}")
            state = copy.deepcopy(conv.state or {})
            if int(state.get("version", 0)) != version:
                raise ConversationBusy(f"conversation {conversation_id} changed while this turn ran")
            message = str(answer.get("message") or "")
            state.setdefault("messages", []).extend(
                [{"role": "user", "content": user_text}, {"role": "assistant", "content": message}]
            )
            state["assistant_state"] = answer.get("state")
            state["version"] = version + 1
            db.add(Message(conversation_id=conversation_id, role="user", content=user_text))
            db.add(Message(conversation_id=conversation_id, role="assistant", content=message,
                           data={k: answer.get(k) for k in ("query", "products", "clarifying")}))
            conv.state = state  # a new object, so SQLAlchemy sees the JSON change


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


def handoff_queue(*, db_url: str | None = None) -> list[dict[str, Any]]:
    """Handoffs waiting for a person or being handled by one, oldest first."""
    with session_scope(db_url) as db:
        rows = db.execute(
            select(Handoff, Tenant.name)
            .outerjoin(Tenant, Tenant.id == Handoff.tenant_id)
            .where(Handoff.status.in_(("queued", "taken")))
            .order_by(Handoff.id)
        ).all()
        return [{"id": h.id, "conversation_id": h.conversation_id, "tenant": name, "domain": h.domain,
                 "customer_id": h.customer_id, "summary": h.summary, "status": h.status,
                 "created_at": _aware(h.created_at)} for h, name in rows]


# --------------------------------------------------------------------------------------------------
# Handoff actions


def _support_conversation(db: Any, conversation_id: str, tenant: str | None) -> Conversation:
    conv = db.get(Conversation, conversation_id, with_for_update=True)
    if conv is None or conv.kind != "support":
        raise ConversationNotFound(f"no support conversation {conversation_id}")
    if tenant is not None:
        tid = db.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if conv.tenant_id != tid:
            raise ConversationNotFound(f"no support conversation {conversation_id}")
    return conv


def _bump(conv: Conversation, status: str, extra_message: dict[str, str] | None = None) -> None:
    # The version bump makes a concurrent agent turn fail its check instead of overwriting this change.
    state = copy.deepcopy(conv.state or {})
    state["version"] = int(state.get("version", 0)) + 1
    state["status"] = status
    if extra_message is not None:
        state.setdefault("messages", []).append(extra_message)
    conv.status = status
    conv.state = state


def request_handoff(conversation_id: str, summary: str, tenant: str | None = None, *,
                    db_url: str | None = None) -> bool:
    """Queue a support conversation for a person (the customer's "talk to a person" button).

    Returns False when it is already with a person (queued or taken): nothing is queued twice.
    """
    with session_scope(db_url) as db:
        conv = _support_conversation(db, conversation_id, tenant)
        if conv.status in ("handoff", "human"):
            return False
        state = conv.state or {}
        db.add(Handoff(conversation_id=conv.id, tenant_id=conv.tenant_id, domain=str(state.get("domain") or ""),
                       customer_id=(state.get("guard") or {}).get("user_id"), summary=summary[:2000]))
        db.add(Message(conversation_id=conv.id, role="assistant", content=HANDOFF_MESSAGE,
                       data={"status": "handoff"}))
        _bump(conv, "handoff", {"role": "assistant", "content": HANDOFF_MESSAGE})
        return True


def _open_handoff(db: Any, conversation_id: str) -> Handoff | None:
    return db.scalars(
        select(Handoff)
        .where(Handoff.conversation_id == conversation_id, Handoff.status.in_(("queued", "taken")))
        .order_by(Handoff.id.desc())
    ).first()


def take_over(conversation_id: str, operator: str, *, db_url: str | None = None) -> None:
    """A person takes the case: the agent stays out until it is handed back."""
    with session_scope(db_url) as db:
        conv = _support_conversation(db, conversation_id, None)
        handoff = _open_handoff(db, conversation_id)
        if handoff is None:  # taking over a conversation nobody queued is allowed too
            state = conv.state or {}
            handoff = Handoff(conversation_id=conv.id, tenant_id=conv.tenant_id,
                              domain=str(state.get("domain") or ""), summary=f"Taken over by {operator}")
            db.add(handoff)
        handoff.status = "taken"
        db.add(Message(conversation_id=conv.id, role="system", content=JOINED_MESSAGE,
                       data={"event": "take_over", "operator": operator}))
        _bump(conv, "human")


def staff_reply(conversation_id: str, text: str, operator: str, *, db_url: str | None = None) -> None:
    """A person's reply: shown to the customer, and part of the history when the agent resumes."""
    text = text.strip()
    if not text:
        raise ValueError("the reply is empty")
    with session_scope(db_url) as db:
        conv = _support_conversation(db, conversation_id, None)
        if conv.status != "human":
            raise ValueError("take the conversation over before replying")
        db.add(Message(conversation_id=conv.id, role=STAFF_ROLE, content=text, data={"operator": operator}))
        _bump(conv, "human", {"role": "assistant", "content": text})


def hand_back(conversation_id: str, operator: str, *, db_url: str | None = None) -> None:
    """Close the handoff and let the agent answer the next message again."""
    with session_scope(db_url) as db:
        conv = _support_conversation(db, conversation_id, None)
        handoff = _open_handoff(db, conversation_id)
        if handoff is not None:
            handoff.status = "closed"
        db.add(Message(conversation_id=conv.id, role="system", content=LEFT_MESSAGE,
                       data={"event": "hand_back", "operator": operator}))
        db.add(Message(conversation_id=conv.id, role="assistant", content=HANDED_BACK_MESSAGE,
                       data={"status": "open"}))
        # Forget the agent's transfer flag so its guardrails do not treat the case as still transferred.
        state = copy.deepcopy(conv.state or {})
        if isinstance(state.get("guard"), dict):
            state["guard"]["handoff"] = None
        conv.state = state
        _bump(conv, "open", {"role": "assistant", "content": HANDED_BACK_MESSAGE})
