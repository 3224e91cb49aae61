"""Training data for in-house models: JSON lines with a schema, a content hash and a sidecar.

Every line is one example in OpenAI chat format (``messages``; the model learns the assistant
turns, and the last message is always the assistant's) plus fields of its kind:

* ``guided``: ``{"kind": "guided", "id", "task_id", "turn", "transcript": [{role, content}],
  "command": {"intent", "slots"}, "messages": [system, user, assistant]}`` — the guided-mode
  command the model must produce for the customer's latest message (``turn`` says which:
  opening, identify, order_id, reason, confirm, followup). ``messages`` is
  :func:`command_messages` of the transcript plus the command as JSON.
* ``agent``: ``{"kind": "agent", "id", "task_id", "messages": [...], "tools": [...]}`` — a
  tool-calling trajectory (assistant ``tool_calls`` and ``tool`` results) from a gold replay.
* ``shop``: ``{"kind": "shop", "id", "turns": [str], "query": {...}, "messages"}`` — a shopper's
  request and the structured query JSON (``concierge.shop.query.model_schema``) that answers it.
* ``distilled``: ``{"kind": "distilled", "id", "teacher", "messages": [...], "tools"?}`` — a
  prompt answered by a stronger model through the hub (:func:`distill`).

``<file>.meta.json`` beside the data holds ``{kind, count, sha256, source, counts, created}``;
``sha256`` is over the canonical lines (keys sorted, compact separators, one per line), so the
same examples always hash the same whatever the JSON formatting of the file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from concierge.support.guided.command import NO_INTENT, PROMPT_VERSION, command_messages
from concierge.support.tasks import Task

# --------------------------------------------------------------------------- schemas

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name", "arguments"],
                        "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
                    },
                },
            },
        },
    },
}
_MESSAGES = {"type": "array", "minItems": 2, "items": _MESSAGE}
_TRANSCRIPT = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": ["user", "assistant"]}, "content": {"type": "string"}},
        "additionalProperties": False,
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "guided": {
        "type": "object",
        "required": ["kind", "id", "task_id", "turn", "transcript", "command", "messages"],
        "properties": {
            "kind": {"const": "guided"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "turn": {"enum": ["opening", "identify", "order_id", "reason", "confirm", "followup"]},
            "transcript": _TRANSCRIPT,
            "command": {
                "type": "object",
                "required": ["intent", "slots"],
                "properties": {"intent": {"type": "string"}, "slots": {"type": "object"}},
                "additionalProperties": False,
            },
            "messages": _MESSAGES,
        },
        "additionalProperties": False,
    },
    "agent": {
        "type": "object",
        "required": ["kind", "id", "task_id", "messages", "tools"],
        "properties": {
            "kind": {"const": "agent"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "messages": _MESSAGES,
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    },
    "shop": {
        "type": "object",
        "required": ["kind", "id", "turns", "query", "messages"],
        "properties": {
            "kind": {"const": "shop"},
            "id": {"type": "string", "minLength": 1},
            "turns": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "query": {"type": "object"},
            "messages": _MESSAGES,
        },
        "additionalProperties": False,
    },
    "distilled": {
        "type": "object",
        "required": ["kind", "id", "teacher", "messages"],
        "properties": {
            "kind": {"const": "distilled"},
            "id": {"type": "string", "minLength": 1},
            "teacher": {"type": "string"},
            "messages": _MESSAGES,
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    },
}
_VALIDATORS = {kind: jsonschema.Draft202012Validator(schema) for kind, schema in SCHEMAS.items()}


class DatasetError(ValueError):
    """A dataset that does not match its schema: one line naming the file and line."""


def validate_record(record: Any, where: str = "record") -> None:
    """Raise :class:`DatasetError` (naming ``where``) unless ``record`` matches its kind's schema."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    kind = record.get("kind")
    if kind not in _VALIDATORS:
        raise DatasetError(f"{where}: kind must be one of {', '.join(SCHEMAS)}, got {kind!r}")
    error = jsonschema.exceptions.best_match(_VALIDATORS[kind].iter_errors(record))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise DatasetError(f"{where}: {kind} record, field {path}: {error.message}")
    messages = record["messages"]
    if messages[-1].get("role") != "assistant":
        raise DatasetError(f"{where}: {kind} record, the last message must be the assistant's (the target)")
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and not message.get("content") and not message.get("tool_calls"):
            raise DatasetError(f"{where}: {kind} record, messages/{i}: assistant message without content")


