"""Support sessions: conversations persisted in the database, continued by id.

``SupportSession.start(domain, mode, tenant)`` opens a conversation; ``reply(id, text)`` runs
one turn of the agent (``agent`` or ``guided`` mode) and returns ``{message, actions, status}``.
All state needed to continue (messages, identified customer, pending confirmation, flow
position) lives in ``Conversation.state``, so any process (another gateway replica, or the
same one after a restart) can take the next turn. A handoff to a person is queued in the
``handoffs`` table and the conversation's status becomes ``handoff``.

Domain writes are persisted too. Each tenant has its own copy of a domain: the source data
(``db.json``, or the generated demo db) plus an overlay of the records live conversations changed,
stored in ``domain_records`` (one row per changed record). A turn runs on a private fork of the
tenant's copy; the records it changed (the fork's diff) are written in the SAME transaction as the
turn's messages and conversation state, so after a crash either both the reply and the write
exist or neither does. Only once that transaction commits are the changes applied to the
in-memory copy; a failed transaction drops the fork, so memory never runs ahead of the database.

Several processes (gateway replicas) share the database. At the start of each turn a process
loads the overlay rows written since the revision it holds (one indexed query that returns nothing
when nothing changed), so a turn never starts from stale data. Writers bump the (tenant, domain)
head row first, which serialises them across processes; a turn whose changed records were written
by someone else while it ran fails with :class:`DomainConflict` (HTTP 409: send the message
again) instead of overwriting them. The τ² evaluator (``evals``, ``replay``) uses domains directly
and persists nothing. A domain object passed in ``domains=`` serves as the no-tenant copy itself.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from concierge.errors import ConciergeError
from concierge.models.engine import ChatHub
from concierge.store.conversations import (
    ADD_MESSAGES,
    TENANT_ID_BY_NAME,
    ConversationConflict,
    ConversationNotFound,
)
from concierge.store.conversations import plain as _plain
from concierge.store.db import session_scope
from concierge.store.tables import Conversation, DomainRecord, Handoff, Message, Tenant, utcnow
from concierge.support.agent import ToolAgent, TurnResult
from concierge.support.connectors import CallContext
from concierge.support.domains import flows_path, load_domain
from concierge.support.guardrails import GuardRules, result_text
from concierge.support.guided import GuidedAgent, load_flows
from concierge.support.toolkit import DbSource

_CONV = Conversation.__table__
# A turn's statements, built once: building and keying a statement for SQLAlchemy's compiled cache
# on every call was about a tenth of a turn's CPU. Parameters are named p_* (not a column's name).
_READ_CONV = (
    select(_CONV.c.kind, _CONV.c.state, _CONV.c.status, _CONV.c.tenant_id, Tenant.name)
    .outerjoin(Tenant, Tenant.id == _CONV.c.tenant_id)
    .where(_CONV.c.id == bindparam("p_id"))
)
_NEW_CONV = insert(_CONV).values(
    id=bindparam("p_id"), tenant_id=bindparam("p_tenant"), kind="support", state=bindparam("p_state"),
    status="open", created_at=bindparam("p_now"), updated_at=bindparam("p_now"),
)
_LOCK_CONV = (  # the first write of a save: takes the row's (or SQLite's) write lock, reads the version
    update(_CONV).where(_CONV.c.id == bindparam("p_id")).values(updated_at=bindparam("p_now"))
    .returning(_CONV.c.state, _CONV.c.status, _CONV.c.tenant_id)
)
_SAVE_CONV = update(_CONV).where(_CONV.c.id == bindparam("p_id")).values(
    state=bindparam("p_state"), status=bindparam("p_status")
)
_CHANGED_ROWS = select(
    DomainRecord.table_name, DomainRecord.record_key, DomainRecord.record, DomainRecord.version
).where(
    DomainRecord.scope == bindparam("p_scope"), DomainRecord.domain == bindparam("p_domain"),
    DomainRecord.version > bindparam("p_since"),
)
_TENANT_NAME = select(Tenant.name).where(Tenant.id == bindparam("p_id"))

log = logging.getLogger(__name__)

MODES = ("agent", "guided")

__all__ = [
    "MODES",
    "ConversationConflict",
    "ConversationNotFound",
    "DomainConflict",
    "DomainNotFound",
    "DomainUnavailable",
    "SupportSession",
    "SupportTurn",
    "awaiting_confirmation",
    "build_agent",
    "guard_rules",
    "reset_domain_writes",
]


class DomainUnavailable(ConciergeError, FileNotFoundError):
    """A τ² domain whose data folder was not configured (``CONCIERGE_SUPPORT_DATA``)."""

    param = "domain"
    code = "domain_unavailable"


class DomainNotFound(ConciergeError, ValueError):
    param = "domain"
    code = "domain_not_found"


class DomainConflict(ConversationConflict):
    """Another conversation changed the same records while this turn ran; nothing was saved, retry."""


def guard_rules(domain_name: str) -> GuardRules:
    """The domain's guardrails from its flows file (identity and confirmation rules), if it has one."""
    if flows_path(domain_name).is_file():
        return load_flows(domain_name).guardrails
    return GuardRules.from_dict(None)


