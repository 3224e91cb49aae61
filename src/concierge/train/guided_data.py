"""Guided-mode command examples: conversation prefixes from support tasks and the gold ``{intent, slots}``
the model must produce for the customer's latest message, on the compact training prompt
(:func:`concierge.support.guided.command.command_messages`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any

from concierge.support.guided.command import NO_INTENT, command_messages
from concierge.support.guided.slots import _ADDRESS, extract_slot
from concierge.support.tasks import Task
from concierge.train.customer_scripts import (
    ACTION_INTENTS,
    _free_script,
    _Request,
    _says_identity,
    _Script,
    _v1_script,
)
from concierge.train.records import DatasetError

# Slots a gold command may carry (flows slot names), each only when the customer's message states it.
COMMAND_SLOTS = ("email", "first_name", "last_name", "zip", "order_id", "reason", "address", "item_ids")
IDENTIFY_INTENT = "identify"

_ORDER_RE = re.compile(r"(?<![\w#])#?(W\d{7})\b")
_ITEM_RE = re.compile(r"\b(\d{10})\b")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def command_json(command: dict[str, Any], flows: Any) -> str:
    """A command as the model should write it: intent first, slots in the schema's order.

    llama.cpp's JSON-schema grammar fixes the order of object keys, so the training target must
    use that order too.
    """
    slots = command.get("slots") or {}
    ordered = {name: slots[name] for name in flows.slots if name in slots}
    return json.dumps({"intent": command["intent"], "slots": ordered}, ensure_ascii=False)


def check_alignment(flows: Any) -> None:
    """Fail clearly if the mapping tables name intents or slots the flows file lacks."""
    intents = set(flows.intents) | {NO_INTENT}
    missing = sorted({i for i in ACTION_INTENTS.values() if i not in intents} | ({IDENTIFY_INTENT} - intents))
    slots = sorted(s for s in COMMAND_SLOTS if s not in flows.slots)
    if missing or slots:
        raise DatasetError(
            f"flows for {flows.domain!r} lack intents {missing} / slots {slots} used by "
            "concierge.train.customer_scripts.ACTION_INTENTS / concierge.train.guided_data.COMMAND_SLOTS; "
            "align the tables"
        )



def _stated_slots(text: str, script: _Script, request: _Request | None, flows: Any) -> dict[str, Any]:
    """The slot values the customer's message states (grounded in the text, in flows order)."""
    lowered = text.lower()
    # Names inside an email address are not stated names.
    without_emails = _EMAIL_RE.sub(" ", lowered)
    slots: dict[str, Any] = {}
    for key in ("email", "first_name", "last_name", "zip"):
        value = script.identity.get(key)
        haystack = lowered if key == "email" else without_emails
        if value and re.search(r"(?<![\w.])" + re.escape(value.lower()) + r"(?![\w])", haystack):
            slots[key] = value
    orders = _ORDER_RE.findall(text)
    if orders:
        want = (request.order_id or "").lstrip("#") if request else ""
        slots["order_id"] = "#" + (want if want in orders else orders[0])
    if request is not None and request.intent == "cancel_order":
        reason = request.reason or extract_slot(flows.slots["reason"], text)
        if reason and extract_slot(flows.slots["reason"], text) == reason:
            slots["reason"] = reason
    if request is not None and request.address and request.address.lower() in lowered:
        slots["address"] = request.address
    elif request is not None and request.intent in ("modify_order_address", "update_user_address"):
        m = _ADDRESS.search(text)
        if m:
            slots["address"] = m.group(0).strip()
    items = list(dict.fromkeys(_ITEM_RE.findall(text)))
    if items:
        slots["item_ids"] = items
    return {k: slots[k] for k in flows.slots if k in slots}



def _confirm_text(request: _Request) -> str:
    what = {
        "cancel_order": f"cancel order {request.order_id}",
        "return_items": f"return the items from order {request.order_id}",
        "change_items": f"change the items of order {request.order_id}",
        "modify_order_address": f"ship order {request.order_id} to {request.address}",
        "modify_payment": f"change the payment method of order {request.order_id}",
        "update_user_address": "change your default address",
    }.get(request.intent, "make this change")
    return f"To confirm: {what}. Shall I proceed (yes/no)?"


def _done_text(request: _Request) -> str:
    return f"Done: your request for order {request.order_id or ''} is complete. Is there anything else I can help you with?"