def canonical_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_hash(records: Iterable[dict[str, Any]]) -> str:
    """sha256 over the canonical lines, in order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(canonical_line(record).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


@dataclass
class DatasetInfo:
    path: Path
    kind: str
    count: int
    sha256: str
    counts: dict[str, int]


def write_dataset(
    path: Path | str, records: Sequence[dict[str, Any]], *, source: dict[str, Any] | None = None
) -> DatasetInfo:
    """Validate and write ``records`` as JSON lines, plus the ``.meta.json`` sidecar."""
    path = Path(path)
    if not records:
        raise DatasetError(f"{path}: no examples to write")
    for i, record in enumerate(records, 1):
        validate_record(record, f"{path}: example {i}")
    kinds = Counter(r["kind"] for r in records)
    kind = next(iter(kinds)) if len(kinds) == 1 else "mixed"
    counts = dict(Counter(f"{r['kind']}:{r.get('turn', 'all')}" for r in records))
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [canonical_line(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    digest = content_hash(records)
    meta = {
        "kind": kind,
        "count": len(records),
        "sha256": digest,
        "counts": counts,
        "source": source or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_path(path).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return DatasetInfo(path, kind, len(records), digest, counts)


def read_dataset(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate a JSON-lines dataset; the first bad line raises :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            validate_record(record, f"{path}:{number}")
            records.append(record)
    if not records:
        raise DatasetError(f"{path}: no examples")
    return records


def dataset_hash(path: Path | str) -> str:
    """The content hash of a dataset file (recomputed, not read from the sidecar)."""
    return content_hash(read_dataset(path))


# --------------------------------------------------------------------------- guided commands

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
            "concierge.train.datasets.ACTION_INTENTS / COMMAND_SLOTS; align the tables"
        )


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


def _stated_slots(text: str, script: _Script, request: _Request | None, flows: Any) -> dict[str, Any]:
    """The slot values the customer's message states (grounded in the text, in flows order)."""
    from concierge.support.guided import extract_slot

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
        from concierge.support.guided.slots import _ADDRESS

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


# --------------------------------------------------------------------------- agent trajectories