def build_agent(
    domain: Any,
    mode: str,
    hub: ChatHub,
    alias: str | None = "support-agent",
    *,
    tenant: str | None = None,
    max_steps: int = 12,
    use_model: bool = True,
    actions: str | None = None,
    lead: str | None = None,
) -> ToolAgent | GuidedAgent:
    """The responder for a mode over ``domain``: ``agent`` (tool calling) or ``guided`` (flows).

    ``actions`` (agent mode: ``tools`` | ``constrained``) and ``lead`` (guided mode: ``rules`` |
    ``model``) override the alias's deployment options."""
    if mode == "agent":
        if hub is None or not alias:
            raise ValueError("agent mode needs a model hub and an alias")
        handoff = (
            load_flows(domain.name).message("handoff")
            if flows_path(domain.name).is_file()
            else None
        )
        kwargs = {"handoff_message": handoff} if handoff else {}
        return ToolAgent(
            domain,
            hub,
            alias,
            rules=guard_rules(domain.name),
            max_steps=max_steps,
            tenant=tenant,
            actions=actions,
            **kwargs,
        )
    if mode == "guided":
        return GuidedAgent(domain, hub, alias, use_model=use_model, tenant=tenant, lead=lead)
    raise ValueError(f"unknown support mode {mode!r}; use one of: {', '.join(MODES)}")


def default_data_dir() -> Path | None:
    """Where τ² domain data lives (``CONCIERGE_SUPPORT_DATA``; a folder holding ``retail/``, ``airline/``)."""
    value = os.environ.get("CONCIERGE_SUPPORT_DATA")
    return Path(value).expanduser() if value else None


@dataclass
class _Live:
    """One tenant's copy of a domain: source data plus the stored overlay up to revision ``rev``.

    ``domain.db`` only changes under ``lock``, and only by replacing records (never mutating one in
    place), so a fork taken under the lock stays a consistent snapshot while the copy moves on.
    """

    domain: Any
    rev: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Writes:
    """What one turn changed in its domain, to store with the turn's messages."""

    domain: str
    scope: str
    tenant_id: int | None
    base_rev: int  # the revision the turn's fork was taken at
    changes: dict[str, dict[str, Any]]  # Domain.diff() shape: {table: {key: record or None}}


