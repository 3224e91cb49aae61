"""Several changes in one conversation happen together or not at all (guided mode, rules alone).

A customer who asks for two changes gets one confirmation that names both; a real yes makes both,
anything else makes neither. When one of the requests cannot be worked out (a change no flow
recognises, an item named in a request that the proposal leaves out) nothing is changed and a person
is offered: a half-done set of changes is a wrong database, not half a right one. The database is
asserted before and after on a tiny synthetic τ²-shaped store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from concierge.support.domains import load_domain
from concierge.support.grounding import Evidence, unaddressed
from concierge.support.guardrails import Guard
from concierge.support.guided import GuidedAgent
from concierge.support.guided.flows import load_flows
from concierge.support.guided.slots import RuleExtractor
from helpers.retail_db import BACKPACK, EMAIL, write_retail_db

TWO_CHANGES = (
    f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake. "
    "I also want to return the backpack from order #W0000002, refund to my visa ending 4242."
)


@pytest.fixture()
def retail(tmp_path: Path):
    return load_domain("retail", write_retail_db(tmp_path))


def _talk(domain, *messages: str) -> list:
    agent, state = GuidedAgent(domain, use_model=False), {}
    return [agent.respond(state, text) for text in messages]


def _writes(replies) -> list[tuple[str, str]]:
    return [
        (a["tool"], a["arguments"].get("order_id"))
        for r in replies
        for a in r.actions
        if a.get("kind") == "write" and a.get("ok")
    ]


def test_two_changes_get_one_confirmation_naming_both_and_a_yes_makes_both(retail) -> None:
    before = retail.snapshot()
    first = _talk(retail, TWO_CHANGES)
    assert retail.diff(before) == {}  # nothing before the yes
    ask = first[0].message
    assert "#W0000003" in ask and "#W0000002" in ask and "both" in ask
    replies = _talk(retail, TWO_CHANGES, "Yes, please proceed.")
    assert _writes(replies) == [
        ("cancel_pending_order", "#W0000003"),
        ("return_delivered_order_items", "#W0000002"),
    ]
    orders = retail.db["orders"]
    assert orders["#W0000003"]["status"] == "cancelled"
    assert orders["#W0000002"]["status"] == "return requested"
    assert orders["#W0000002"]["return_items"] == [BACKPACK]
    assert orders["#W0000001"]["status"] == "pending"  # the order nobody mentioned is untouched


@pytest.mark.parametrize(
    "answer",
    ["No, leave it.", "Sure, wait, actually no, do not do it.", "Yes, but only the backpack.", "How much will I get back?"],
)
def test_anything_but_a_plain_yes_to_the_plan_changes_nothing(retail, answer) -> None:
    before = retail.snapshot()
    replies = _talk(retail, TWO_CHANGES, answer)
    assert _writes(replies) == []
    assert retail.diff(before) == {}


def test_a_change_no_flow_recognises_holds_the_others_back_and_a_person_is_offered(retail) -> None:
    before = retail.snapshot()
    replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please return the backpack from order #W0000002, refund to my visa "
        "ending 4242. I also want to update my loyalty tier to gold.",
        "Yes please.",
    )
    assert _writes(replies) == []
    assert retail.diff(before) == {}
    assert "loyalty tier" in replies[0].message and "human agent" in replies[0].message
    assert "Shall I proceed" not in replies[0].message  # no yes is asked for a partial set
    assert replies[1].status == "handoff"  # the yes accepts the offered person


def test_a_single_change_still_gets_its_own_confirmation(retail) -> None:
    replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake.",
        "Yes, please proceed.",
    )
    assert "changes together" not in replies[0].message
    assert _writes(replies) == [("cancel_pending_order", "#W0000003")]


def test_unaddressed_finds_an_item_a_merged_request_left_out() -> None:
    orders = [
        {"order_id": "#W1", "items": [{"name": "Laptop", "item_id": "11"}]},
        {"order_id": "#W2", "items": [{"name": "Watch", "item_id": "22"}]},
        {"order_id": "#W3", "items": [{"name": "Backpack", "item_id": "33"}, {"name": "Vacuum Cleaner", "item_id": "44"}]},
    ]
    evidence = Evidence("", orders)
    request = "I want to modify the laptop to item 55. I also want to change my watch for one with a black dial."
    assert unaddressed(request, "modify Laptop (item 11) -> item 55", evidence) == ["Watch"]
    assert unaddressed(request, "modify Laptop (item 11); Watch (item 22)", evidence) == []
    # An item that only describes another is not a request of its own.
    described = "I want to return the backpack I received with the vacuum cleaner."
    assert unaddressed(described, "return Backpack (item 33) from order #W3", evidence) == []


def test_uncovered_sentences_are_requests_no_intent_recognises() -> None:
    rules = RuleExtractor(load_flows("retail"))
    text = (
        "I want to return the backpack. I also want to update my loyalty tier to gold. "
        "What is the status of my order? I love your store."
    )
    assert rules.uncovered(text) == ["I also want to update my loyalty tier to gold."]


def test_a_yes_to_a_plan_pays_for_exactly_the_writes_it_listed(retail) -> None:
    """The guard lets one yes pay for the listed writes only: a third change on the same yes is refused."""
    agent, state = GuidedAgent(retail, use_model=False), {}
    agent.respond(state, TWO_CHANGES)
    agent.respond(state, "Yes, please proceed.")
    guard = Guard(retail, agent.rules, state["guard"])
    from concierge.support.agent import current_turn

    extra = guard.call(
        "modify_pending_order_address",
        {"order_id": "#W0000001", "address1": "1 Elm Street", "address2": "", "city": "Toronto",
         "state": "ON", "country": "Canada", "zip": "12345"},
        current_turn(state["messages"]),
    )
    assert extra["ok"] is False and extra["refused"] is True
    assert "already used" in extra["error"] or "confirm" in extra["error"]


def test_a_plan_whose_second_write_fails_is_undone_as_a_whole(retail) -> None:
    """The gift card cannot pay for the order: the cancellation made a moment before is taken back."""
    retail.edit("users", "ada_lee_1")["payment_methods"]["gift_card_2"]["balance"] = 10.0
    before = retail.snapshot()
    replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake. "
        "For order #W0000001, change the payment method to my gift card.",
        "Yes, please proceed.",
    )
    assert "both" in replies[0].message
    writes = [a for a in replies[1].actions if a.get("kind") == "write"]
    assert [(a["tool"], a["ok"]) for a in writes] == [
        ("cancel_pending_order", True),
        ("modify_pending_order_payment", False),
    ]
    assert writes[0]["rolled_back"] is True
    assert retail.diff(before) == {}  # the cancelled order is pending again, nothing else moved
    assert "nothing has been changed" in replies[1].message


def test_item_clause_keeps_each_items_words_apart() -> None:
    from concierge.support.toolkit.expr import item_clause

    text = (
        "I want to exchange the helmet for a medium sized, red, high ventilation type, and I want to "
        "exchange the luggage set to a two-piece black one. Actually, for the helmet, size M please."
    )
    helmet = item_clause(text, "Cycling Helmet", ["Cycling Helmet", "Luggage Set"])
    assert "red" in helmet and "size M" in helmet and "black" not in helmet
    luggage = item_clause(text, "Luggage Set", ["Cycling Helmet", "Luggage Set"])
    assert "black" in luggage and "red" not in luggage
    assert item_clause("swap item 123 for 456", "Desk Lamp", ["Desk Lamp"]) == "swap item 123 for 456"


def test_a_variant_value_said_for_another_item_does_not_ground_this_one() -> None:
    """'7' was said for the umbrella (7 ft), not for the boots: a size-7 boot is not what was asked."""
    from concierge.support.grounding import ungrounded

    boots = {"name": "Hiking Boots", "item_id": "b8", "product_id": "pb", "options": {"size": "8"}}
    umbrella = {"name": "Patio Umbrella", "item_id": "u7", "product_id": "pu", "options": {"size": "7 ft"}}
    order = {"order_id": "#W9", "items": [umbrella, boots], "payment_history": [{"payment_method_id": "gift_card_1"}]}
    product = {"product_id": "pb", "name": "Hiking Boots", "variants": {
        "b7": {"item_id": "b7", "options": {"size": "7"}, "available": True, "price": 1.0},
        "b11": {"item_id": "b11", "options": {"size": "11"}, "available": True, "price": 1.0},
    }}
    said = "Modify Patio Umbrella size 7 ft to 6 ft; Hiking Boots size 8 to 11; via gift_card_1."
    evidence = Evidence(said, [order, product, {"payment_methods": {"gift_card_1": {"id": "gift_card_1"}}}])
    args = {"order_id": "#W9", "item_ids": ["b8"], "payment_method_id": "gift_card_1"}
    assert [p.argument for p in ungrounded("modify_pending_order_items", {**args, "new_item_ids": ["b7"]}, evidence)] == ["new_item_ids"]
    assert ungrounded("modify_pending_order_items", {**args, "new_item_ids": ["b11"]}, evidence) == []


def test_a_request_made_while_a_change_awaits_its_yes_joins_it_in_one_plan(retail) -> None:
    before = retail.snapshot()
    replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake.",
        "Also, I want to return the backpack from order #W0000002, refund to my visa ending 4242.",
    )
    assert "anything else" in replies[0].message  # the proposal asks for the rest first
    assert retail.diff(before) == {}
    assert "#W0000003" in replies[1].message and "#W0000002" in replies[1].message and "both" in replies[1].message
    replies = _talk(
        retail,
        f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake.",
        "Also, I want to return the backpack from order #W0000002, refund to my visa ending 4242.",
        "Yes, please proceed.",
    )
    assert _writes(replies) == [
        ("cancel_pending_order", "#W0000003"),
        ("return_delivered_order_items", "#W0000002"),
    ]


def test_an_option_name_that_holds_both_values_does_not_say_which() -> None:
    """'bagged/bagless' names the option; only the value after it says what the customer wants."""
    from concierge.support.toolkit.expr import best_variant

    current = {"item_id": "v1", "options": {"type": "upright", "bagged/bagless": "bagless"}}
    variants = [
        current,
        {"item_id": "v2", "options": {"type": "canister", "bagged/bagless": "bagged"}, "available": True, "price": 1.0},
        {"item_id": "v3", "options": {"type": "canister", "bagged/bagless": "bagless"}, "available": True, "price": 1.0},
    ]
    said = "Vacuum Cleaner {'type': 'upright', 'bagged/bagless': 'bagless'} to {'type': 'canister'}"
    assert best_variant(variants, current, said, ["v1"])["item_id"] == "v3"


def test_a_replayed_yes_does_not_hold_back_the_next_request(retail) -> None:
    """Stateless clients: the earlier turns are run again with every write refused by the guard. That
    refusal is not a change the agent failed at, so the customer's next request still gets its
    proposal instead of 'I could not work out everything'."""
    agent, state = GuidedAgent(retail, use_model=False), {}
    agent.respond(state, f"Hi, my email is {EMAIL}. Please cancel order #W0000003, I ordered it by mistake.")
    state["guard"]["replaying"] = True
    agent.respond(state, "Yes, please proceed.")
    state["guard"].pop("replaying")
    nxt = agent.respond(state, "Now I want to return the backpack from order #W0000002, refund to my visa ending 4242.")
    assert "Shall I proceed" in nxt.message or "shall I proceed" in nxt.message, nxt.message
    assert "could not work out" not in nxt.message


@pytest.mark.parametrize("lead", ["rules", "model"])
def test_a_change_the_model_alone_reads_into_a_question_is_not_proposed(retail, lead) -> None:
    """The model reads 'which items did I order, what are they made of?' as a return; the customer
    asked for no change, so no change is proposed, whoever leads."""
    import json

    from helpers.hubs import ScriptedHub

    hub = ScriptedHub(default=json.dumps({"intent": "return_items", "slots": {}}))
    agent, state = GuidedAgent(retail, hub, "support-agent", lead=lead), {}
    before = retail.snapshot()
    first = agent.respond(state, f"Hi, my email is {EMAIL}. Which items did I order in #W0000002, and what are they made of?")
    second = agent.respond(state, "Yes, please proceed.")
    assert "proceed" not in first.message.lower(), first.message
    assert [a for r in (first, second) for a in r.actions if a.get("kind") == "write"] == []
    assert retail.diff(before) == {}
    # The same model reading a real request still starts it.
    hub2 = ScriptedHub(default=json.dumps({"intent": "return_items", "slots": {}}))
    agent2, state2 = GuidedAgent(retail, hub2, "support-agent", lead=lead), {}
    asked = agent2.respond(state2, f"Hi, my email is {EMAIL}. I'd like to send back the backpack from #W0000002, refund to my visa ending 4242.")
    assert "#W0000002" in asked.message and "proceed" in asked.message.lower(), asked.message


def test_model_led_a_change_the_model_leaves_out_holds_the_others_back(retail) -> None:
    """Model-led guided mode: the model reads only the cancellation of a message that also asks for a
    return the rules read. Doing the cancellation alone would be half the customer's changes, so nothing
    is changed and a person is offered; in rules-first mode the rules' two requests are carried out."""
    import json

    from helpers.hubs import ScriptedHub, card

    reply = json.dumps({"intent": "cancel_order", "slots": {"email": EMAIL, "order_id": "#W0000003"}})
    before = retail.snapshot()
    hub = ScriptedHub(default=reply, cards=[card("m")])
    agent, state = GuidedAgent(retail, hub, "m", lead="model"), {}
    assert "cancel_order" in agent.flows.intents
    replies = [agent.respond(state, TWO_CHANGES), agent.respond(state, "Yes, please proceed.")]
    assert state["commands"][0]["intents"] == ["cancel_order"]  # the model decided: one request
    assert _writes(replies) == [] and retail.diff(before) == {}
    assert "I could not work out everything you asked for" in replies[0].message
    assert "human agent" in replies[0].message