def guided_examples(tasks: Sequence[Task], flows: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """Command examples for guided mode: conversation prefixes and the gold ``{intent, slots}``.

    Per task: the opening request (with or without identity and order id), the identity reply
    after the agent asks, the order id or cancellation reason when asked, the confirmation
    ("yes" -> intent none), and each further request after "anything else?". Synthetic τ-bench
    v1 instructions are rephrased from templates; free-text τ² instructions go through
    :class:`~concierge.support.users.ScriptedUser`. Tasks with no gold request are skipped for
    the opening (their gold intent is unknowable from the actions).
    """
    check_alignment(flows)
    identify_ask = str(flows.identify.get("ask") or "Could you verify your identity?")
    reason_ask = str(flows.slots["reason"].get("ask") or "Why?")
    order_ask = str(flows.slots["order_id"].get("ask") or "Which order?")
    greeting = flows.message("greeting")
    records: list[dict[str, Any]] = []

    def add(
        task: Task, turn: str, transcript: list[dict[str, str]], intent: str, slots: dict[str, Any]
    ) -> None:
        command = {"intent": intent, "slots": slots}
        messages = command_messages(flows, transcript)
        messages.append({"role": "assistant", "content": command_json(command, flows)})
        records.append(
            {
                "kind": "guided",
                "id": f"{task.id}:{turn}:{len(records)}",
                "task_id": task.id,
                "turn": turn,
                "transcript": [dict(m) for m in transcript],
                "command": {"intent": intent, "slots": slots},
                "messages": messages,
            }
        )

    for task in tasks:
        rng = random.Random(f"{seed}:{task.id}")
        script = _v1_script(task, rng)
        free = script is None
        if script is None:
            script = _free_script(task)
        if script is None:
            continue
        convo: list[dict[str, str]] = []
        if rng.random() < 0.3:
            convo.append({"role": "assistant", "content": greeting})
        first = script.requests[0]
        identified = False
        if free:
            # τ² openings come as ScriptedUser says them (identity inside when the task gives it).
            opening = first.text
            identified = _says_identity(opening, script)
        else:
            style = rng.random()
            if style < 0.12:
                # Identity only first: "identify", then the request after the agent's welcome.
                convo.append({"role": "user", "content": script.identity_opening})
                add(
                    task,
                    "opening",
                    convo,
                    IDENTIFY_INTENT,
                    _stated_slots(convo[-1]["content"], script, None, flows),
                )
                name = script.identity.get("first_name", "")
                convo.append(
                    {
                        "role": "assistant",
                        "content": f"Thank you, {name}, I have found your account. How can I help you today?",
                    }
                )
                identified = True
                opening = first.text
            elif style < 0.55:
                inline = script.identity_text
                if inline.startswith(("Sure", "It's")):
                    rest = script.identity_opening.split(", ", 1)[-1]
                    inline = rest[:1].upper() + rest[1:]
                opening = f"{rng.choice(['Hi!', 'Hello.', 'Hi there.', ''])} {first.text} {inline}".strip()
                identified = True
            else:
                opening = f"{rng.choice(['Hi!', 'Hello.', 'Hi there.', ''])} {first.text}".strip()
            # Some openings say more than one request at once, as customers do.
            if len(script.requests) > 1 and rng.random() < 0.25:
                opening += " " + script.requests[1].text
        convo.append({"role": "user", "content": opening})
        if first.intent != NO_INTENT:
            turn = "followup" if records and records[-1]["task_id"] == task.id else "opening"
            add(task, turn, convo, first.intent, _stated_slots(opening, script, first, flows))
        if not identified:
            convo.append({"role": "assistant", "content": identify_ask})
            convo.append({"role": "user", "content": script.identity_text})
            add(task, "identify", convo, NO_INTENT, _stated_slots(script.identity_text, script, None, flows))
        if free or first.intent == NO_INTENT:
            continue  # free-text follow-ups cannot be split per request reliably
        for index, request in enumerate(script.requests):
            if index > 0:
                convo.append({"role": "assistant", "content": _done_text(script.requests[index - 1])})
                convo.append({"role": "user", "content": request.text})
                add(
                    task,
                    "followup",
                    convo,
                    request.intent,
                    _stated_slots(request.text, script, request, flows),
                )
            said = _stated_slots(request.text, script, request, flows)
            if "order_id" not in said and request.order_id:
                convo.append({"role": "assistant", "content": order_ask})
                answer = rng.choice(
                    [f"It's {request.order_id}.", f"The order id is {request.order_id}.", request.order_id]
                )
                convo.append({"role": "user", "content": answer})
                add(task, "order_id", convo, NO_INTENT, _stated_slots(answer, script, request, flows))
            if request.intent == "cancel_order" and "reason" not in said and request.reason_text:
                convo.append({"role": "assistant", "content": reason_ask})
                convo.append({"role": "user", "content": request.reason_text})
                add(
                    task,
                    "reason",
                    convo,
                    NO_INTENT,
                    _stated_slots(request.reason_text, script, request, flows),
                )
            if rng.random() < 0.35:
                convo.append({"role": "assistant", "content": _confirm_text(request)})
                answer = rng.choice(["Yes, please proceed.", "Yes.", "yes please", "Yes, go ahead."])
                convo.append({"role": "user", "content": answer})
                add(task, "confirm", convo, NO_INTENT, {})
    return records
