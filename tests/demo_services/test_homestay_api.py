"""The demo booking service honours idempotency keys, and its committed OpenAPI document is the one it serves."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from concierge.demo_services.homestay_api import create_app
from helpers.services import DEMO_DOMAINS

AUTH = {"Authorization": "Bearer t"}


def test_a_write_with_a_key_is_applied_once_and_replayed() -> None:
    app = create_app(token="t")
    with TestClient(app) as client:
        body = {"reason": "change of plans"}
        first = client.post("/reservations/HS10001/cancel", json=body, headers={**AUTH, "Idempotency-Key": "k1"})
        again = client.post("/reservations/HS10001/cancel", json=body, headers={**AUTH, "Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
        reservation = client.get("/reservations/HS10001", headers=AUTH).json()
        assert [p["type"] for p in reservation["payment_history"]].count("refund") == 1  # refunded once
        other = client.post("/reservations/HS10001/cancel", json={"reason": "booked by mistake"},
                            headers={**AUTH, "Idempotency-Key": "k1"})
        assert other.status_code == 422 and "different request" in other.json()["detail"]
        fresh = client.post("/reservations/HS10001/cancel", json=body, headers={**AUTH, "Idempotency-Key": "k2"})
        assert fresh.status_code == 409 and "cannot be cancelled" in fresh.json()["detail"]
        assert client.get("/reservations/HS10001").status_code == 401  # no credentials


def test_the_committed_openapi_document_is_what_the_service_serves() -> None:
    committed = json.loads((DEMO_DOMAINS / "homestay-http" / "openapi.json").read_text())
    assert committed == create_app().openapi(), (
        "regenerate it: python -m concierge.demo_services.homestay_api --write-openapi "
        "src/concierge/demo_services/domains/homestay-http/openapi.json"
    )
