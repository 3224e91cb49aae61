"""What a customer says, scripted from a support task: the requests (with the words the customer uses
for them), the identity and the answers, for the guided and agent example builders.

τ-bench v1 synthetic instructions are rephrased from templates (seeded); free-text τ² instructions
are taken from the task's gold actions.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from typing import Any

from concierge.support.guided.command import NO_INTENT
from concierge.support.tasks import Task

# Gold actions -> guided intents (names from support/domains/retail/flows.yaml). ONE table: align it here when the
# flows file renames an intent; build_guided checks every name against the flows it is given.
ACTION_INTENTS: dict[str, str] = {
    "cancel_pending_order": "cancel_order",
    "exchange_delivered_order_items": "change_items",
    "modify_pending_order_items": "change_items",
    "return_delivered_order_items": "return_items",
    "modify_pending_order_address": "modify_order_address",
    "modify_user_address": "update_user_address",
    "modify_pending_order_payment": "modify_payment",
    "transfer_to_human_agents": "transfer",
}


@dataclass
class _Request:
    """One thing the customer wants, with the words they use for it."""

    intent: str
    text: str  # the customer's sentence(s) asking for it
    order_id: str | None = None
    reason: str | None = None
    address: str | None = None
    reason_text: str | None = None  # the answer when the agent asks for the reason


@dataclass
class _Script:
    """A scripted customer for one task: identity and requests in their own words."""

    identity: dict[str, str]  # email / first_name / last_name / zip the customer can state
    identity_text: str  # the answer when the agent asks who they are
    requests: list[_Request]
    identity_opening: str = ""  # identity alone as a first message


_REASON_WORDS = {
    "no longer needed": ["I no longer need it", "I don't need it anymore", "it is no longer needed"],
    "ordered by mistake": [
        "I ordered it by mistake",
        "it was ordered by mistake",
        "I ordered it by accident",
    ],
}


def _pm_words(pm: str) -> str:
    if pm.startswith("credit_card"):
        return "credit card"
    if pm.startswith("gift_card"):
        return "gift card"
    if pm.startswith("paypal"):
        return "PayPal"
    return "original payment method"


def _options_words(options: dict[str, Any]) -> str:
    return ", ".join(str(v) for v in options.values())


def _order_ref(order: str, rng: random.Random) -> str:
    return order if rng.random() < 0.8 else order.lstrip("#")


def _parse_dicts(text: str) -> list[Any]:
    found = []
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            found.append(ast.literal_eval(m.group(0)))
        except (ValueError, SyntaxError):
            found.append({})
    return found


def _items_phrase(changes: list[tuple[str, dict[str, Any], dict[str, Any]]], rng: random.Random) -> str:
    parts = []
    for name, old, new in changes:
        target = f"one with {_options_words(new)}" if new else "a different option of the same product"
        old_words = f" ({_options_words(old)})" if old and rng.random() < 0.5 else ""
        parts.append(f"the {name.lower()}{old_words} for {target}")
    return " and ".join(parts)


def _v1_request(sentence: str, rng: random.Random) -> _Request | None:
    """A τ-bench v1 synthetic instruction sentence -> the customer's words for it."""
    s = sentence.strip()
    m = re.match(r"Cancel order (#W\d{7}) because (no longer needed|ordered by mistake)", s)
    if m:
        order, reason = m.group(1), m.group(2)
        ref = _order_ref(order, rng)
        why = rng.choice(_REASON_WORDS[reason])
        with_reason = rng.random() < 0.7
        text = rng.choice(
            [
                f"I'd like to cancel my order {ref}" + (f" because {why}." if with_reason else "."),
                f"Please cancel order {ref}" + (f", {why}." if with_reason else "."),
                f"Can you cancel {ref} for me?" + (f" {why[0].upper()}{why[1:]}." if with_reason else ""),
            ]
        )
        return _Request(
            "cancel_order",
            text,
            order,
            reason if with_reason else None,
            reason_text=f"{why[0].upper()}{why[1:]}.",
        )
    m = re.match(r"Return (#W\d{7}) via (\w+): (.*)", s)
    if m:
        order, pm, items = m.group(1), m.group(2), [i.strip() for i in m.group(3).split(";") if i.strip()]
        ref = _order_ref(order, rng)
        names = " and ".join(f"the {i.lower()}" for i in items)
        refund = rng.choice(
            ["", f" Please refund it to my {_pm_words(pm)}.", f" The refund should go to my {_pm_words(pm)}."]
        )
        text = rng.choice(
            [
                f"I want to return {names} from order {ref}.{refund}",
                f"I'd like to return {names} I received in order {ref}.{refund}",
                f"Could I get a refund for {names}? It was order {ref}.{refund}",
            ]
        )
        return _Request("return_items", text, order)
    m = re.match(r"For (#W\d{7}), (exchange|modify) (.*?); via (\w+)", s)
    if m:
        order, verb, body, pm = m.group(1), m.group(2), m.group(3), m.group(4)
        changes = []
        for part in body.split("; "):
            pm_match = re.match(r"(.*?) (\{.*?\}) to (\{.*?\})$", part.strip())
            if not pm_match:
                continue
            dicts = _parse_dicts(part)
            old, new = (dicts + [{}, {}])[:2]
            changes.append((pm_match.group(1), old, new))
        ref = _order_ref(order, rng)
        what = _items_phrase(changes, rng) or "some items"
        pay = rng.choice(["", f" I'll pay any difference with my {_pm_words(pm)}."])
        if verb == "exchange":
            text = rng.choice(
                [
                    f"I received order {ref} and want to exchange {what}.{pay}",
                    f"I'd like to exchange {what} from my order {ref}.{pay}",
                ]
            )
        else:
            text = rng.choice(
                [
                    f"My order {ref} hasn't shipped yet and I want to change {what}.{pay}",
                    f"Can I modify my pending order {ref}? I want to swap {what}.{pay}",
                ]
            )
        return _Request("change_items", text, order)
    m = re.match(r"For (#W\d{7}), change address to (\{.*?\})", s)
    if m:
        order = m.group(1)
        addr = (_parse_dicts(m.group(2)) or [{}])[0]
        parts = [addr.get("address1"), addr.get("address2"), addr.get("city")]
        address = (
            ", ".join(p for p in parts if p) + f", {addr.get('state', '')} {addr.get('zip', '')}".rstrip()
        )
        ref = _order_ref(order, rng)
        text = rng.choice(
            [
                f"Please change the shipping address of order {ref} to {address}.",
                f"I need order {ref} delivered to a different address: {address}.",
                f"Can you ship my order {ref} to {address} instead?",
            ]
        )
        return _Request("modify_order_address", text, order, address=address)
    m = re.match(r"For (#W\d{7}), change payment to (\w+)", s)
    if m:
        order, pm = m.group(1), m.group(2)
        ref = _order_ref(order, rng)
        text = rng.choice(
            [
                f"I want to change the payment method of order {ref} to my {_pm_words(pm)}.",
                f"Can I pay for order {ref} with my {_pm_words(pm)} instead?",
            ]
        )
        return _Request("modify_payment", text, order)
    return None