class SupportSession:
    """Support conversations over a model hub, persisted through ``concierge.store``."""

    def __init__(
        self,
        hub: ChatHub,
        *,
        data_dir: str | Path | None = None,
        alias: str = "support-agent",
        db_url: str | None = None,
        default_mode: str = "agent",
        default_domain: str = "homestay",
        use_model: bool = True,
        domains: dict[str, Any] | None = None,
        max_steps: int = 12,
        tenant_domains: dict[str, str] | None = None,
    ) -> None:
        if default_mode not in MODES:
            raise ValueError(f"unknown support mode {default_mode!r}")
        self.hub = hub
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.alias = alias
        self.db_url = db_url
        self.default_mode = default_mode
        self.default_domain = default_domain
        self.use_model = use_model
        self.max_steps = max_steps
        # tenant name -> the domain a new conversation of that tenant opens on (deployment config
        # ``support: tenants:``); a request naming a domain still gets that one
        self.tenant_domains: dict[str, str] = dict(tenant_domains or {})
        # Given or loaded domains; each one is also the no-tenant copy (so a caller's object sees writes).
        self._domains: dict[str, Any] = dict(domains or {})
        self._bases: dict[str, Any] = {}  # domain -> DbSource that tenants' copies start from
        self._live: dict[tuple[str, str], _Live] = {}  # (scope, domain) -> that tenant's copy
        self._lock = threading.Lock()
        self._conversation_locks: dict[str, threading.Lock] = {}

    # -- domains

    def domain_for(self, tenant: int | str | None) -> str:
        """The domain a new conversation of ``tenant`` opens on when the request names none."""
        if isinstance(tenant, str) and tenant in self.tenant_domains:
            return self.tenant_domains[tenant]
        return self.default_domain

    def _template(self, name: str) -> Any:
        with self._lock:
            if name not in self._domains:
                try:
                    self._domains[name] = load_domain(name, self.data_dir)
                except FileNotFoundError as exc:
                    if isinstance(exc, DomainUnavailable):
                        raise
                    if "domain folder" in str(exc):  # an outside domain: its system unreachable or its files broken
                        log.warning("support domain %s cannot load: %s", name, exc)
                        raise DomainUnavailable(
                            "That support domain cannot reach its systems right now (the server log says why)."
                        ) from exc
                    raise DomainUnavailable("That support domain has no data on this server.") from exc
            return self._domains[name]

    def _copy_for(self, name: str, scope: str) -> _Live:
        template = self._template(name)
        with self._lock:
            live = self._live.get((scope, name))
            if live is None:
                base = self._bases.get(name)
                if base is None:
                    base = self._bases[name] = _base_source(template)
                domain = template if scope == "" else dataclasses.replace(
                    template, db=base.fresh(), source=base, _initial=None
                )
                live = self._live[(scope, name)] = _Live(domain)
            return live

    def domain(self, name: str, tenant: int | str | None = None) -> Any:
        """The tenant's copy of domain ``name`` (loaded on first use), with every stored write applied.

        Read it freely; change it only through conversations (a direct change would not be stored).
        """
        if isinstance(tenant, int):
            with session_scope(self.db_url) as db:
                tenant = _tenant(db, tenant)[1]
        scope = tenant or ""
        live = self._copy_for(name, scope)
        rows = self._changed_rows(live, name, scope)
        with live.lock:
            self._sync(live, rows)
        return live.domain

    def _changed_rows(self, live: _Live, name: str, scope: str) -> Sequence[Any]:
        """The overlay rows written since ``live.rev``, read WITHOUT the copy's lock.

        The database round trip stays outside ``live.lock`` so that a tenant's turns do not take
        their forks one at a time behind it; ``_sync`` then applies, under the lock, only the rows
        still newer than the copy (another turn may have brought some of them meanwhile).
        """
        since = live.rev
        with session_scope(self.db_url) as db:
            return db.connection().execute(
                _CHANGED_ROWS, {"p_scope": scope, "p_domain": name, "p_since": since}
            ).all()

    @staticmethod
    def _sync(live: _Live, rows: Sequence[Any]) -> None:
        """Apply those of ``rows`` newer than ``live.rev`` (call with ``live.lock`` held)."""
        changes: dict[str, dict[str, Any]] = {}
        top = live.rev
        for table, key, record, version in sorted(rows, key=lambda row: int(row[3])):
            if int(version) <= live.rev:
                continue
            top = max(top, int(version))
            if table:  # the head row ('' / '') only carries the revision
                changes.setdefault(table, {})[key] = record
        _apply(live.domain.db, changes)
        live.rev = top

    def _fork(self, name: str, scope: str) -> tuple[Any, _Live, int]:
        """A private copy of the tenant's domain, fresh from the database, for one turn."""
        live = self._copy_for(name, scope)
        rows = self._changed_rows(live, name, scope)
        with live.lock:
            self._sync(live, rows)
            snapshot = _Snapshot(live.domain.db, getattr(live.domain.source, "label", name))
            fork = dataclasses.replace(live.domain, db=snapshot.fresh(), source=snapshot, _initial=None)
            return fork, live, live.rev

    # -- conversations

    def start(self, domain: str, mode: str | None = None, tenant: int | str | None = None) -> str:
        """Open a conversation; returns its id."""
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"unknown support mode {mode!r}; use one of: {', '.join(MODES)}")
        self._template(domain)  # fail now, not on the first message, if the domain cannot load
        conversation_id = uuid.uuid4().hex
        with session_scope(self.db_url) as db:
            tenant_id, tenant_name = _tenant(db, tenant)
            state = _new_state(domain, mode, tenant_name)
            db.connection().execute(
                _NEW_CONV, {"p_id": conversation_id, "p_tenant": tenant_id, "p_state": state, "p_now": utcnow()}
            )
        return conversation_id

    def _conversation_lock(self, conversation_id: str) -> threading.Lock:
        with self._lock:
            return self._conversation_locks.setdefault(conversation_id, threading.Lock())

    def reply(
        self, conversation_id: str, user_text: str, *, tenant: int | str | None = None
    ) -> dict[str, Any]:
        """Run one turn. Returns ``{conversation_id, message, actions, status}``.

        ``tenant`` (when given) must own the conversation, else ConversationNotFound. Raises
        ConversationConflict (or DomainConflict) when another process got there first; then
        nothing of this turn was saved, in the database or in memory.
        """
        return self._reply(conversation_id, user_text, tenant)[0]

    def _reply(
        self, conversation_id: str, user_text: str, tenant: int | str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The turn's answer and the conversation state it saved."""
        with self._conversation_lock(conversation_id):
            with session_scope(self.db_url) as db:
                # Core, not the ORM: this read and _save's statements were a third of a turn's CPU.
                row = db.connection().execute(_READ_CONV, {"p_id": conversation_id}).first()
                if row is None or row.kind != "support" or not _owned(db, row.tenant_id, row.name, tenant):
                    raise ConversationNotFound(f"no support conversation {conversation_id}")
                state = copy.deepcopy(row.state or {})
                status = row.status
                tenant_id = row.tenant_id
            version = int(state.get("version", 0))
            if status in ("handoff", "human", "closed"):
                # A person owns the case now: keep the message for them, do not run the agent.
                result = TurnResult(
                    "Your conversation has been passed to our team; a person will reply here.", status=status
                )
                self._save(conversation_id, version, state, user_text, result, run_agent=False)
                return {"conversation_id": conversation_id, **result.to_dict()}, state
            result = self._run(conversation_id, version, state, tenant_id, user_text)
            return {"conversation_id": conversation_id, **result.to_dict()}, state

    def _agent(self, fork: Any, state: dict[str, Any]) -> ToolAgent | GuidedAgent:
        return build_agent(
            fork,
            state.get("mode", self.default_mode),
            self.hub,
            self.alias,
            tenant=state.get("tenant"),
            max_steps=self.max_steps,
            use_model=self.use_model,
        )

    def _run(
        self, conversation_id: str, version: int, state: dict[str, Any], tenant_id: int | None, user_text: str,
        *, shown: str | None | bool = False,
    ) -> TurnResult:
        """Run the agent on a fresh fork of the tenant's domain and store the turn with its writes.

        ``shown`` (stateless clients): the agent's last message as the client showed it (None: the
        client showed none); False: the server holds the conversation, nothing to compare.
        """
        name, scope = state["domain"], str(state.get("tenant") or "")
        fork, live, base_rev = self._fork(name, scope)
        bind = getattr(fork, "bind", None)
        if callable(bind):  # a domain whose tools write to a company's system: audit and idempotency keys
            bind(CallContext(tenant=scope, conversation_id=conversation_id, db_url=self.db_url, turn=version))
        agent = self._agent(fork, state)
        result = agent.respond(state, user_text) if shown is False else _client_step(agent, state, user_text, shown)
        changes = fork.diff()
        writes = _Writes(name, scope, tenant_id, base_rev, changes) if changes else None
        revision = self._save(conversation_id, version, state, user_text, result, run_agent=True, writes=writes)
        if writes is not None and revision is not None:
            with live.lock:
                # Skip when a sync already went past this revision: it brought these records
                # (or newer ones) from the database.
                if revision > live.rev:
                    _apply(live.domain.db, changes)
                    if revision == live.rev + 1:
                        live.rev = revision
        return result

    def turn_messages(
        self,
        messages: list[dict[str, str]],
        *,
        domain: str | None = None,
        mode: str | None = None,
        tenant: int | str | None = None,
    ) -> SupportTurn:
        """One turn for a stateless client that sends the whole conversation (``[{role, content}]``,
        ``user`` and ``assistant`` only, ending with the customer's message).

        The client's assistant messages are never trusted as the agent's own. The agent's state
        (identified customer, pending proposal, flow position) is re-derived here: the earlier
        customer messages are run through the agent again on a throwaway copy of the domain, with
        every write tool refused by the guard (what happened in earlier requests is in the database
        already, and a tool that writes to a company's own system must not be called twice). Then
        the last message runs on a fresh copy, and only its writes are stored. A "yes" can confirm
        only a proposal the agent itself made in this re-derivation, and only when the client showed
        the customer that same proposal (the assistant message just before the yes, compared with
        whitespace collapsed): otherwise the yes is not acted on and the agent shows its own
        proposal again, with ``confirm`` true. A forged assistant turn thus cannot cause a write.

        Each request costs one agent turn per customer message in it; the turn is stored as a new
        conversation (the client's messages kept as sent, marked ``from_client``) whose id is
        returned, so the client may continue by ``conversation_id`` instead.
        """
        convo = _client_conversation(messages)
        final = convo[-1]["content"]
        self.check(final, domain=domain)
        domain = domain or self.default_domain
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"unknown support mode {mode!r}; use one of: {', '.join(MODES)}")
        self._template(domain)
        with session_scope(self.db_url) as db:
            tenant_id, tenant_name = _tenant(db, tenant)
        state = _new_state(domain, mode, tenant_name)
        replay, _, _ = self._fork(domain, tenant_name or "")
        agent = self._agent(replay, state)
        state["guard"]["replaying"] = True  # the guard refuses every write tool while replaying
        shown: str | None = None
        handoff: dict[str, Any] | None = None
        for m in convo[:-1]:
            if m["role"] == "assistant":
                shown = m["content"]
                continue
            step = _client_step(agent, state, m["content"], shown)
            shown = None
            if step.status != "open":
                state["status"], handoff = step.status, step.handoff
                break  # handed off: a person owns the case from there on
        state["guard"].pop("replaying", None)
        conversation_id = self._open_client(state, tenant_id, convo[:-1])
        if state.get("status") not in (None, "open"):
            # Queued for a person on this (new) conversation, with the customer's messages.
            result = TurnResult(
                "Your conversation has been passed to our team; a person will reply here.", status=state["status"],
                handoff=handoff,
            )
            self._save(conversation_id, 0, state, final, result, run_agent=False)
        else:
            result = self._run(conversation_id, 0, state, tenant_id, final, shown=shown)
        return SupportTurn(
            conversation_id=conversation_id,
            message=result.message,
            actions=list(result.actions),
            status=str(result.status or "open"),
            confirm=awaiting_confirmation(state, result.message),
        )

    def _open_client(self, state: dict[str, Any], tenant_id: int | None, history: list[dict[str, str]]) -> str:
        """Store a stateless client's conversation: the re-derived state and the messages as sent."""
        conversation_id = uuid.uuid4().hex
        with session_scope(self.db_url) as db:
            db.add(Conversation(id=conversation_id, tenant_id=tenant_id, kind="support",
                                state=copy.deepcopy(state), status="open"))
            for m in history:
                db.add(Message(conversation_id=conversation_id, role=m["role"], content=m["content"],
                               data={"from_client": True}))
        return conversation_id

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

    @staticmethod
    def check(message: str, *, conversation_id: str | None = None, domain: str | None = None) -> None:
        """The request checks of :meth:`turn` (no database, no model): call before queueing for the model."""
        if not message or not message.strip():
            raise ConciergeError("message: must not be blank", param="message")
        # NUL cannot be stored (PostgreSQL refuses it in text and JSON): a 400, not a 500 at the insert.
        for param, value in (("message", message), ("conversation_id", conversation_id)):
            if value and "\x00" in value:
                raise ConciergeError(f"{param}: must not contain NUL (\\u0000) characters", param=param)
        if conversation_id is None and domain is not None:
            from concierge.support.domains import domain_names

            if domain not in domain_names():
                raise DomainNotFound(f"unknown domain {domain!r}; known: {', '.join(domain_names())}")

    def turn(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        domain: str | None = None,
        mode: str | None = None,
        tenant: int | str | None = None,
    ) -> SupportTurn:
        """One customer message, for the API and the web page: a new conversation (on this desk's
        default domain and mode unless given) or the next turn of one; says whether the agent now
        waits for a yes/no.

        Raises DomainNotFound for an unknown domain (when opening), ConversationNotFound for an id
        this tenant does not own, ValueError for an empty message or an unknown mode.
        """
        self.check(message, conversation_id=conversation_id, domain=domain)
        if conversation_id is None:
            domain = domain or self.domain_for(tenant)
            conversation_id = self.start(domain, mode, tenant)
        result, state = self._reply(conversation_id, message, tenant)
        text = str(result.get("message") or "")
        return SupportTurn(
            conversation_id=conversation_id,
            message=text,
            actions=list(result.get("actions") or []),
            status=str(result.get("status") or "open"),
            confirm=awaiting_confirmation(state, text),  # from the state this turn saved: no second read
        )

    def _save(
        self,
        conversation_id: str,
        version: int,
        state: dict[str, Any],
        user_text: str,
        result: TurnResult,
        *,
        run_agent: bool,
        writes: _Writes | None = None,
    ) -> int | None:
        """Store the turn (and its domain writes) in one transaction; returns the domain revision written."""
        with session_scope(self.db_url) as db:
            conn = db.connection()
            # Writing first takes the conversation's row lock (Postgres) or the database write lock
            # (SQLite: its implicit transaction starts at the first write), so the version check below
            # cannot interleave with another process's save; RETURNING reads the row under that lock.
            conv = conn.execute(_LOCK_CONV, {"p_id": conversation_id, "p_now": utcnow()}).first()
            if conv is None:
                raise ConversationNotFound(f"no support conversation {conversation_id}")
            if int((conv.state or {}).get("version", 0)) != version:
                raise ConversationConflict(f"conversation {conversation_id} changed while this turn ran")
            revision = _store_writes(db, writes) if writes is not None else None
            messages: list[dict[str, Any]] = [{"role": "user", "content": user_text, "data": None}]
            messages += [
                {"role": "tool", "content": result_text(action)[:4000],
                 "data": {k: v for k, v in action.items() if k != "result"}}
                for action in result.actions
            ]
            messages.append({
                "role": "assistant",
                "content": result.message,
                "data": {"status": result.status, "mode": state.get("mode"), "usage": result.usage}
                if run_agent
                else {"status": result.status},
            })
            now = utcnow()
            conn.execute(  # in order: message ids keep the turn's order
                ADD_MESSAGES,
                [{"p_conv": conversation_id, "p_now": now, "p_role": m["role"], "p_content": m["content"],
                  "p_data": m["data"]} for m in messages],
            )
            if not run_agent:
                state.setdefault("messages", []).append({"role": "user", "content": user_text})
            state["version"] = version + 1
            status = conv.status
            if result.status == "handoff" and status != "handoff":
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
                status = "handoff"
            state["status"] = status
            conn.execute(_SAVE_CONV, {"p_id": conversation_id, "p_state": state, "p_status": status})
        return revision


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


