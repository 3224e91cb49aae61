"""Grounded writes: every argument of a write comes from the customer or from a record looked up in
this conversation, and only what the customer named is changed.

:func:`ungrounded` takes a write's arguments, what the customer said and the tool results of this
conversation (:class:`Evidence`) and returns the arguments it cannot ground, each with a hint for
the question that would ground it. It is deterministic and fails closed: a value it cannot trace
is ungrounded. Both modes use it: the guided engine before it asks for a confirmation, and
:class:`concierge.support.guardrails.Guard` before any write runs (agent mode included).

Rules, by argument name (the same across domains):

* ``item_ids`` (the items a change or return touches): each must be named by the customer, by its
  item id or its product name ("the keyboard"), or the customer said all of them ("all items",
  "everything"); the item must be in an order looked up in this conversation;
* ``new_item_ids`` (what each item becomes): the variant's item id was said, or every option
  value in which the new variant differs from the item it replaces was said ("clicky", "size 9");
  a price preference alone ("the cheapest") does not pick a variant;
* ``payment_method_id`` / ``payment_id``: the customer named it (id, last four digits, "gift
  card", "paypal", a card brand), it is the only one on record, or the customer asked for "the
  original payment method" and it is the order's original one;
* anything else that is a string (order ids, address fields, countries, flight numbers, dates,
  names): it appears in what the customer said or in a record looked up in this conversation;
  numbers are amounts and counts the tools check, and ``free`` arguments (a categorical reason
  the slot extractor only takes from the customer's words) are not traced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# "All" grounds every item only when it is about items, not qualified ("everything related to gaming").
from concierge.support.toolkit.expr import (  # noqa: E402  (the words for every item)
    ALL_ITEMS,
    item_clause,
    strip_option_names,
)

_CONDITION = re.compile(
    r"[^.;!?\n]*\b(if|unless|in case|otherwise|depending on|provided that)\b(?!\s+(possible|you can|you could|"
    r"needed|necessary|that'?s (ok|okay|fine|possible)|so))[^.;!?\n]*",
    re.I,
)

def conditional_clause(text: str) -> str:
    """The sentence that makes a request depend on a fact ("if it costs more than $3000, ..."), or ""."""
    m = _CONDITION.search(text or "")
    return m.group(0).strip() if m else ""


_DESCRIPTOR = re.compile(
    r"\b(received|came|bought|ordered|got|arrived|delivered|along)\s+with\s+(the|my|a|an)\s+[\w -]{1,30}?(?=[.,;!?\n]|$)",
    re.I,
)
_ORIGINAL_PAYMENT = re.compile(
    r"\b(original|same|initial|existing|current) (payment|card|method|form of payment)", re.I
)
_PAYMENT_ARGS = ("payment_method_id", "payment_id")
_SKIP_KEYS = {"summary"}


@dataclass
class Evidence:
    """What a write may draw on: the customer's words and this conversation's tool results."""

    customer: str = ""
    records: list[Any] = field(default_factory=list)

    @property
    def record_text(self) -> str:
        return "\n".join(
            json.dumps(r, ensure_ascii=False) if not isinstance(r, str) else r for r in self.records
        )

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, Any]]) -> Evidence:
        """Customer messages (role ``user``) and tool results (role ``tool``, JSON or text)."""
        customer, records = [], []
        for m in messages:
            role, content = m.get("role"), m.get("content")
            if role == "user" and content:
                customer.append(str(content))
            elif role == "tool" and content and not str(content).startswith("Error:"):
                try:
                    records.append(json.loads(str(content)))
                except (TypeError, ValueError):
                    records.append(str(content))
        return cls("\n".join(customer), records)

    def dicts(self) -> Iterable[Mapping[str, Any]]:
        """Every dict inside the records (orders, users, products, variants, ...)."""
        stack = list(self.records)
        while stack:
            value = stack.pop()
            if isinstance(value, Mapping):
                yield value
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)

    def order(self, order_id: Any) -> Mapping[str, Any] | None:
        for d in self.dicts():
            if d.get("order_id") == order_id and isinstance(d.get("items"), list):
                return d
        return None

    def orders(self) -> list[Mapping[str, Any]]:
        seen: dict[str, Mapping[str, Any]] = {}
        for d in self.dicts():
            if d.get("order_id") and isinstance(d.get("items"), list):
                seen.setdefault(str(d.get("order_id")), d)
        return list(seen.values())

    def variant(self, item_id: Any) -> Mapping[str, Any] | None:
        for d in self.dicts():
            if str(d.get("item_id")) == str(item_id) and isinstance(d.get("options"), Mapping):
                return d
        return None

    def payment_methods(self) -> list[Mapping[str, Any]]:
        for d in self.dicts():
            methods = d.get("payment_methods")
            if isinstance(methods, Mapping) and methods:
                return [m for m in methods.values() if isinstance(m, Mapping)]
        return []


@dataclass
class Ungrounded:
    """One argument the check could not ground, and what to ask the customer."""

    argument: str
    reason: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"argument": self.argument, "reason": self.reason, "hint": self.hint}


def said(text: str, value: Any) -> bool:
    """Whether ``value`` occurs in ``text`` (case-insensitively, as a whole word for short values)."""
    v = str(value).strip().lower()
    if not v:
        return True
    t = text.lower()
    if len(v) <= 4 or v.isalpha():
        return re.search(r"(?<![\w])" + re.escape(v) + r"(?![\w])", t) is not None
    return v in t or v.lstrip("#") in t


def _in_evidence(value: Any, evidence: Evidence) -> bool:
    return said(evidence.customer, value) or said(evidence.record_text, value)


def named_items(
    items: Sequence[Mapping[str, Any]], text: str, *, order_named: bool = True
) -> list[Mapping[str, Any]]:
    """The items of an order the customer named: by item id, or by product name (or its head noun)
    when that is unambiguous, or all of them ("all items", "everything" - with "except ..." left out)
    when the customer named the order or one of its items. Two items of the same product named once
    ("a vacuum cleaner") are ambiguous: neither is named unless the customer said both or their ids.
    """
    from concierge.support.toolkit.expr import _EXCEPT, _named

    items = [it for it in items if isinstance(it, Mapping)]
    by_id = [it for it in items if str(it.get("item_id")) in text]
    # "the backpack I received with the vacuum cleaner": the vacuum cleaner only describes the backpack.
    text = _DESCRIPTOR.sub(" ", text)
    picked = _named(items, text, "name")
    # "All" counts when said plainly, not inside a condition ("if that is not possible, switch all items").
    plain = _CONDITION.sub(" ", text)
    if ALL_ITEMS.search(plain) and (order_named or picked or by_id):
        cut = _EXCEPT.search(text)
        excluded = _named(items, text[cut.end() :], "name") if cut else []
        return [it for it in items if it not in excluded]
    out = []
    for it in picked:
        same = {str(o.get("item_id")) for o in items if o.get("name") == it.get("name")}
        plural = re.escape(str(it.get("name"))) + r"e?s\b"
        if len(same) > 1 and not re.search(plural + r"|\b(both|all|two|three)\b", text, re.I):
            continue  # which of the two? ask
        out.append(it)
    return [it for it in items if it in by_id or it in out]


def unaddressed(request: str, proposal: str, evidence: Evidence) -> list[str]:
    """Items the customer named in this request (in any order looked up) that the proposed change
    leaves out: the request was only half read, or two requests were taken as one. Items that only
    describe another ("the backpack I received with the vacuum cleaner") are not counted."""
    missing: list[str] = []
    for order in evidence.orders():
        for it in named_items(order.get("items") or [], request, order_named=False):
            if str(it.get("item_id")) in proposal or said(proposal, it.get("name")):
                continue
            missing.append(str(it.get("name")))
    return list(dict.fromkeys(missing))


_CHEAP = re.compile(r"\b(cheapest|cheaper|lowest price|least expensive)\b", re.I)
_DEAR = re.compile(r"\b(most expensive|priciest|highest price)\b", re.I)
_QUESTION = re.compile(
    r"^\s*(what|which|how|are there|is there|do you|does|could you tell)\b|\?\s*$|"
    r"\b(want to know|wondering|tell me|curious|let me know|find out)\b",
    re.I,
)


def _requested(text: str, pattern: re.Pattern[str]) -> bool:
    """A price preference stated in a request (not in a question like "what are the cheapest options?")."""
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
        if pattern.search(sentence) and not _QUESTION.search(sentence):
            return True
    return False


def dont_care(text: str, key: str) -> bool:
    """The customer said an option does not matter ("I do not care about waterproof", "any color")."""
    k = re.escape(str(key).lower())
    t = text.lower()
    return bool(
        re.search(
            r"\b(do not|don't|doesn't|does not|dont) (really )?care (about|for|what|which|if|whether)?[^.;]{0,40}\b"
            + k,
            t,
        )
        or re.search(
            r"\b" + k + r"\b[^.;]{0,30}\b(not important|doesn't matter|does not matter|don't matter)", t
        )
        or re.search(r"\bany " + k + r"\b", t)
    )


def _variant_named(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, new_id: Any, text: str, evidence: Evidence
) -> bool:

    if str(new_id) in text:
        return True
    if not new or not old:
        return False
    # Only what the customer said about this item counts ("the helmet in red, the luggage in black").
    others = [it.get("name") for o in evidence.orders() for it in o.get("items") or [] if isinstance(it, Mapping)]
    text = strip_option_names(item_clause(text, old.get("name"), others), [old, new])
    old_opts = {str(k): str(v).lower() for k, v in (old.get("options") or {}).items()}
    changed = {
        str(k): str(v)
        for k, v in (new.get("options") or {}).items()
        if old_opts.get(str(k)) != str(v).lower()
    }
    if not changed:
        return False
    if all(_value_said(text, v) or dont_care(text, k) for k, v in changed.items()):
        return True
    prefer = "cheap" if _requested(text, _CHEAP) else "dear" if _requested(text, _DEAR) else ""
    if not prefer:
        return False
    # "the cheapest one": the customer's criterion picks the variant; it must be the extreme one among
    # the available variants that keep every option value the customer did name.
    variants = _siblings(new_id, evidence)
    said_vals: dict[str, set[str]] = {}
    for v in variants:
        for k, val in (v.get("options") or {}).items():
            if _value_said(text, val):
                said_vals.setdefault(str(k), set()).add(str(val).lower())
    kept = [k for k in old_opts if re.search(r"\b(same|keep(ing)?( the)?|still the same)\s+" + re.escape(k), text, re.I)]
    candidates = [
        v
        for v in variants
        if v.get("available", True)
        and all(str((v.get("options") or {}).get(k, "")).lower() == old_opts[k] for k in kept)
        and str(v.get("item_id")) != str(old.get("item_id"))
        and all(str((v.get("options") or {}).get(k, "")).lower() in vals for k, vals in said_vals.items())
    ]
    if not candidates:
        return False
    prices = [float(v.get("price", 0) or 0) for v in candidates]
    target = min(prices) if prefer == "cheap" else max(prices)
    return abs(float(new.get("price", 0) or 0) - target) < 1e-6


def _value_said(text: str, value: Any) -> bool:
    """An option value the customer said: exactly when it has digits ("1 liter" is not "1.5 liters")."""
    from concierge.support.toolkit.expr import mentions

    if re.search(r"\d", str(value)):
        return said(text, value)
    return mentions(text, value) or said(text, value)


def _siblings(item_id: Any, evidence: Evidence) -> list[Mapping[str, Any]]:
    """The variants of the product that has variant ``item_id`` (from a product record looked up)."""
    for d in evidence.dicts():
        variants = d.get("variants")
        if isinstance(variants, Mapping) and str(item_id) in {str(k) for k in variants}:
            return [v for v in variants.values() if isinstance(v, Mapping)]
    return []


def _payment_grounded(value: Any, arguments: Mapping[str, Any], evidence: Evidence) -> bool:
    from concierge.support.toolkit.expr import find_payment

    text = evidence.customer
    if said(text, value):
        return True
    methods = evidence.payment_methods()
    if len(methods) == 1 and methods[0].get("id") == value:
        return True
    if methods and find_payment(methods, text) == value:
        return True
    order = evidence.order(arguments.get("order_id"))
    history = (order or {}).get("payment_history") or []
    original = history[0].get("payment_method_id") if history and isinstance(history[0], Mapping) else None
    return bool(_ORIGINAL_PAYMENT.search(text)) and original == value


def _payment_hint(evidence: Evidence) -> str:
    ids = [str(m.get("id")) for m in evidence.payment_methods() if m.get("id")]
    if not ids:
        return "which payment method to use"
    return "which payment method to use: " + " or ".join(f"'{i}'" for i in ids)


def ungrounded(
    tool: str,
    arguments: Mapping[str, Any],
    evidence: Evidence,
    *,
    free: Iterable[str] = (),
) -> list[Ungrounded]:
    """The arguments of the write ``tool`` that neither the customer nor a looked-up record supports."""
    free_args = set(free) | _SKIP_KEYS
    problems: list[Ungrounded] = []
    text = evidence.customer
    order = evidence.order(arguments.get("order_id")) if "order_id" in arguments else None
    for name, value in arguments.items():
        if name in free_args or value in (None, "", []):
            continue
        if name == "item_ids" and isinstance(value, list):
            items = [it for it in (order or {}).get("items", []) if isinstance(it, Mapping)]
            named = {
                str(it.get("item_id"))
                for it in named_items(items, text, order_named=said(text, arguments.get("order_id", "")))
            }
            unnamed = [str(v) for v in value if str(v) not in named]
            if not said(text, arguments.get("order_id", "")):
                # Named by product only: another looked-up order in the same state (where the same change
                # could be made) with the same product makes it ambiguous.
                others = {
                    str(i.get("name"))
                    for o in evidence.orders()
                    if o.get("order_id") != arguments.get("order_id")
                    and o.get("status") == (order or {}).get("status")
                    for i in o.get("items") or []
                    if isinstance(i, Mapping)
                }
                unnamed += [
                    str(it.get("item_id"))
                    for it in items
                    if str(it.get("item_id")) in named
                    and str(it.get("item_id")) not in text
                    and str(it.get("name")) in others
                    and str(it.get("item_id")) in {str(v) for v in value}
                ]
            if unnamed or order is None:
                names = [str(it.get("name")) for it in items if str(it.get("item_id")) in unnamed]
                problems.append(
                    Ungrounded(
                        name,
                        f"the customer did not name item(s) {', '.join(names or unnamed)}",
                        "which items of order "
                        + str(arguments.get("order_id"))
                        + " you mean"
                        + (f" (it has: {', '.join(str(it.get('name')) for it in items)})" if items else ""),
                    )
                )
            continue
        if name == "new_item_ids" and isinstance(value, list):
            olds = list(arguments.get("item_ids") or [])
            by_id = {
                str(it.get("item_id")): it for it in (order or {}).get("items", []) if isinstance(it, Mapping)
            }
            bad = []
            for i, new_id in enumerate(value):
                old = by_id.get(str(olds[i])) if i < len(olds) else None
                if not _variant_named(old, evidence.variant(new_id), new_id, text, evidence):
                    bad.append(str((old or {}).get("name") or new_id))
            if bad:
                problems.append(
                    Ungrounded(
                        name,
                        f"the customer did not say which new option they want for {', '.join(bad)}",
                        f"exactly which new option you want for {', '.join(bad)} (every option that should change)",
                    )
                )
            continue
        if name in _PAYMENT_ARGS:
            if not _payment_grounded(value, arguments, evidence):
                problems.append(
                    Ungrounded(name, f"the customer did not choose {value}", _payment_hint(evidence))
                )
            continue
        for path, leaf in _leaves(name, value):
            key = path.rsplit(".", 1)[-1].split("[")[0]
            if key in free_args or isinstance(leaf, bool | int | float) or leaf in (None, ""):
                continue
            if key in _PAYMENT_ARGS:
                if not _payment_grounded(leaf, arguments, evidence):
                    problems.append(
                        Ungrounded(path, f"the customer did not choose {leaf}", _payment_hint(evidence))
                    )
                continue
            if not _in_evidence(leaf, evidence):
                problems.append(
                    Ungrounded(
                        path,
                        f"{leaf!r} is neither what the customer said nor on record",
                        f"the {key.replace('_', ' ')}",
                    )
                )
    return problems


def _leaves(path: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(f"{path}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(f"{path}[{i}]", v)
    else:
        yield path, value


def describe(problems: Sequence[Ungrounded]) -> str:
    return "; ".join(f"{p.argument}: {p.reason}" for p in problems)