def _identity_from_task(task: Task) -> dict[str, str]:
    """Identity values the customer knows, from the gold look-up actions (else the user id)."""
    identity: dict[str, str] = {}
    for action in task.actions:
        if action.name == "find_user_id_by_email" and action.arguments.get("email"):
            identity.setdefault("email", str(action.arguments["email"]))
        if action.name == "find_user_id_by_name_zip":
            for key in ("first_name", "last_name", "zip"):
                if action.arguments.get(key):
                    identity.setdefault(key, str(action.arguments[key]))
    return identity


def _v1_script(task: Task, rng: random.Random) -> _Script | None:
    """A script from a τ-bench v1 synthetic instruction; None if the instruction is free text."""
    text = task.instructions
    m = re.match(r"Your name is (\S+) (\S+) and your (zip code|email) is (\S+?)\.\s", text)
    if not m:
        return None
    first, last, what, value = m.groups()
    identity = {"first_name": first, "last_name": last}
    if what == "email":
        identity["email"] = value
        identity_text = rng.choice([f"My email is {value}.", f"It's {value}.", f"Sure, my email is {value}."])
        opening = rng.choice([f"Hi, my email is {value}.", f"Hello, this is {first} {last}, email {value}."])
    else:
        identity["zip"] = value
        identity_text = rng.choice(
            [
                f"My name is {first} {last} and my zip code is {value}.",
                f"I'm {first} {last}, zip code {value}.",
                f"Sure: {first} {last}, {value}.",
            ]
        )
        opening = rng.choice(
            [
                f"Hi, I'm {first} {last} and my zip code is {value}.",
                f"Hello, {first} {last} here, zip {value}.",
            ]
        )
    sentences = re.split(r"(?<=[.;])\s+(?=(?:Cancel|Return|For) )", text[m.end() :])
    requests = [r for r in (_v1_request(s, rng) for s in sentences) if r is not None]
    if not requests:
        return None
    return _Script(identity, identity_text, requests, opening)


def _free_script(task: Task) -> _Script | None:
    """A script for a τ² (free-text) task: ScriptedUser's opening, the gold command's intent."""
    from concierge.support.users import ScriptedUser

    user = ScriptedUser(task)
    writes = [a for a in task.actions if a.name in ACTION_INTENTS and a.name != "transfer_to_human_agents"]
    identity = _identity_from_task(task)
    for key in ("email", "first_name", "last_name", "zip"):
        value = getattr(user, key, None)
        if value and key not in identity:
            identity[key] = str(value)
    opening = user.start().removeprefix("Hi! ").strip()
    requests: list[_Request] = []
    if writes:
        first = writes[0]
        order = first.arguments.get("order_id")
        reason = first.arguments.get("reason")
        requests.append(
            _Request(ACTION_INTENTS[first.name], opening, str(order) if order else None, reason, None)
        )
    if "email" in identity:
        identity_text = f"My email is {identity['email']}."
    elif {"first_name", "last_name", "zip"} <= set(identity):
        identity_text = f"My name is {identity['first_name']} {identity['last_name']} and my zip code is {identity['zip']}."
    else:
        identity_text = user._identity()
    return _Script(identity, identity_text, requests or [_Request(NO_INTENT, opening)])


def _says_identity(text: str, script: _Script) -> bool:
    """Whether ``text`` holds enough identity to look the customer up (email, or zip with a name)."""
    lowered = text.lower()
    return any(script.identity.get(k, "\0").lower() in lowered for k in ("email", "zip"))