def agent_examples(
    tasks: Sequence[Task], domain_factory: Callable[[], Any], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Tool-calling trajectories (OpenAI format) from each task's gold actions on a fresh database.

    The customer opens as in :func:`guided_examples`; every gold action becomes an assistant
    ``tool_calls`` message and its ``tool`` result (the real output of the domain's tool, errors
    as ``Error: ...``); writes are preceded by a confirmation exchange, as the policy requires.
    """
    from types import SimpleNamespace

    from concierge.support.agent import ToolAgent

    records: list[dict[str, Any]] = []
    for task in tasks:
        domain = domain_factory()
        domain.apply_initial_state(task.initial_state)
        rng = random.Random(f"{seed}:{task.id}")
        script = _v1_script(task, rng) or _free_script(task)
        if script is None or not task.actions:
            continue
        agent = ToolAgent(domain, None)
        opening = (
            " ".join(r.text for r in script.requests if r.intent != NO_INTENT) or script.requests[0].text
        )
        identity = "" if _says_identity(opening, script) else f" {script.identity_text}"
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": agent.system_prompt(SimpleNamespace(user_id=None))},
            {"role": "user", "content": f"{opening}{identity}".strip()},
        ]
        for n, action in enumerate(task.actions):
            arguments = json.dumps(action.arguments, ensure_ascii=False)
            if domain.is_write(action.name) and action.name != "transfer_to_human_agents":
                messages.append(
                    {
                        "role": "assistant",
                        "content": f"To confirm, I will run {action.name} with {arguments}. Shall I proceed (yes/no)?",
                    }
                )
                messages.append({"role": "user", "content": "Yes, please proceed."})
            call_id = f"call_{n}"
            messages.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": action.name, "arguments": arguments},
                        }
                    ],
                }
            )
            outcome = domain.execute(action.name, action.arguments)
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "name": action.name, "content": outcome.content}
            )
        messages.append({"role": "assistant", "content": "Is there anything else I can help you with?"})
        records.append(
            {
                "kind": "agent",
                "id": f"{task.id}:agent",
                "task_id": task.id,
                "messages": messages,
                "tools": domain.openai_tools(),
            }
        )
    return records


# --------------------------------------------------------------------------- shop query understanding


def shop_examples(requests: Sequence[dict[str, Any]], vocab: Any) -> list[dict[str, Any]]:
    """Query-understanding examples from written shopper requests (``tests/shop_requests.yaml`` style).

    The target is the JSON the shop's model writes (:func:`concierge.shop.query.model_schema`), filled
    from the request's written expectations: one category when the request names one, the price
    bounds, single-valued attributes, exclusions, occasion and sort. Single-turn requests only: for a
    refinement the expectations describe the whole conversation, not the last message.
    """
    from concierge.shop.query import model_request, model_schema

    schema = model_schema(vocab)
    categories = set(schema["properties"]["category"]["enum"]) - {None}
    names = set(schema["properties"]["attributes"]["items"]["properties"]["name"]["enum"])
    records = []
    for request in requests:
        turns = [str(t) for t in request.get("turns") or []]
        if len(turns) != 1:
            continue
        expect = request.get("expect") or {}
        fields = expect.get("query") or {}
        cats = expect.get("categories") or []

        def number(value: Any) -> float | int | None:
            return None if value is None else (int(value) if float(value).is_integer() else float(value))

        attributes = [
            {"name": name, "value": str(values[0])}
            for name, values in (expect.get("attributes") or {}).items()
            if name in names and isinstance(values, list) and len(values) == 1
        ][:4]
        exclusions = [str(w) for w in expect.get("exclude_words") or []]
        for values in (expect.get("exclude_attributes") or {}).values():
            exclusions += [str(v) for v in values]
        query = {
            "keywords": "",
            "category": cats[0] if len(cats) == 1 and cats[0] in categories else None,
            "price_min": number(fields.get("price_min", expect.get("price_min"))),
            "price_max": number(fields.get("price_max", expect.get("price_max"))),
            "attributes": attributes,
            "occasion": fields.get("occasion"),
            "exclusions": exclusions[:3],
            "sort": fields.get("sort", "relevance"),
        }
        messages = model_request([{"role": "user", "content": turns[0]}], vocab, None)["messages"]
        messages.append({"role": "assistant", "content": json.dumps(query, ensure_ascii=False)})
        records.append(
            {
                "kind": "shop",
                "id": str(request.get("id") or len(records)),
                "turns": turns,
                "query": query,
                "messages": messages,
            }
        )
    return records


def demo_shop_vocabulary(seed: int = 7, n_products: int = 800) -> Any:
    """The vocabulary of the generated demo store the written requests are about."""
    from concierge.shop.catalog import Catalog
    from concierge.shop.demo_store import generate_demo_store
    from concierge.shop.query import ShopVocabulary

    products, _ = generate_demo_store(seed=seed, n_products=n_products, n_shoppers=10)
    return ShopVocabulary(Catalog.from_records(products, tenant="demo", name="demo"))


# --------------------------------------------------------------------------- distillation


def distill(
    teacher_alias: str,
    hub: Any,
    prompts: Iterable[dict[str, Any] | Sequence[dict[str, Any]]],
    *,
    defaults: dict[str, Any] | None = None,
    on_error: str = "skip",
) -> list[dict[str, Any]]:
    """Label prompts with a stronger model through the hub: one ``distilled`` record per answer.

    A prompt is a chat request dict (``messages``, optional ``tools``, ``response_format`` ...) or
    a bare message list; ``defaults`` fills request fields a prompt leaves out (e.g. temperature).
    A failed call or an empty answer is skipped (``on_error="raise"`` re-raises instead).
    """
    records: list[dict[str, Any]] = []
    for index, prompt in enumerate(prompts):
        request = dict(prompt) if isinstance(prompt, dict) else {"messages": list(prompt)}
        request = {"temperature": 0, **(defaults or {}), **request}
        try:
            response = hub.chat(teacher_alias, request)
        except Exception:
            if on_error == "raise":
                raise
            continue
        message = ((response.get("choices") or [{}])[0].get("message")) or {}
        answer: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            answer["tool_calls"] = [
                {"id": c.get("id") or f"call_{i}", "type": "function", "function": dict(c["function"])}
                for i, c in enumerate(message["tool_calls"])
            ]
        if not answer["content"] and not answer.get("tool_calls"):
            if on_error == "raise":
                raise DatasetError(f"teacher {teacher_alias!r} gave an empty answer to prompt {index}")
            continue
        record: dict[str, Any] = {
            "kind": "distilled",
            "id": f"distill:{index}",
            "teacher": teacher_alias,
            "messages": [*request["messages"], answer],
        }
        if request.get("tools"):
            record["tools"] = request["tools"]
        records.append(record)
    return records


# --------------------------------------------------------------------------- one entry point

KINDS = ("guided", "agent", "shop")


def build_dataset(
    kind: str,
    tasks_path: Path | str,
    out: Path | str,
    *,
    domain: str = "retail",
    data_dir: Path | str | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> DatasetInfo:
    """Build a ``guided`` or ``agent`` dataset from a task file and write it (with its sidecar)."""
    from concierge.support.tasks import load_tasks

    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    tasks_path = Path(tasks_path)
    if not tasks_path.is_file():
        raise DatasetError(f"{tasks_path}: task file not found")
    if kind == "shop":
        import yaml

        requests = yaml.safe_load(tasks_path.read_text(encoding="utf-8")) or []
        if not isinstance(requests, list):
            raise DatasetError(f"{tasks_path}: expected a YAML list of shopper requests")
        records = shop_examples(requests[: limit or None], demo_shop_vocabulary())
        source = {
            "requests": str(tasks_path),
            "store": "demo (seed 7, 800 products)",
            "builder": "concierge.train.datasets:shop",
        }
        return write_dataset(out, records, source=source)
    tasks = load_tasks(tasks_path)[: limit or None]
    source = {
        "tasks": str(tasks_path),
        "tasks_sha256": hashlib.sha256(tasks_path.read_bytes()).hexdigest(),
        "domain": domain,
        "seed": seed,
        "builder": f"concierge.train.datasets:{kind}",
    }
    if kind == "guided":
        from concierge.support.guided import load_flows

        flows = load_flows(domain)
        records = guided_examples(tasks, flows, seed=seed)
        source["prompt"] = PROMPT_VERSION
    else:
        from concierge.support.domains import load_domain

        load_domain(domain, data_dir)  # fails here, clearly, if the domain needs a --data-dir
        records = agent_examples(tasks, lambda: load_domain(domain, data_dir), seed=seed)
    return write_dataset(out, records, source=source)
