"""The operator console shows every write to an external system, and flags those whose outcome is unknown."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from concierge import tenancy
from concierge.gateway.app import create_app
from concierge.server import build_services, mount_all
from concierge.support.connectors import CallContext, audit
from helpers.hubs import ShopHub


def test_console_lists_external_writes_and_flags_the_unknown(isolated_home: Path) -> None:
    hub = ShopHub()
    services = build_services(hub, use_model=False)
    app = create_app(hub)
    mount_all(app, services)
    context = CallContext(tenant="acme", conversation_id="c0ffee00c0ffee00")
    done, _ = audit.begin(context, domain="homestay-http", tool="cancel_reservation", connector="bookings",
                          arguments={"reservation_id": "HS10001", "reason": "change of plans"})
    audit.finish(done, context, status="ok", result={"status": "cancelled"})
    failed, _ = audit.begin(context, domain="homestay-http", tool="issue_service_refund", connector="bookings",
                            arguments={"reservation_id": "HS10009", "amount": 40.0, "reason": "noise"})
    audit.finish(failed, context, status="unknown", error="the booking database is unavailable", http_status=500)
    key = tenancy.create_key("ops", scope="operator").key
    with TestClient(app, base_url="http://testserver", headers={"Origin": "http://testserver"}) as client:
        assert "cancel_reservation" not in client.get("/console/fragments/external-writes").text  # operators only
        client.post("/console/login", data={"api_key": key})
        page = client.get("/console")
        assert page.status_code == 200 and "Writes to external systems" in page.text
        fragment = client.get("/console/fragments/external-writes").text
    assert "cancel_reservation" in fragment and "issue_service_refund" in fragment
    assert "Check: unknown (HTTP 500)" in fragment and "the booking database is unavailable" in fragment
    assert fragment.count("Check:") == 1  # the write that succeeded needs no one
    assert "acme" in fragment and "HS10009" in fragment
