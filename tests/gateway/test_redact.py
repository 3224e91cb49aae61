"""Redaction of emails, phone numbers and card numbers for the request log."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concierge.gateway.redact import CARD, EMAIL, PHONE, luhn_valid, redact, redact_json, redact_obj


def _with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it Luhn-valid."""
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 please", f"card {CARD} please"),
        ("4111-1111-1111-1111", CARD),
        ("4111111111111111", CARD),
        ("amex 378282246310005.", f"amex {CARD}."),
        ("mc 5555555555554444, visa 4012888888881881", f"mc {CARD}, visa {CARD}"),
        ("card 4111 1111 1111 1111 22", f"card {CARD} 22"),  # card next to another number
        ("write to jane.doe+shop@mail.example.co.uk now", f"write to {EMAIL} now"),
        ("noah.muller9847@example.com", EMAIL),
        ("call 617-555-0834", f"call {PHONE}"),
        ("call (617) 555-0834 today", f"call {PHONE} today"),
        ("617.555.0834", PHONE),
        ("1-800-555-0199", PHONE),
        ("+1 617 555 0834", PHONE),
        ("+44 20 7946 0958", PHONE),
        ("+14155552671", PHONE),
        ("+33 (1) 42 68 53 00", PHONE),
    ],
)
def test_redacts(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order #W2378156",  # tau2 retail order id
        "item 1008292230 and product 6086499569",  # 10-digit catalogue ids are not phones
        "order 1234567890123456",  # 16 digits, fails Luhn: an id, not a card
        "tracking 1Z999AA10123456784",
        "placeholder 0000 0000 0000 0000",  # passes Luhn, but all one digit
        "on 2024-05-01 at 10:30",
        "total $1234.56 for 3 items, zip 02139",
        "version 1.2.3.4 on 192.168.100.200",
        "ref 123-456-7890-12",
        "user_id noah_muller_9847",
        "reservation EHGLP3, flight HAT170",
        "math: +5 and 10",
        "",
    ],
)
def test_keeps_non_personal_data(text: str) -> None:
    assert redact(text) == text


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.sampled_from(["", " ", "-"]))
def test_any_luhn_valid_card_is_redacted(body: str, sep: str) -> None:
    number = _with_check_digit(body)
    if len(set(number)) == 1:
        return  # all-same-digit placeholders are deliberately kept
    grouped = sep.join(number[i : i + 4] for i in range(0, len(number), 4)) if sep else number
    assert redact(f"pay with {grouped} thanks") == f"pay with {CARD} thanks"


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_bare_digit_runs_kept_unless_card(number: str) -> None:
    out = redact(f"id {number} end")
    is_card = luhn_valid(number) and len(set(number)) > 1
    assert out == (f"id {CARD} end" if is_card else f"id {number} end")


@given(st.text())
def test_redact_never_crashes_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111-1111")


def test_redact_obj_and_json() -> None:
    value = {"messages": [{"role": "user", "content": "I am bob@example.com"}], "n": 1, "email": None}
    assert redact_obj(value) == {
        "messages": [{"role": "user", "content": f"I am {EMAIL}"}],
        "n": 1,
        "email": None,
    }
    dumped = redact_json({"content": "card 4111111111111111", "tags": ("617-555-0834",)})
    assert json.loads(dumped) == {"content": f"card {CARD}", "tags": [PHONE]}


def test_api_keys_pasted_into_text_are_redacted() -> None:
    from concierge import tenancy

    key = tenancy.KEY_PREFIX + "Tc8o1v18JUFAAMK2-yMHo91e8Vx09a1lBE8jQ6Zuy7U"
    text = f"my key is {key}, and the other one sk-proj-abcdefghijklmnop1234; order ck-1 stays"
    assert redact(text) == "my key is [API_KEY], and the other one [API_KEY]; order ck-1 stays"
