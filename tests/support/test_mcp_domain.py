"""The home-stay desk whose tools are an MCP server's: over stdio (concierge starts the server) and
streamable HTTP (the server runs as its own process on loopback). Configured by the domain folder only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concierge.support.connectors import CallContext, audit
from concierge.support.domains.external import (
    SupportConfig,
    build_domain,
    close_connectors,
    configure,
    parse_support_config,
)
from concierge.support.session import SupportSession
from helpers.services import DEMO_DOMAINS, homestay_mcp_http

MCP_DOMAIN = DEMO_DOMAINS / "homestay-mcp"
EMAIL = "maya.okafor@example.com"


@pytest.fixture(scope="module")
def registered(isolated_home: Path) -> Iterator[None]:
    configure(parse_support_config({"domains": {"homestay-mcp": {"path": str(MCP_DOMAIN)}}}))
    yield
    configure(SupportConfig())  # forget the folders again
    close_connectors()


def talk(session: SupportSession, tenant: str, *messages: str, conversation: str | None = None) -> list[Any]:
    turns = []
    for text in messages:
        turns.append(session.turn(text, conversation_id=conversation, tenant=tenant))
        conversation = turns[-1].conversation_id
    return turns


def cancel(session: SupportSession, tenant: str) -> tuple[Any, Any]:
    _, quote, done = talk(session, tenant, "I want to cancel my Lisbon stay, reservation HS10001, my plans changed.",
                          f"My email is {EMAIL}", "yes")
    assert quote.confirm and "refunds $395.00" in quote.message
    return quote, done


def test_confirmed_cancellation_over_stdio_and_the_key_in_meta_is_honoured(registered: None) -> None:
    session = SupportSession(None, default_mode="guided", use_model=False, default_domain="homestay-mcp")
    quote, done = cancel(session, "stdio")
    assert done.actions[0]["tool"] == "cancel_reservation" and done.actions[0]["ok"], done.message
    domain = session.domain("homestay-mcp", "stdio")
    assert domain.call("get_reservation_details", {"reservation_id": "HS10001"})["status"] == "cancelled"
    [row] = [w for w in audit.list_writes() if w["conversation_id"] == done.conversation_id]
    assert row["status"] == "ok" and row["connector"] == "bookings"
    # The same write again for the same conversation (a retry after a crash) carries the same key:
    # the server answers with the first result instead of refusing to cancel a cancelled booking.
    fork = build_domain(MCP_DOMAIN)
    fork.bind(CallContext(tenant="stdio", conversation_id=done.conversation_id))
    audit.finish(row["id"], fork.context, status="unknown")  # as if the first answer had been lost
    again = fork.call("cancel_reservation", {"reservation_id": "HS10001", "reason": "change of plans"})
    assert again["status"] == "cancelled" and again["refund_amount"] == 395.0
    # Without the key (another conversation) the server applies its rules: it is already cancelled.
    other = build_domain(MCP_DOMAIN)
    other.bind(CallContext(tenant="stdio", conversation_id="someone-else"))
    refused = other.execute("cancel_reservation", {"reservation_id": "HS10001", "reason": "change of plans"})
    assert not refused.ok and "is cancelled and cannot be cancelled" in refused.content


def test_confirmed_cancellation_over_streamable_http_then_the_server_goes_down(registered: None) -> None:
    server = homestay_mcp_http().start()
    try:
        domain = build_domain(MCP_DOMAIN, {"connectors": {"bookings": {"command": None, "url": server.url + "/mcp"}}})
        session = SupportSession(None, default_mode="guided", use_model=False, default_domain="homestay-mcp",
                                 domains={"homestay-mcp": domain})
        _, done = cancel(session, "http")
        assert done.actions[0]["ok"] and "is cancelled" in done.message
        assert domain.call("get_reservation_details", {"reservation_id": "HS10001"})["status"] == "cancelled"
        _, quote = talk(session, "http", "I want to cancel reservation HS10002, I found another place.",
                        "It's lucas.moreau@example.com")
        assert quote.confirm
    finally:
        server.stop()  # the server goes down before the customer says yes
    [down] = talk(session, "http", "yes", conversation=quote.conversation_id)
    assert "cannot reach the Homestay booking system" in down.message and "person" in down.message
    assert not [w for w in audit.list_writes() if w["conversation_id"] == quote.conversation_id]


def test_a_slow_mcp_server_times_out_and_the_customer_is_told(registered: None) -> None:
    server = homestay_mcp_http(env={"HOMESTAY_MCP_LATENCY": "2"}).start()
    try:
        domain = build_domain(MCP_DOMAIN, {"connectors": {"bookings": {"command": None, "url": server.url + "/mcp",
                                                                       "timeout": 1}}})
        outcome = domain.execute("get_reservation_details", {"reservation_id": "HS10001"})
    finally:
        server.stop()
    assert not outcome.ok and "did not answer in time" in outcome.content and "person" in outcome.content


def test_a_desk_whose_mcp_server_cannot_start_is_unavailable_not_a_crash(registered: None, tmp_path: Path) -> None:
    import shutil

    from concierge.support.domains.external import folder_loader
    from concierge.support.session import DomainUnavailable

    folder = tmp_path / "homestay-mcp"
    shutil.copytree(MCP_DOMAIN, folder)
    (folder / "domain.yaml").write_text((folder / "domain.yaml").read_text().replace(
        "concierge.demo_services.homestay_mcp", "concierge.demo_services.no_such_server").replace(
        "../homestay-http/", str(DEMO_DOMAINS / "homestay-http") + "/"))
    session = SupportSession(None, default_mode="guided", use_model=False)
    with pytest.raises(FileNotFoundError, match="cannot list its tools"):
        folder_loader(folder)()
    configure(parse_support_config({"domains": {"homestay-mcp": {"path": str(folder)}}}))
    try:
        with pytest.raises(DomainUnavailable, match="cannot reach its systems"):
            session.turn("hello", domain="homestay-mcp")
    finally:
        configure(parse_support_config({"domains": {"homestay-mcp": {"path": str(MCP_DOMAIN)}}}))
