"""The loop check and length bound every model-written customer message goes through."""

from __future__ import annotations

import time

import pytest

from concierge.models.replies import bound_reply, remove_loops, same_reply

GUARD = "The customer must be identified (authenticated) before any account access. "


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The customers got this sentence sixty times until max_tokens.
        ("I'm sure you're not alone. " * 60, "I'm sure you're not alone."),
        # SmolLM2 in constrained agent mode (retail dev task 10): a guard error copied until the
        # message bound cut it mid-word.
        (GUARD * 4 + "The customer must beIdent", GUARD.strip()),
        # What comes before and after a loop stays.
        ("Hi there. " + "I can look into that for you. " * 5 + "What is your order id?",
         "Hi there. I can look into that for you. What is your order id?"),
        # A sentence said again and again with other text between: one copy.
        ("Your order is pending. It ships soon. Your order is pending. Thanks. Your order is pending. Bye.",
         "Your order is pending. It ships soon. Thanks. Bye."),
    ],
)
def test_loops_keep_one_copy(text: str, expected: str) -> None:
    reply = bound_reply(text)
    assert reply.looped and reply.text == expected


@pytest.mark.parametrize(
    "text",
    [
        "No, no, no. I will not cancel it.",
        "Item 1: blue T-shirt, size M, $10. Item 2: red T-shirt, size M, $12. Item 3: green T-shirt, size L, $11.",
        "Your order is pending. Your order is pending and I can cancel it for you.",
        "Is there anything else I can help you with?",
    ],
)
def test_ordinary_replies_are_left_alone(text: str) -> None:
    reply = bound_reply(text)
    assert reply.text == text and not reply.changed


def test_length_bound_ends_at_a_sentence() -> None:
    text = " ".join(f"Sentence number {i} says something different." for i in range(100))
    reply = bound_reply(text, 300)
    assert reply.truncated and not reply.looped and len(reply.text) <= 300 and reply.text.endswith(".")


def test_long_outputs_are_checked_quickly() -> None:
    text = " ".join(f"w{i}" for i in range(6000))  # no loop: the worst case for the search
    started = time.perf_counter()
    assert remove_loops(text) == (text, False)
    assert time.perf_counter() - started < 2.0


def test_same_reply_ignores_case_and_punctuation() -> None:
    assert same_reply("Please give me your email.", "please give me your email")
    assert not same_reply("Please give me your email.", "Please give me your order id.")
