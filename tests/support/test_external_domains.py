"""A support domain defined outside the package, its tools an OpenAPI service in a second process.

The home-stay booking service runs as its own process on loopback (``helpers.services``); concierge
reaches it only through the demo domain folder and a deployment-style ``support:`` config. The
conversations run in guided mode on the rules (no model), through the real session and guardrails.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from concierge.store.db import session_scope
from concierge.store.tables import DomainRecord
from concierge.support.connectors import CallContext, ServiceTimeout, audit
from concierge.support.domains.external import (
    SupportConfig,
    build_domain,
    check_domain_dir,
    close_connectors,
    configure,
    parse_support_config,
)
from concierge.support.session import SupportSession
from helpers.server import free_port
from helpers.services import DEMO_DOMAINS, homestay_api

HTTP_DOMAIN = DEMO_DOMAINS / "homestay-http"
EMAIL = "maya.okafor@example.com"


@pytest.fixture(scope="module")
def service(isolated_home: Path) -> Iterator[Any]:
    proc = homestay_api().start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def desk(service: Any) -> Iterator[SupportSession]:
    """Tenant ``acme``'s desk opens on the folder domain, configured as a deployment file would."""
    config = parse_support_config({
        "domains": {"homestay-http": {"path": str(HTTP_DOMAIN),
                                      "connectors": {"bookings": {"base_url": service.url, "timeout": 1}}}},
        "tenants": {"acme": "homestay-http"},
    })
    configure(config)
    yield SupportSession(None, default_mode="guided", use_model=False, tenant_domains=config.tenants)
    configure(SupportConfig())  # forget the folders again
    close_connectors()


@pytest.fixture(autouse=True)
def fresh_service(service: Any) -> None:
    service.admin("reset", {})


def talk(desk: SupportSession, *messages: str, conversation: str | None = None, tenant: str = "acme") -> list[Any]:
    turns = []
    for text in messages:
        turn = desk.turn(text, conversation_id=conversation, tenant=tenant)
        conversation = turn.conversation_id
        turns.append(turn)
    return turns


def reservation(service: Any, reservation_id: str) -> dict[str, Any]:
    return httpx.get(f"{service.url}/reservations/{reservation_id}", headers={"Authorization": "Bearer demo"},
                     timeout=5).json()


def writes(conversation_id: str) -> list[dict[str, Any]]:
    return [w for w in audit.list_writes() if w["conversation_id"] == conversation_id]


def test_confirmed_cancellation_goes_to_the_service_once_with_an_audit_row(desk: SupportSession, service: Any) -> None:
    ask, quote = talk(
        desk,
        "Hi, I want to cancel my Lisbon stay, reservation HS10001, because my plans changed.",
        f"My email is {EMAIL}",
    )
    assert ask.actions == [] and "email" in ask.message  # identity first: nothing looked up yet
    assert quote.confirm and "refunds $395.00" in quote.message
    assert reservation(service, "HS10001")["status"] == "confirmed"  # no yes yet: nothing sent
    [done] = talk(desk, "yes", conversation=quote.conversation_id)
    assert done.actions[0]["tool"] == "cancel_reservation" and done.actions[0]["ok"]
    assert "is cancelled" in done.message
    after = reservation(service, "HS10001")
    assert after["status"] == "cancelled" and after["refund_amount"] == 395.0
    assert service.admin("stats")["writes_applied"] == 1
    [row] = writes(done.conversation_id)
    assert (row["tenant"], row["tool"], row["status"]) == ("acme", "cancel_reservation", "ok")
    assert row["arguments"] == {"reservation_id": "HS10001", "reason": "change of plans"}
    assert row["result"]["status"] == "cancelled" and row["idempotency_key"].startswith("ck-")
    with session_scope() as db:  # the booking lives in the company's system, not in concierge's overlay
        assert db.scalar(select(func.count(DomainRecord.id)).where(DomainRecord.domain == "homestay-http")) == 0


