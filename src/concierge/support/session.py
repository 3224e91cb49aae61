"""Support sessions: conversations persisted in the database, continued by id.

``SupportSession.start(domain, mode, tenant)`` opens a conversation; ``reply(id, text)`` runs
one turn of the agent (``agent`` or ``guided`` mode) and returns ``{message, actions, status}``.
All state needed to continue (messages, identified customer, pending confirmation, flow
position) lives in ``Conversation.state``, so any process (another gateway replica, or the
same one after a restart) can take the next turn. A handoff to a person is queued in the
``handoffs`` table and the conversation's status becomes ``handoff``.

Domain databases are held in memory per process (one :class:`Domain` per name); writes made
by tools are not persisted across restarts by this module.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from concierge.store.db import session_scope
from concierge.store.tables import Conversation, Handoff, Message, Tenant
from concierge.support.agent import ToolAgent, TurnResult
from concierge.support.guardrails import GuardRules, result_text
from concierge.support.guided import FLOWS_DIR, GuidedAgent, load_flows

MODES = ("agent", "guided")


class ConversationNotFound(LookupError):
    """No support conversation with that id (for this tenant)."""


class ConversationConflict(RuntimeError):
    """Another process answered the same conversation at the same time; retry the message."""


def guard_rules(domain_name: str) -> GuardRules:
    """The domain's guardrails from its flows file (identity and confirmation rules), if it has one."""
    if (FLOWS_DIR / f"{domain_name}.yaml").is_file():
        return load_flows(domain_name).guardrails
    return GuardRules.from_dict(None)


def build_agent(
    domain: Any,
    mode: str,
    hub: Any,
    alias: str | None = "support-agent",
    *,
    tenant: str | None = None,
    max_steps: int = 12,
    use_model: bool = True,
) -> ToolAgent | GuidedAgent:
    """The responder for a mode over ``domain``: ``agent`` (tool calling) or ``guided`` (flows)."""
    if mode == "agent":
        if hub is None or not alias:
            raise ValueError("agent mode needs a model hub and an alias")
        handoff = (
            load_flows(domain.name).message("handoff")
            if (FLOWS_DIR / f"{domain.name}.yaml").is_file()
            else None
        )
        kwargs = {"handoff_message": handoff} if handoff else {}
        return ToolAgent(
            domain, hub, alias, rules=guard_rules(domain.name), max_steps=max_steps, tenant=tenant, **kwargs
        )
    if mode == "guided":
        return GuidedAgent(domain, hub, alias, use_model=use_model, tenant=tenant)
    raise ValueError(f"unknown support mode {mode!r}; use one of: {', '.join(MODES)}")


def default_data_dir() -> Path | None:
    """Where τ² domain data lives (``CONCIERGE_SUPPORT_DATA``; a folder holding ``retail/``, ``airline/``)."""
    value = os.environ.get("CONCIERGE_SUPPORT_DATA")
    return Path(value).expanduser() if value else None


