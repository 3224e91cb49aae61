"""The operator's handoff actions on support conversations (queue, take over, reply, hand back).

They work on the tables the support session writes (``conversations``, ``messages``,
``handoffs``); each bumps the conversation's version so a concurrent agent turn fails its check
instead of overwriting the change. No web framework imports.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select

from concierge.store.conversations import ConversationNotFound, _aware
from concierge.store.db import session_scope
from concierge.store.tables import Conversation, Handoff, Message, Tenant

STAFF_ROLE = "staff"  # messages a person on the company's side wrote from the operator console
HANDOFF_MESSAGE = "I am passing you to a person on our team. They will reply here shortly."
JOINED_MESSAGE = "A person from our team joined the conversation."
LEFT_MESSAGE = "The person from our team left the conversation."
HANDED_BACK_MESSAGE = "You are back with the assistant. How else can I help?"


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