@dataclass
class SupportTurn:
    """One answered customer message: what the API returns and the web page shows."""

    conversation_id: str
    message: str
    actions: list[dict[str, Any]]
    status: str  # open | handoff (queued for a person) | human | closed
    confirm: bool  # the agent waits for a yes/no before changing a booking

    def to_dict(self) -> dict[str, Any]:
        return _plain({"conversation_id": self.conversation_id, "message": self.message, "actions": self.actions,
                       "status": self.status, "confirm": self.confirm})


def awaiting_confirmation(state: dict[str, Any], message: str) -> bool:
    """Whether the agent's last turn asks the customer to approve a change (the page shows Yes / No).

    Guided mode says so exactly (its flow waits on a ``confirm`` step); in agent mode the model's
    wording is all there is, read with the same cue the guardrails use.
    """
    if state.get("status") not in (None, "open"):
        return False
    if state.get("mode") == "guided":
        active = (state.get("flow") or {}).get("active") or {}
        return active.get("awaiting") == "confirm"
    from concierge.support.guardrails import asks_confirmation

    return asks_confirmation(message)


def _new_state(domain: str, mode: str, tenant: str | None) -> dict[str, Any]:
    return {"domain": domain, "mode": mode, "tenant": tenant, "messages": [], "guard": {}, "status": "open",
            "version": 0}