class SupportSession:
    """Support conversations over a model hub, persisted through ``concierge.store``."""

    def __init__(
        self,
        hub: Any,
        *,
        data_dir: str | Path | None = None,
        alias: str = "support-agent",
        db_url: str | None = None,
        default_mode: str = "agent",
        use_model: bool = True,
        domains: dict[str, Any] | None = None,
        max_steps: int = 12,
    ) -> None:
        if default_mode not in MODES:
            raise ValueError(f"unknown support mode {default_mode!r}")
        self.hub = hub
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.alias = alias
        self.db_url = db_url
        self.default_mode = default_mode
        self.use_model = use_model
        self.max_steps = max_steps
        self._domains: dict[str, Any] = dict(domains or {})
        self._lock = threading.Lock()
        self._conversation_locks: dict[str, threading.Lock] = {}

    # -- domains

    def domain(self, name: str) -> Any:
        """The process-wide Domain for ``name`` (loaded on first use)."""
        with self._lock:
            if name not in self._domains:
                from concierge.support.domain import load_domain

                self._domains[name] = load_domain(name, self.data_dir)
            domain = self._domains[name]
            if not isinstance(domain, _SerialDomain):
                domain = self._domains[name] = _SerialDomain(domain)
            return domain

    # -- conversations

    def start(self, domain: str, mode: str | None = None, tenant: int | str | None = None) -> str:
        """Open a conversation; returns its id."""
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"unknown support mode {mode!r}; use one of: {', '.join(MODES)}")
        self.domain(domain)  # fail now, not on the first message, if the domain cannot load
        conversation_id = uuid.uuid4().hex
        with session_scope(self.db_url) as db:
            tenant_id, tenant_name = _tenant(db, tenant)
            state = {
                "domain": domain,
                "mode": mode,
                "tenant": tenant_name,
                "messages": [],
                "guard": {},
                "status": "open",
                "version": 0,
            }
            db.add(
                Conversation(
                    id=conversation_id, tenant_id=tenant_id, kind="support", state=state, status="open"
                )
            )
        return conversation_id

    def _conversation_lock(self, conversation_id: str) -> threading.Lock:
        with self._lock:
            return self._conversation_locks.setdefault(conversation_id, threading.Lock())

    def reply(
        self, conversation_id: str, user_text: str, *, tenant: int | str | None = None
    ) -> dict[str, Any]:
        """Run one turn. Returns ``{conversation_id, message, actions, status}``.

        ``tenant`` (when given) must own the conversation, else ConversationNotFound.
        """
        with self._conversation_lock(conversation_id):
            with session_scope(self.db_url) as db:
                conv = db.get(Conversation, conversation_id)
                if conv is None or conv.kind != "support" or not _owned(db, conv, tenant):
                    raise ConversationNotFound(f"no support conversation {conversation_id}")
                state = copy.deepcopy(conv.state or {})
                status = conv.status
            version = int(state.get("version", 0))
            if status in ("handoff", "human", "closed"):
                # A person owns the case now: keep the message for them, do not run the agent.
                result = TurnResult(
                    "Your conversation has been passed to our team; a person will reply here.", status=status
                )
                self._save(conversation_id, version, state, user_text, result, run_agent=False)
                return {"conversation_id": conversation_id, **result.to_dict()}
            domain = self.domain(state["domain"])
            agent = build_agent(
                domain,
                state.get("mode", self.default_mode),
                self.hub,
                self.alias,
                tenant=state.get("tenant"),
                max_steps=self.max_steps,
                use_model=self.use_model,
            )
            result = agent.respond(state, user_text)
            self._save(conversation_id, version, state, user_text, result, run_agent=True)
            return {"conversation_id": conversation_id, **result.to_dict()}

    def chat(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        domain: str | None = None,
        mode: str | None = None,
        tenant: int | str | None = None,
    ) -> dict[str, Any]:
        """One call for an HTTP route: starts a conversation when no id is given, then replies."""
        if not message or not message.strip():
            raise ValueError("message must not be empty")
        if conversation_id is None:
            if not domain:
                raise ValueError("give a domain to start a conversation")
            conversation_id = self.start(domain, mode, tenant)
        return self.reply(conversation_id, message, tenant=tenant)

    def _save(
        self,
        conversation_id: str,
        version: int,
        state: dict[str, Any],
        user_text: str,
        result: TurnResult,
        *,
        run_agent: bool,
    ) -> None:
        with session_scope(self.db_url) as db:
            conv = db.get(Conversation, conversation_id, with_for_update=True)
            if conv is None:
                raise ConversationNotFound(f"no support conversation {conversation_id}")
            if int((conv.state or {}).get("version", 0)) != version:
                raise ConversationConflict(f"conversation {conversation_id} changed while this turn ran")
            db.add(Message(conversation_id=conversation_id, role="user", content=user_text))
            for action in result.actions:
                db.add(
                    Message(
                        conversation_id=conversation_id,
                        role="tool",
                        content=result_text(action)[:4000],
                        data={k: v for k, v in action.items() if k != "result"},
                    )
                )
            db.add(
                Message(
                    conversation_id=conversation_id,
                    role="assistant",
                    content=result.message,
                    data={"status": result.status, "mode": state.get("mode"), "usage": result.usage}
                    if run_agent
                    else {"status": result.status},
                )
            )
            if not run_agent:
                state.setdefault("messages", []).append({"role": "user", "content": user_text})
            state["version"] = version + 1
            if result.status == "handoff" and conv.status != "handoff":
                handoff = result.handoff or {}
                db.add(
                    Handoff(
                        conversation_id=conversation_id,
                        tenant_id=conv.tenant_id,
                        domain=state["domain"],
                        customer_id=handoff.get("user_id"),
                        summary=str(handoff.get("summary") or ""),
                    )
                )
                conv.status = "handoff"
            state["status"] = conv.status
            conv.state = state  # a new object, so SQLAlchemy sees the JSON change

    # -- read side (operator console, tests)

    def transcript(self, conversation_id: str) -> list[dict[str, Any]]:
        with session_scope(self.db_url) as db:
            rows = db.scalars(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
            ).all()
            return [{"role": m.role, "content": m.content, "data": m.data} for m in rows]

    def state(self, conversation_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as db:
            conv = db.get(Conversation, conversation_id)
            if conv is None:
                raise ConversationNotFound(f"no support conversation {conversation_id}")
            return {**copy.deepcopy(conv.state or {}), "status": conv.status}

    def handoffs(self, status: str | None = "queued", tenant: int | None = None) -> list[dict[str, Any]]:
        with session_scope(self.db_url) as db:
            query = select(Handoff).order_by(Handoff.id)
            if status:
                query = query.where(Handoff.status == status)
            if tenant is not None:
                query = query.where(Handoff.tenant_id == tenant)
            return [
                {
                    "id": h.id,
                    "conversation_id": h.conversation_id,
                    "domain": h.domain,
                    "customer_id": h.customer_id,
                    "summary": h.summary,
                    "status": h.status,
                    "created_at": h.created_at.isoformat() if h.created_at else None,
                }
                for h in db.scalars(query).all()
            ]


class _SerialDomain:
    """A domain shared by concurrent conversations: one tool call at a time.

    Tools mutate plain dicts (and roll back on error); two writes interleaving in threads could
    corrupt that, so calls are serialised. Everything else is delegated unchanged.
    """

    def __init__(self, domain: Any) -> None:
        self._domain = domain
        self._call_lock = threading.Lock()

    def call(self, name: str, arguments: Any = None) -> Any:
        with self._call_lock:
            return self._domain.call(name, arguments)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._domain, attr)


def _tenant(db: Any, tenant: int | str | None) -> tuple[int | None, str | None]:
    if tenant is None:
        return None, None
    if isinstance(tenant, int):
        row = db.get(Tenant, tenant)
        return (row.id, row.name) if row else (None, None)
    row = db.scalars(select(Tenant).where(Tenant.name == tenant)).first()
    return (row.id if row else None), tenant


def _owned(db: Any, conv: Conversation, tenant: int | str | None) -> bool:
    if tenant is None:
        return True
    tenant_id, _ = _tenant(db, tenant)
    return conv.tenant_id == tenant_id