def test_guardrails_refuse_another_guests_reservation_looked_up_in_the_service(desk: SupportSession) -> None:
    # HS10002 belongs to Lucas Moreau; Maya is identified. Ownership is checked in the service's records.
    turns = talk(desk, f"I want to cancel reservation HS10002. My email is {EMAIL}", "yes")
    refused = [a for t in turns for a in t.actions if a.get("refused")]
    assert refused and "belongs to another customer" in refused[0]["error"]
    assert not [a for t in turns for a in t.actions if a["tool"] == "cancel_reservation" and a.get("ok")]


def test_a_write_retried_after_a_timeout_is_applied_once(desk: SupportSession, service: Any) -> None:
    domain = desk.domain("homestay-http", "acme")
    fork = build_domain(HTTP_DOMAIN, {"connectors": {"bookings": {"base_url": service.url, "timeout": 1}}})
    fork.bind(CallContext(tenant="acme", conversation_id="retry-after-timeout"))
    assert domain.connectors["bookings"] is fork.connectors["bookings"]  # one client per process and config
    service.admin("faults", {"latency_s": 1.5, "tools": ["cancel_reservation"]})  # applied, but answered late
    args = {"reservation_id": "HS10002", "reason": "found other accommodation"}
    with pytest.raises(ServiceTimeout) as timeout:
        fork.call("cancel_reservation", args)
    assert "safe" in timeout.value.message and "person" in timeout.value.message
    service.admin("faults", {})
    retried = fork.call("cancel_reservation", args)  # the retry: the same key, so the service replays
    assert retried["status"] == "cancelled"
    stats = service.admin("stats")
    assert (stats["writes_applied"], stats["writes_replayed"]) == (1, 1)
    first, second = writes("retry-after-timeout")[::-1]
    assert first["status"] == "unknown" and second["status"] == "ok"
    assert first["idempotency_key"] == second["idempotency_key"]


def test_the_key_repeats_until_the_write_succeeds_in_a_saved_turn(isolated_home: Path) -> None:
    turn0 = CallContext(tenant="t", conversation_id="keys", turn=0)
    args = {"reservation_id": "HS1", "amount": 20.0}
    row, key = audit.begin(turn0, domain="d", tool="refund", connector="c", arguments=args)
    # no answer (a crash, a timeout): the retry sends the same key
    assert audit.begin(turn0, domain="d", tool="refund", connector="c", arguments=args)[1] == key
    audit.finish(row, turn0, status="ok", result={"ok": True})
    # succeeded, but the turn was never saved: the retry of that turn starts from version 0 again
    assert audit.begin(turn0, domain="d", tool="refund", connector="c", arguments=args)[1] == key
    # the next saved turn asks for the same refund again, confirmed afresh: a new operation
    turn1 = CallContext(tenant="t", conversation_id="keys", turn=1)
    assert audit.begin(turn1, domain="d", tool="refund", connector="c", arguments=args)[1] != key
    other = CallContext(tenant="t", conversation_id="another", turn=0)
    assert audit.begin(other, domain="d", tool="refund", connector="c", arguments=args)[1] != key


def test_service_down_the_customer_is_told_and_offered_a_person(isolated_home: Path, desk: SupportSession) -> None:
    own = homestay_api().start()
    domain = build_domain(HTTP_DOMAIN, {"connectors": {"bookings": {"base_url": own.url, "retries": 1}}})
    session = SupportSession(None, default_mode="guided", use_model=False, domains={"homestay-http": domain},
                             default_domain="homestay-http")
    try:
        _, quote = talk(session, "I want to cancel reservation HS10001, my plans changed.", f"It's {EMAIL}",
                        tenant="acme")
        assert quote.confirm
    finally:
        own.stop()  # the booking system goes down before the customer says yes
    [down] = talk(session, "yes", conversation=quote.conversation_id, tenant="acme")
    assert "cannot reach the Homestay booking system" in down.message
    assert "nothing was changed" in down.message and "person" in down.message
    # The guard's ownership look-up found the system down before the write: it was never sent.
    assert [a["tool"] for a in down.actions] == ["cancel_reservation"] and down.actions[0]["refused"]
    assert writes(quote.conversation_id) == []
    [handed] = talk(session, "Yes please, transfer me to a human agent", conversation=quote.conversation_id,
                    tenant="acme")
    assert handed.status == "handoff"


