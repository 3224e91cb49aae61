"""Stored responses (``store: true``), kept per tenant for ``previous_response_id``.

The table is declared on the shared ``concierge.store.db.Base`` but lives with the Responses
family; it still needs a migration revision in ``store/`` (until then it is created on first use).
A response of another tenant is not found (404), never shown.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from concierge.gateway.errors import GatewayError
from concierge.store import db


class StoredResponse(db.Base):
    __tablename__ = "gateway_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    # The conversation up to and with this response, as chat messages (instructions excluded:
    # OpenAI does not carry them over to a follow-up).
    history: Mapped[list[Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


_created: set[int] = set()
_lock = threading.Lock()


def _engine(db_url: str | None) -> Any:
    engine = db.get_engine(db_url)
    with _lock:
        if id(engine) not in _created:
            StoredResponse.__table__.create(engine, checkfirst=True)
            _created.add(id(engine))
    return engine


def save(db_url: str | None, tenant: str, response: dict[str, Any], history: list[Any]) -> None:
    _engine(db_url)
    with db.session_scope(db_url) as session:
        session.add(StoredResponse(id=response["id"], tenant=tenant, created_at=int(time.time()),
                                   model=response["model"], history=history, response=response))


def load(db_url: str | None, tenant: str, response_id: str, *, param: str = "previous_response_id") -> StoredResponse:
    _engine(db_url)
    with db.session_scope(db_url) as session:
        row = session.scalar(select(StoredResponse).where(StoredResponse.id == response_id,
                                                           StoredResponse.tenant == tenant))
        if row is None:
            raise GatewayError(404, f"Response with id {response_id!r} not found.", error_type="invalid_request_error",
                               param=param, code="response_not_found")
        session.expunge(row)
        return row
