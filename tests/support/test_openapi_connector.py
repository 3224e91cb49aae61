"""The OpenAPI connector's rules on the wire: reads retried on 502/503/504 and refused connections,
writes sent once with an Idempotency-Key, arguments placed where the document says."""

from __future__ import annotations

import json

import httpx
import pytest

from concierge.support.connectors import ServiceFailed, ServiceRefused
from concierge.support.connectors.openapi import OpenAPIConnector, read_document
from helpers.services import DEMO_DOMAINS

DOC = read_document("openapi.json", DEMO_DOMAINS / "homestay-http")


def connector(handler, **kwargs) -> tuple[OpenAPIConnector, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(len(seen), request)

    return OpenAPIConnector("bookings", DOC, base_url="http://bookings.test", backoff=0,
                            transport=httpx.MockTransport(record), **kwargs), seen


def test_a_read_is_retried_after_a_503_and_a_write_is_not() -> None:
    def flaky(n: int, request: httpx.Request) -> httpx.Response:
        if n == 1 or request.method == "POST":
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"reservation_id": "HS10001", "status": "confirmed"})

    bookings, seen = connector(flaky, retries=2)
    assert bookings.call("get_reservation_details", {"reservation_id": "HS10001"}, write=False,
                         idempotency_key=None)["status"] == "confirmed"
    assert len(seen) == 2
    seen.clear()
    with pytest.raises(ServiceFailed) as failed:
        bookings.call("cancel_reservation", {"reservation_id": "HS10001", "reason": "change of plans"}, write=True,
                      idempotency_key="ck-1")
    assert len(seen) == 1 and failed.value.status == 503 and "our team has been told" in failed.value.message


def test_arguments_go_to_the_path_and_the_body_and_the_key_to_the_header() -> None:
    bookings, seen = connector(lambda n, r: httpx.Response(200, json={"status": "cancelled"}))
    bookings.call("cancel_reservation", {"reservation_id": "HS 1/2", "reason": "booked by mistake"}, write=True,
                  idempotency_key="ck-abc")
    [request] = seen
    assert request.url.raw_path == b"/reservations/HS%201%2F2/cancel"  # quoted: an id cannot change the path
    assert json.loads(request.content) == {"reason": "booked by mistake"}
    assert request.headers["Idempotency-Key"] == "ck-abc"
    # the header is the connector's business: it is not an argument the model sees
    assert "Idempotency-Key" not in bookings.operation_schema("cancel_reservation")["properties"]
    assert bookings.operation_schema("cancel_reservation")["required"] == ["reservation_id", "reason"]


def test_a_4xx_carries_the_services_own_words() -> None:
    bookings, _ = connector(lambda n, r: httpx.Response(409, json={"detail": "Reservation HS10003 is completed"}))
    with pytest.raises(ServiceRefused, match="Reservation HS10003 is completed"):
        bookings.call("quote_cancellation", {"reservation_id": "HS10003"}, write=False, idempotency_key=None)