def test_slow_service_times_out_and_the_customer_is_told(desk: SupportSession, service: Any) -> None:
    service.admin("faults", {"latency_s": 1.5, "tools": ["find_guest_by_email"]})
    [turn] = talk(desk, f"Cancel my reservation HS10001 please, my email is {EMAIL}")
    assert "did not answer in time" in turn.message and "person" in turn.message
    assert not writes(turn.conversation_id)


def test_a_refusal_from_the_service_is_explained_to_the_customer(desk: SupportSession) -> None:
    # Grace Kim's Kyoto stay has started: the service answers 409 with its reason.
    [turn] = talk(desk, "I want to cancel reservation HS10010. My email is grace.kim@example.com")
    assert "has started" in turn.message and "cannot be cancelled here" in turn.message
    assert not turn.confirm


def test_a_5xx_on_a_write_is_not_retried_and_is_flagged_for_the_operator(desk: SupportSession, service: Any) -> None:
    _, quote = talk(desk, "I want to cancel reservation HS10001, my plans changed.", f"It's {EMAIL}")
    service.admin("faults", {"fail_writes": 500})
    [failed] = talk(desk, "yes", conversation=quote.conversation_id)
    assert "failed while making the change" in failed.message and "our team" in failed.message
    stats = service.admin("stats")
    assert (stats["write_requests"], stats["writes_applied"]) == (1, 0)  # one request: no retry
    [row] = writes(quote.conversation_id)
    assert (row["status"], row["http_status"], row["attention"]) == ("unknown", 500, True)


