"""The cautious customer: yes only to what its instructions ask for, answers only from what it knows."""

from __future__ import annotations

from concierge.support.tasks import task_from_tau2
from concierge.support.users import CautiousUser, ScriptedUser, make_user

TASK = {
    "id": "keyboard",
    "user_scenario": {
        "instructions": {
            "reason_for_call": "You received your order #W2378156 and wish to exchange the mechanical keyboard "
            "for the same one but with clicky switches.",
            "known_info": "You are Yusuf Rossi in zip code 19122.",
            "unknown_info": "You do not remember your email address or your phone number.",
            "task_instructions": "You want to pay any difference with your PayPal account.",
        }
    },
    "evaluation_criteria": {"actions": [], "communicate_info": []},
}


def _user() -> CautiousUser:
    user = make_user("cautious", task_from_tau2(TASK))
    assert isinstance(user, CautiousUser) and user.name == "cautious"
    user.start()
    return user


def test_declines_a_proposal_naming_an_item_not_in_its_instructions() -> None:
    user = _user()
    reply = user.respond(
        "I will exchange the Bluetooth Speaker (color: red) in order #W2378156 for a new one. "
        "Shall I proceed (yes/no)?"
    )
    assert reply is not None and reply.startswith("No") and "Bluetooth Speaker" in reply
    assert user.declined


def test_declines_an_option_value_it_never_mentioned() -> None:
    user = _user()
    reply = user.respond(
        "I will exchange the Mechanical Keyboard (switch type: linear) in order #W2378156. Shall I proceed?"
    )
    assert reply is not None and reply.startswith("No") and "linear" in reply


def test_accepts_a_proposal_that_matches_its_instructions() -> None:
    user = _user()
    reply = user.respond(
        "To confirm: exchange the Mechanical Keyboard (switch type: clicky) in order #W2378156, paying the "
        "difference of $12.50 with PayPal. Shall I proceed (yes/no)?"
    )
    assert reply == "Yes, please proceed."


def test_says_it_does_not_know_what_its_instructions_do_not_say() -> None:
    user = _user()
    assert "don't know" in (user.respond("What is your phone number?") or "")
    assert "don't know" in (user.respond("What is your date of birth?") or "")
    assert "PayPal" in (user.respond("How would you like to pay the price difference?") or "")
    # Identity questions are answered as the scripted customer does.
    assert user.respond("Could you give me your email address?") == (
        "I don't remember my email. My name is Yusuf Rossi and my zip code is 19122."
    )


def test_scripted_stays_the_always_yes_worst_case() -> None:
    scripted = ScriptedUser(task_from_tau2(TASK))
    scripted.start()
    proposal = "I will exchange the Bluetooth Speaker (color: red). Shall I proceed (yes/no)?"
    assert scripted.respond(proposal) == "Yes, please proceed."
    cautious = _user()
    assert cautious.respond(proposal).startswith("No")  # type: ignore[union-attr]


def test_cautious_is_deterministic_and_stops_like_scripted() -> None:
    a, b = _user(), _user()
    messages = ["What is your phone number?", "Done. Is there anything else I can help you with?"]
    assert [a.respond(m) for m in messages] == [b.respond(m) for m in messages]
    assert _user().respond("YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON.") is None


def test_anything_else_gets_the_requests_not_yet_said_then_the_customer_stops() -> None:
    """Both customers say their first four sentences, and the rest when asked "anything else?"; a
    customer that stopped there would leave requests the gold expects unsaid."""
    long_task = {
        **TASK,
        "user_scenario": {
            "instructions": {
                **TASK["user_scenario"]["instructions"],
                "reason_for_call": "You want to cancel order #W1 because it is no longer needed. "
                "You want to return the lamp from order #W2. You want to exchange the keyboard. "
                "You want to update your address. You also want to change the payment of order #W3 to "
                "PayPal. Finally you want to return the mug from order #W4.",
            }
        },
    }
    for kind in ("scripted", "cautious"):
        user = make_user(kind, task_from_tau2(long_task))
        first = user.start()
        assert "#W1" in first and "#W3" not in first
        rest = user.respond("Done. Is there anything else I can help you with?")
        assert rest is not None and "#W3" in rest and "#W4" in rest, kind
        assert user.respond("Done. Is there anything else I can help you with?") is None
