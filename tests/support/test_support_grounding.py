"""Grounded writes: a write changes only what the customer named, with arguments from their words or
a record looked up in this conversation; otherwise the agent asks, then offers a person.

The retail tests run guided mode (rules alone) on a tiny synthetic τ²-shaped database, so they
need no real data and assert the database before and after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concierge.support.domains import load_domain
from concierge.support.grounding import Evidence, named_items, ungrounded
from concierge.support.guardrails import Guard, GuardRules, Turn
from concierge.support.guided import GuidedAgent, RuleExtractor, load_flows
from concierge.support.guided.engine import conditional_clause
from concierge.support.guided.slots import resolve_month_day

EMAIL = "ada.lee@example.com"
LAMP, LAMP_WHITE, LAMP_BRIGHT = "1000000001", "1000000002", "1000000003"
BOTTLE, BOTTLE_RED = "2000000001", "2000000002"


def _db() -> dict:
    address = {
        "address1": "1 Elm Street",
        "address2": "",
        "city": "Toronto",
        "country": "Canada",
        "state": "ON",
        "zip": "12345",
    }
    lamp = {"color": "black", "brightness": "low"}
    bottle = {"capacity": "500ml", "color": "blue"}
    return {
        "users": {
            "ada_lee_1": {
                "user_id": "ada_lee_1",
                "name": {"first_name": "Ada", "last_name": "Lee"},
                "address": address,
                "email": EMAIL,
                "payment_methods": {
                    "credit_card_1": {
                        "source": "credit_card",
                        "id": "credit_card_1",
                        "brand": "visa",
                        "last_four": "4242",
                    },
                    "gift_card_2": {"source": "gift_card", "id": "gift_card_2", "balance": 500.0},
                },
                "orders": ["#W0000001"],
            }
        },
        "orders": {
            "#W0000001": {
                "order_id": "#W0000001",
                "user_id": "ada_lee_1",
                "address": address,
                "items": [
                    {
                        "name": "Desk Lamp",
                        "product_id": "p1",
                        "item_id": LAMP,
                        "price": 100.0,
                        "options": lamp,
                    },
                    {
                        "name": "Water Bottle",
                        "product_id": "p2",
                        "item_id": BOTTLE,
                        "price": 20.0,
                        "options": bottle,
                    },
                ],
                "status": "pending",
                "fulfillments": [],
                "payment_history": [
                    {"transaction_type": "payment", "amount": 120.0, "payment_method_id": "credit_card_1"}
                ],
            }
        },
        "products": {
            "p1": {
                "name": "Desk Lamp",
                "product_id": "p1",
                "variants": {
                    LAMP: {"item_id": LAMP, "options": lamp, "available": True, "price": 100.0},
                    LAMP_WHITE: {
                        "item_id": LAMP_WHITE,
                        "options": {"color": "white", "brightness": "low"},
                        "available": True,
                        "price": 90.0,
                    },
                    LAMP_BRIGHT: {
                        "item_id": LAMP_BRIGHT,
                        "options": {"color": "black", "brightness": "high"},
                        "available": True,
                        "price": 80.0,
                    },
                },
            },
            "p2": {
                "name": "Water Bottle",
                "product_id": "p2",
                "variants": {
                    BOTTLE: {"item_id": BOTTLE, "options": bottle, "available": True, "price": 20.0},
                    BOTTLE_RED: {
                        "item_id": BOTTLE_RED,
                        "options": {"capacity": "500ml", "color": "red"},
                        "available": True,
                        "price": 15.0,
                    },
                },
            },
        },
    }


@pytest.fixture()
def retail(tmp_path: Path):
    (tmp_path / "db.json").write_text(json.dumps(_db()), encoding="utf-8")
    return load_domain("retail", tmp_path)


def _talk(domain, *messages: str) -> tuple[dict, list]:
    agent = GuidedAgent(domain, use_model=False)
    state: dict = {}
    replies = []
    for text in messages:
        replies.append(agent.respond(state, text))
    return state, replies


def _writes(replies) -> list[dict]:
    return [a for r in replies for a in r.actions if a.get("kind") == "write" and a.get("ok")]


def test_one_item_of_a_multi_item_order_changes_only_that_item(retail) -> None:
    before = retail.snapshot()
    _state, replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. In order #W0000001 I want to change the desk lamp to the white one, "
        "and pay any difference with my gift card.",
        "Yes, please proceed.",
    )
    writes = _writes(replies)
    assert [w["tool"] for w in writes] == ["modify_pending_order_items"], [r.message for r in replies]
    assert writes[0]["arguments"]["item_ids"] == [LAMP]
    assert writes[0]["arguments"]["new_item_ids"] == [LAMP_WHITE]
    order = retail.db["orders"]["#W0000001"]
    assert [i["item_id"] for i in order["items"]] == [LAMP_WHITE, BOTTLE]  # the bottle is untouched
    assert order["items"][1] == _db()["orders"]["#W0000001"]["items"][1]
    assert retail.db["users"]["ada_lee_1"]["address"] == _db()["users"]["ada_lee_1"]["address"]
    assert set(retail.diff(before)) <= {"orders", "users"}  # the order, and the gift card's refund


def test_what_are_the_cheapest_options_changes_nothing(retail) -> None:
    before = retail.snapshot()
    _state, replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. What are the cheapest options for the items in order #W0000001? "
        "Could you change them?",
        "Yes, please proceed.",
        "Yes, please proceed.",
    )
    assert _writes(replies) == []
    assert retail.diff(before) == {}


def test_a_conditional_request_asks_the_customer_to_choose(retail) -> None:
    before = retail.snapshot()
    agent = GuidedAgent(retail, use_model=False)
    state: dict = {}
    agent.respond(state, f"Hi, my email is {EMAIL}.")
    reply = agent.respond(
        state,
        "In order #W0000001, if a white desk lamp costs less than $95 change the desk lamp to the white one, "
        "and pay with my gift card.",
    )
    assert reply.actions == [] or all(a.get("kind") != "write" for a in reply.actions)
    assert "choice is yours" in reply.message and "white" in reply.message  # the facts, then the question
    assert retail.diff(before) == {}
    # Changing nothing is one of the choices, and it changes nothing.
    reply = agent.respond(state, "Change nothing.")
    assert all(a.get("kind") != "write" for a in reply.actions)
    assert retail.diff(before) == {}


def test_conditional_clause_reads_if_but_not_if_possible() -> None:
    assert conditional_clause("If it costs more than $3000, cancel it instead.")
    assert conditional_clause("Please exchange it if possible.") == ""


def test_month_day_dates_resolve_against_the_domains_clock() -> None:
    assert resolve_month_day(5, 20, "2024-05-15T15:00:00") == "2024-05-20"
    assert resolve_month_day(1, 3, "2030-12-30") == "2031-01-03"  # the nearest one, not a fixed year
    flows = load_flows("airline")
    assert RuleExtractor(flows, now="2031-05-15T15:00:00").slots("I fly on May 20")["date"] == "2031-05-20"


def test_an_address_without_a_country_takes_the_country_on_record(retail) -> None:
    _state, replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please change my default address to 12 Main Street, Springfield, IL 62701.",
        "Yes, please proceed.",
    )
    assert [w["tool"] for w in _writes(replies)] == ["modify_user_address"], [r.message for r in replies]
    assert retail.db["users"]["ada_lee_1"]["address"]["country"] == "Canada"  # the record's, never "USA"


def test_an_ungrounded_payment_method_gets_a_question_not_a_write(retail) -> None:
    before = retail.snapshot()
    agent = GuidedAgent(retail, use_model=False)
    state: dict = {}
    reply = agent.respond(
        state, f"Hi, my email is {EMAIL}. In order #W0000001 I want to change the desk lamp to the white one."
    )
    # Two payment methods on record and the customer named none: ask, do not pick one.
    assert "payment method" in reply.message and "?" in reply.message
    assert retail.diff(before) == {}
    reply = agent.respond(state, "I don't know.")
    reply = agent.respond(state, "Yes, please proceed.")
    assert retail.diff(before) == {}
    # Named: it is grounded and the change (only the item change, not the order's payment) goes through.
    agent.respond(state, "In order #W0000001 change the desk lamp to the white one, pay with the gift card.")
    reply = agent.respond(state, "Yes, please proceed.")
    assert [a["tool"] for a in reply.actions if a.get("kind") == "write"] == ["modify_pending_order_items"]
    assert [i["item_id"] for i in retail.db["orders"]["#W0000001"]["items"]] == [LAMP_WHITE, BOTTLE]


# ----------------------------------------------------------------- the check itself (both modes)


def _evidence(customer: str) -> Evidence:
    db = _db()
    return Evidence(customer, [db["users"]["ada_lee_1"], db["orders"]["#W0000001"], db["products"]["p1"]])


def test_grounding_only_named_items_and_a_named_variant() -> None:
    args = {
        "order_id": "#W0000001",
        "item_ids": [LAMP, BOTTLE],
        "new_item_ids": [LAMP_WHITE, BOTTLE_RED],
        "payment_method_id": "gift_card_2",
    }
    problems = ungrounded(
        "modify_pending_order_items", args, _evidence("change the desk lamp to white, gift card")
    )
    assert {p.argument for p in problems} == {"item_ids", "new_item_ids"}  # the bottle was never named
    one = {**args, "item_ids": [LAMP], "new_item_ids": [LAMP_WHITE]}
    assert (
        ungrounded("modify_pending_order_items", one, _evidence("change the desk lamp to white, gift card"))
        == []
    )
    # A price preference in a question picks nothing; in a request it picks the cheapest variant.
    cheap = {**one, "new_item_ids": [LAMP_BRIGHT]}
    asked = _evidence("What are the cheapest options of the desk lamp? gift card")
    assert [p.argument for p in ungrounded("modify_pending_order_items", cheap, asked)] == ["new_item_ids"]
    wanted = _evidence("Change the desk lamp to the cheapest one. gift card")
    assert ungrounded("modify_pending_order_items", cheap, wanted) == []


def test_grounding_all_items_and_payment_methods() -> None:
    items = _db()["orders"]["#W0000001"]["items"]
    assert len(named_items(items, "return all the items in order #W0000001")) == 2
    assert named_items(items, "make sure all the items I want are returned: the lamp") == [items[0]]
    assert named_items(items, "everything related to gaming") == []
    args = {"order_id": "#W0000001", "payment_method_id": "credit_card_1"}
    assert [p.argument for p in ungrounded("modify_pending_order_payment", args, _evidence("change it"))] == [
        "payment_method_id"
    ]
    assert ungrounded("modify_pending_order_payment", args, _evidence("use my visa ending 4242")) == []
    address = {"user_id": "ada_lee_1", "address1": "12 Main Street", "country": "Canada"}
    assert ungrounded("modify_user_address", address, _evidence("move me to 12 Main Street")) == []
    assert [
        p.argument
        for p in ungrounded("modify_user_address", {**address, "country": "USA"}, _evidence("12 Main Street"))
    ] == ["country"]


def test_guard_refuses_an_ungrounded_write_in_agent_mode(retail) -> None:
    rules = load_flows("retail").guardrails
    guard = Guard(retail, rules, {"user_id": "ada_lee_1"})
    proposal = "Shall I change the payment of order #W0000001 to credit_card_1 (yes/no)?"
    turn = Turn("Yes", 1, proposal, "change my payment", evidence=_evidence("change my payment\nYes"))
    refusal = guard.check(
        "modify_pending_order_payment", {"order_id": "#W0000001", "payment_method_id": "credit_card_1"}, turn
    )
    assert refusal and "Not grounded" in refusal
    named = Turn("Yes", 1, proposal, "", evidence=_evidence("pay with my visa ending 4242\nYes"))
    assert (
        guard.check(
            "modify_pending_order_payment",
            {"order_id": "#W0000001", "payment_method_id": "credit_card_1"},
            named,
        )
        is None
    )
    assert isinstance(rules, GuardRules) and "reason" in rules.grounding_free


def test_guard_reads_the_yes_against_the_question_it_answers(retail) -> None:
    """A yes that names another record than the proposal is not a yes (Guard passes the question)."""
    guard = Guard(retail, load_flows("retail").guardrails, {"user_id": "ada_lee_1"})
    proposal = "Shall I change the payment of order #W0000001 to credit_card_1 (yes/no)?"
    args = {"order_id": "#W0000001", "payment_method_id": "credit_card_1"}
    evidence = _evidence("pay with my visa ending 4242")
    other = Turn("Yes, #W0000002 please", 1, proposal, "", evidence=evidence)
    refusal = guard.check("modify_pending_order_payment", args, other)
    assert refusal and "not explicitly confirmed" in refusal
    same = Turn("Yes, #W0000001 please", 1, proposal, "", evidence=evidence)
    assert guard.check("modify_pending_order_payment", args, same) is None