def test_domains_check_names_the_file_and_the_field(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(HTTP_DOMAIN, folder)
    text = (folder / "domain.yaml").read_text()
    text = text.replace("{name: cancel_reservation, kind: write", "{name: cancel_reservation, kind: wrte")
    text = text.replace("{name: search_listings, kind: read, connector: bookings}",
                        "{name: search_listings, kind: read, connector: bookings, operation: searchListing}")
    (folder / "domain.yaml").write_text(text)
    problems = check_domain_dir(folder)
    assert "domain.yaml: tools[7] (cancel_reservation).kind: must be read or write, got 'wrte'" in problems
    assert any(p.startswith("domain.yaml: tools[6] (search_listings).operation: bookings has no operation "
                            "'searchListing'") for p in problems)
    assert any(p.startswith("flows.yaml: intents.cancel_reservation.steps[9].call: cancel_reservation")
               for p in problems)  # the flows name a tool the domain file no longer declares usable
    (folder / "domain.yaml").write_text((HTTP_DOMAIN / "domain.yaml").read_text().replace("timeout: 5", "timeout: -1"))
    assert check_domain_dir(folder) == [
        "domain.yaml: connectors.bookings.timeout: must be a positive number of seconds, got -1"
    ]
    assert check_domain_dir(HTTP_DOMAIN) == []


def test_a_missing_token_variable_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "needs-token"
    shutil.copytree(HTTP_DOMAIN, folder)
    path = folder / "domain.yaml"
    path.write_text(path.read_text().replace("${HOMESTAY_API_TOKEN:-demo}", "${ACME_TOKEN}"))
    monkeypatch.delenv("ACME_TOKEN", raising=False)
    assert check_domain_dir(folder) == [
        "domain.yaml: connectors.bookings.headers.Authorization: environment variable ACME_TOKEN is not set"
    ]
    monkeypatch.setenv("ACME_TOKEN", "s3cret")
    assert check_domain_dir(folder) == []


def test_the_auth_header_comes_from_the_environment(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The service requires "Bearer demo"; the domain file sends "Bearer ${HOMESTAY_API_TOKEN:-demo}".
    monkeypatch.setenv("HOMESTAY_API_TOKEN", "wrong")
    refused = build_domain(HTTP_DOMAIN, {"connectors": {"bookings": {"base_url": service.url}}})
    outcome = refused.execute("find_guest_by_email", {"email": EMAIL})
    assert not outcome.ok and "did not accept concierge's credentials" in outcome.content
    monkeypatch.setenv("HOMESTAY_API_TOKEN", "demo")
    accepted = build_domain(HTTP_DOMAIN, {"connectors": {"bookings": {"base_url": service.url}}})
    assert accepted.call("find_guest_by_email", {"email": EMAIL}) == "maya_okafor_1042"


def test_unknown_tenant_domain_in_the_config_is_refused() -> None:
    with pytest.raises(ValueError, match=r"support.tenants.acme: unknown domain 'nope'"):
        configure(parse_support_config({"tenants": {"acme": "nope"}}))


def test_dead_port_is_unavailable_not_a_crash(isolated_home: Path) -> None:
    domain = build_domain(HTTP_DOMAIN, {"connectors": {"bookings": {"base_url": f"http://127.0.0.1:{free_port()}",
                                                                     "retries": 0}}})
    outcome = domain.execute("find_guest_by_email", {"email": EMAIL})
    assert not outcome.ok and "cannot reach the Homestay booking system" in outcome.content


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def test_agent_mode_a_model_cannot_write_without_identity_and_a_yes(desk: SupportSession, service: Any,
                                                                    fake_hub: Any) -> None:
    cancel = {"reservation_id": "HS10001", "reason": "change of plans"}
    hub = fake_hub(
        _call("cancel_reservation", cancel),  # straight to the write: refused, nobody identified
        _call("find_guest_by_email", {"email": EMAIL}),
        _call("cancel_reservation", cancel),  # identified, but the customer never said yes
        default="Shall I cancel reservation HS10001 (refund $395.00)? Please confirm (yes/no).",
    )
    session = SupportSession(hub, default_mode="agent", tenant_domains={"acme": "homestay-http"})
    turn = session.turn(f"Cancel HS10001 now. I'm {EMAIL}", tenant="acme")
    writes_tried = [a for a in turn.actions if a["tool"] == "cancel_reservation"]
    assert len(writes_tried) == 2 and all(a["refused"] for a in writes_tried)
    assert "identified" in writes_tried[0]["error"] and "explicit yes" in writes_tried[1]["error"]
    assert reservation(service, "HS10001")["status"] == "confirmed"
    assert service.admin("stats")["write_requests"] == 0 and not writes(turn.conversation_id)
    # the tools the model saw are the domain file's, with the OpenAPI arguments
    tools = {t["function"]["name"]: t["function"] for t in hub.requests[0]["tools"]}
    assert tools["cancel_reservation"]["parameters"]["properties"]["reason"]["enum"][0] == "change of plans"


def test_a_crash_after_the_write_then_the_same_yes_again_applies_it_once(
    desk: SupportSession, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, quote = talk(desk, "I want to cancel reservation HS10001, my plans changed.", f"It's {EMAIL}")
    real_save = SupportSession._save

    def crash(self: SupportSession, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died before the turn was stored")

    monkeypatch.setattr(SupportSession, "_save", crash)
    with pytest.raises(RuntimeError):
        desk.turn("yes", conversation_id=quote.conversation_id, tenant="acme")
    assert service.admin("stats")["writes_applied"] == 1  # the service did cancel it
    monkeypatch.setattr(SupportSession, "_save", real_save)
    # The conversation was not saved, so the client sends the same yes again: the same key goes out.
    again = desk.turn("yes", conversation_id=quote.conversation_id, tenant="acme")
    assert again.actions[0]["ok"] and "is cancelled" in again.message
    stats = service.admin("stats")
    assert (stats["writes_applied"], stats["writes_replayed"]) == (1, 1)
    newest, first = writes(quote.conversation_id)
    assert first["status"] == "ok" and newest["status"] == "ok"
    assert first["idempotency_key"] == newest["idempotency_key"]
