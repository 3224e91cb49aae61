"""The audit log of external writes, and the idempotency keys those writes carry.

:func:`begin` writes the ``pending`` row and returns the key BEFORE the request is sent;
:func:`finish` records the answer. Each runs in its own short transaction, not in the turn's:
the company's system has changed (or may have) whatever later happens to the turn, so its trace
must not roll back with a turn that fails to save.

The key is ``sha256(tenant, conversation, tool, canonical arguments, n)`` where ``n`` counts the
writes of that same tool with those same arguments in that conversation that SUCCEEDED in a turn
that was SAVED (the row's ``turn`` is older than the version this turn started from). So:

* a retry of a write that timed out, failed or never answered (``pending``, ``unknown``, ``error``)
  sends the key it sent before, and the system answers with the first outcome;
* a write that succeeded in a turn that then crashed before it was stored counts for nothing (the
  retry of that turn starts from the same version), so the same yes, sent again, sends the same key;
* a second, deliberate, separately confirmed identical write in a later turn gets a new key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import func, select

from concierge.store.db import session_scope
from concierge.store.tables import ExternalWrite, utcnow
from concierge.support.connectors import CallContext


def canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def begin(
    context: CallContext, *, domain: str, tool: str, connector: str, arguments: dict[str, Any]
) -> tuple[int, str]:
    """Record a write about to be sent; returns (row id, idempotency key)."""
    args_hash = _hash(canonical(arguments))
    conversation = context.conversation_id or ""
    same_conversation = (
        ExternalWrite.conversation_id == context.conversation_id
        if context.conversation_id
        else ExternalWrite.conversation_id.is_(None)
    )
    with session_scope(context.db_url) as db:
        done = db.scalar(
            select(func.count(ExternalWrite.id)).where(
                ExternalWrite.tenant == context.tenant,
                same_conversation,
                ExternalWrite.domain == domain,
                ExternalWrite.tool == tool,
                ExternalWrite.arguments_hash == args_hash,
                ExternalWrite.status == "ok",
                *(
                    [ExternalWrite.turn.is_not(None), ExternalWrite.turn < context.turn]
                    if context.turn is not None
                    else []
                ),
            )
        )
        key = "ck-" + _hash(context.tenant, conversation, domain, tool, args_hash, str(int(done or 0)))[:40]
        row = ExternalWrite(
            tenant=context.tenant, conversation_id=context.conversation_id, turn=context.turn, domain=domain,
            tool=tool,
            connector=connector, arguments=arguments, arguments_hash=args_hash, idempotency_key=key,
            status="pending",
        )
        db.add(row)
        db.flush()
        return int(row.id), key


def finish(
    row_id: int,
    context: CallContext,
    *,
    status: str,
    result: Any = None,
    error: str | None = None,
    http_status: int | None = None,
) -> None:
    """Record how a write ended: ``ok``, ``error`` (refused or never sent) or ``unknown``."""
    with session_scope(context.db_url) as db:
        row = db.get(ExternalWrite, row_id)
        if row is None:
            return
        row.status = status
        row.result = _jsonable(result)
        row.error = error
        row.http_status = http_status
        row.finished_at = utcnow()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def list_writes(
    *, tenant: str | None = None, status: str | None = None, limit: int = 100, db_url: str | None = None
) -> list[dict[str, Any]]:
    """The newest external writes first (operator console, tests)."""
    with session_scope(db_url) as db:
        query = select(ExternalWrite).order_by(ExternalWrite.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(ExternalWrite.tenant == tenant)
        if status is not None:
            query = query.where(ExternalWrite.status == status)
        return [
            {
                "id": row.id,
                "tenant": row.tenant,
                "conversation_id": row.conversation_id,
                "domain": row.domain,
                "tool": row.tool,
                "connector": row.connector,
                "arguments": row.arguments,
                "idempotency_key": row.idempotency_key,
                "status": row.status,
                "result": row.result,
                "error": row.error,
                "http_status": row.http_status,
                "created_at": row.created_at,
                "finished_at": row.finished_at,
                # an operator must look at it: the system may have applied it, or failed inside
                "attention": row.status in ("pending", "unknown"),
            }
            for row in db.scalars(query).all()
        ]