REASK = "Before I change anything, please confirm this with a yes or a no:"


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _last_agent_message(state: dict[str, Any]) -> str | None:
    for m in reversed(state.get("messages") or []):
        if m.get("role") == "assistant" and isinstance(m.get("content"), str) and not m.get("tool_calls"):
            return m["content"]
    return None


def _client_step(agent: Any, state: dict[str, Any], text: str, shown: str | None) -> TurnResult:
    """One customer message of a stateless client's conversation.

    When the agent awaits a yes/no, the answer only counts if the client showed the customer the
    agent's own proposal (``shown``, whitespace collapsed): else the message is kept but not run,
    and the agent's proposal is shown again (so the same rule replays the same way next request).
    """
    own = _last_agent_message(state)
    if own is not None and awaiting_confirmation(state, own) and _norm(shown) != _norm(own):
        again = own if own.startswith(REASK) else f"{REASK}\n\n{own}"
        messages = state.setdefault("messages", [])
        messages.append({"role": "user", "content": text})
        messages.append({"role": "assistant", "content": again})
        return TurnResult(again)
    return agent.respond(state, text)


def _client_conversation(messages: Any) -> list[dict[str, str]]:
    """A stateless client's messages as ``[{role, content}]``; ConciergeError (400) names the problem."""
    if not isinstance(messages, list) or not messages:
        raise ConciergeError("messages: must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise ConciergeError(f"messages.{i}.role: {role!r}; use 'user' or 'assistant'", param=f"messages.{i}.role")
        if not isinstance(content, str) or not content.strip():
            raise ConciergeError(f"messages.{i}.content: must be non-blank text", param=f"messages.{i}.content")
        if "\x00" in content:
            raise ConciergeError(f"messages.{i}.content: must not contain NUL characters", param=f"messages.{i}.content")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise ConciergeError("messages: the last message must be the customer's ('user')", param="messages")
    return out


def _tenant(db: Any, tenant: int | str | None) -> tuple[int | None, str | None]:
    if tenant is None:
        return None, None
    conn = db.connection()
    if isinstance(tenant, int):
        name = conn.execute(_TENANT_NAME, {"p_id": tenant}).scalar()
        return (tenant, name) if name is not None else (None, None)
    return conn.execute(TENANT_ID_BY_NAME, {"p_name": tenant}).scalar(), tenant


def _owned(db: Any, conv_tenant_id: int | None, conv_tenant_name: str | None, tenant: int | str | None) -> bool:
    """Whether ``tenant`` (None: any) owns a conversation of tenant ``conv_tenant_id`` (named ``conv_tenant_name``)."""
    if tenant is None:
        return True
    if conv_tenant_id is not None:
        return tenant == (conv_tenant_id if isinstance(tenant, int) else conv_tenant_name)
    return _tenant(db, tenant)[0] is None  # a conversation of no tenant: only a tenant that does not exist


# --------------------------------------------------------------------------- domain copies and overlay


class _Snapshot(DbSource):
    """A tenant copy's tables as they are now, for a fork to copy-on-write from.

    Unlike :class:`DbSource`, the records are shared, not copied: forking costs one dict copy per
    table. That is safe because a tenant copy's records are only ever replaced, never changed in
    place, and the fork's write tools copy a shared record before changing it.
    """

    def __init__(self, tables: dict[str, Any], label: str = "") -> None:
        self.label = label
        self.pristine = {
            name: dict(table) if isinstance(table, dict) else copy.deepcopy(table) for name, table in tables.items()
        }
        self._fragments = None


def _base_source(template: Any) -> DbSource:
    """The source tenants' copies start from: the domain's own, unless the given object was changed."""
    source = getattr(template, "source", None)
    if source is not None and not template.diff():
        return source
    return DbSource(template.db, f"{template.name} (as given)")


def _apply(db: dict[str, Any], changes: dict[str, dict[str, Any]]) -> None:
    """Put changed records (``Domain.diff`` shape; None deletes) into ``db``, replacing, never mutating."""
    for table, records in changes.items():
        current = db.get(table)
        if not isinstance(current, dict) and "*" in records:  # diff's form for a table that is not a dict
            db[table] = records["*"]
            continue
        if not isinstance(current, dict):
            current = db[table] = {}
        for key, record in records.items():
            if record is None:
                current.pop(key, None)
            else:
                current[key] = record


def _store_writes(db: Any, writes: _Writes) -> int:
    """Store one turn's changed records as a new revision of (tenant, domain); returns the revision.

    Runs inside the turn's transaction, so the records commit with its messages or not at all.
    """
    in_scope = (DomainRecord.scope == writes.scope, DomainRecord.domain == writes.domain)
    head = (*in_scope, DomainRecord.table_name == "", DomainRecord.record_key == "")
    now = utcnow()
    # Bumping the head row locks it (Postgres): writers of one tenant's domain commit one at a time.
    bumped = db.execute(
        update(DomainRecord).where(*head).values(version=DomainRecord.version + 1, updated_at=now)
    ).rowcount
    if not bumped:
        db.add(
            DomainRecord(
                tenant_id=writes.tenant_id, scope=writes.scope, domain=writes.domain, table_name="",
                record_key="", record=None, version=1, updated_at=now,
            )
        )
        try:
            db.flush()
        except IntegrityError as exc:  # another process created the head at the same moment
            raise DomainConflict(f"{writes.domain}: another conversation wrote at the same time") from exc
    revision = int(db.scalar(select(DomainRecord.version).where(*head)))
    if revision - 1 > writes.base_rev:
        # Others wrote since this turn's fork: fine, unless they wrote a record this turn changed.
        mine = {(table, key) for table, records in writes.changes.items() for key in records}
        newer = db.execute(
            select(DomainRecord.table_name, DomainRecord.record_key).where(
                *in_scope, DomainRecord.version > writes.base_rev, DomainRecord.table_name != ""
            )
        ).all()
        clash = sorted(f"{table}/{key}" for table, key in newer if (table, key) in mine)
        if clash:
            raise DomainConflict(
                f"{writes.domain}: {', '.join(clash[:5])} changed in another conversation while this turn ran"
            )
    wanted = or_(
        *(
            and_(DomainRecord.table_name == table, DomainRecord.record_key.in_(list(records)))
            for table, records in writes.changes.items()
        )
    )
    existing = {(row.table_name, row.record_key): row for row in db.scalars(select(DomainRecord).where(*in_scope, wanted))}
    for table, records in writes.changes.items():
        for key, record in records.items():
            row = existing.get((table, key))
            if row is None:
                db.add(
                    DomainRecord(
                        tenant_id=writes.tenant_id, scope=writes.scope, domain=writes.domain, table_name=table,
                        record_key=key, record=record, version=revision, updated_at=now,
                    )
                )
            else:
                row.record, row.version, row.updated_at = record, revision, now
    return revision


def reset_domain_writes(tenant: str | None, domain: str) -> int:
    """Forget every write live conversations made to ``tenant``'s copy of ``domain``; returns rows removed.

    For demos and staging: the next session reads the domain's source data again. Sessions already
    holding the domain in memory in another process keep their copy until they restart.
    """
    with session_scope() as db:
        result = db.execute(
            delete(DomainRecord).where(DomainRecord.scope == (tenant or ""), DomainRecord.domain == domain)
        )
        return int(result.rowcount or 0)
