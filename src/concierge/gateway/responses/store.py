"""Stored responses (``store: true``), kept per tenant for ``previous_response_id``.

The table (``gateway_responses``) is declared in ``concierge.store.tables`` and made by the
migrations (revision 0002).
A response of another tenant is not found (404), never shown.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from concierge.gateway.errors import GatewayError
from concierge.store import db
from concierge.store.tables import StoredResponse


def save(db_url: str | None, tenant: str, response: dict[str, Any], history: list[Any]) -> None:
    with db.session_scope(db_url) as session:
        session.add(StoredResponse(id=response["id"], tenant=tenant, created_at=int(time.time()),
                                   model=response["model"], history=history, response=response))


def load(db_url: str | None, tenant: str, response_id: str, *, param: str = "previous_response_id") -> StoredResponse:
    with db.session_scope(db_url) as session:
        row = session.scalar(select(StoredResponse).where(StoredResponse.id == response_id,
                                                           StoredResponse.tenant == tenant))
        if row is None:
            raise GatewayError(404, f"Response with id {response_id!r} not found.", error_type="invalid_request_error",
                               param=param, code="response_not_found")
        session.expunge(row)
        return row
