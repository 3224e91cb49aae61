"""Support evaluator: pass^k math, τ² scoring, scripted users, and a full run on homestay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.evals.support_eval import (
    communicated,
    evaluate,
    pass_hat_k,
    run_conversation,
    transcripts_dir_for,
)
from concierge.support.tasks import task_from_tau2, task_from_v1
from concierge.support.users import LLMUser, ScriptedUser, make_user, to_first_person
from helpers.hubs import ScriptedHub

RETAIL_TASK = {
    "id": "demo",
    "user_scenario": {
        "instructions": {
            "reason_for_call": "You received your order #W2378156 and wish to exchange the keyboard. "
            "If the agent asks for confirmation, only exchange the keyboard.",
            "known_info": "You are Yusuf Rossi in zip code 19122.",
            "unknown_info": "You do not remember your email address.",
            "task_instructions": "You are detail-oriented.",
        }
    },
    "evaluation_criteria": {"actions": [], "communicate_info": []},
}


def test_pass_hat_k_hand_example() -> None:
    # 3 tasks, 2 trials: successes 2, 1, 0.
    assert pass_hat_k([2, 1, 0], 2, 1) == pytest.approx((1 + 0.5 + 0) / 3)
    assert pass_hat_k([2, 1, 0], 2, 2) == pytest.approx((1 + 0 + 0) / 3)
    # 4 trials, 3 successes: pass^2 = C(3,2)/C(4,2) = 3/6
    assert pass_hat_k([3], 4, 2) == pytest.approx(0.5)
    assert pass_hat_k([3], 4, 4) == 0.0
    with pytest.raises(ValueError):
        pass_hat_k([1], 2, 3)


def test_communicate_check_matches_tau2() -> None:
    assert communicated("8276.23", ["You get back $8,276.23 in total."])
    assert communicated("Chicago", ["It ships to 943 Maple Drive, chicago."])
    assert not communicated("41.64", ["You save $41.65."])


def test_transcripts_folder_is_next_to_the_output(tmp_path) -> None:
    assert transcripts_dir_for(tmp_path / "run.json") == tmp_path / "run_transcripts"


def test_scripted_user_reads_the_task_and_is_deterministic() -> None:
    task = task_from_tau2(RETAIL_TASK)
    user = ScriptedUser(task)
    assert (user.first_name, user.last_name, user.zip, user.email) == ("Yusuf", "Rossi", "19122", None)
    assert user.order_ids == ["#W2378156"]
    opening = user.start()
    assert "I received my order #W2378156" in opening and "I am Yusuf Rossi" in opening
    assert "agent" not in opening  # instructions about the agent stay private
    replies = [
        user.respond(m)
        for m in (
            "Could you give me your email address?",
            "Which order is it? Please give the order id.",
            "To confirm: exchange the keyboard. Shall I proceed (yes/no)?",
            "May I know the reason: 'no longer needed' or 'ordered by mistake'?",
            "Done. Is there anything else I can help you with?",
        )
    ]
    assert replies[0] == "I don't remember my email. My name is Yusuf Rossi and my zip code is 19122."
    assert replies[1] == "The order id is #W2378156."
    assert replies[2] == "Yes, please proceed."
    assert replies[3] in ("No longer needed.", "Ordered by mistake.")
    assert replies[4] is None
    again = ScriptedUser(task_from_tau2(RETAIL_TASK))
    assert again.start() == opening
    assert [again.respond(m) for m in ("Could you give me your email address?",)] == replies[:1]


def test_scripted_user_for_v1_tasks_and_transfer() -> None:
    task = task_from_v1(
        {
            "user_id": "omar_anderson_3203",
            "instruction": "Your name is Omar Anderson and your zip "
            "code is 19031. Return #W6067464 via credit_card_4190576: Electric Kettle;",
            "actions": [],
            "outputs": [],
        },
        0,
        "train",
    )
    user = ScriptedUser(task)
    assert (user.first_name, user.last_name, user.zip, user.user_id) == (
        "Omar",
        "Anderson",
        "19031",
        "omar_anderson_3203",
    )
    assert user.start().startswith("Hi! My name is Omar Anderson")
    assert user.respond("YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON.") is None
    assert (
        to_first_person("You want to return your order; you are upset.")
        == "I want to return my order; I am upset."
    )


def echo_hub(replies: list[str]) -> ScriptedHub:
    """The given replies in order, each metered as 7 prompt and 3 completion tokens."""
    return ScriptedHub(*replies, usage={"prompt_tokens": 7, "completion_tokens": 3})


def test_llm_user_plays_the_customer_through_the_hub() -> None:
    hub = echo_hub(["Hi, I want to cancel HS10001.", "###STOP###"])
    user = make_user("llm", task_from_tau2(RETAIL_TASK), hub=hub, alias="chat")
    assert isinstance(user, LLMUser) and user.name == "llm:chat"
    assert user.start() == "Hi, I want to cancel HS10001."
    assert "Instructions:" in hub.requests[0]["messages"][0]["content"]
    assert user.respond("Done!") is None
    assert user.usage["prompt_tokens"] == 14
    with pytest.raises(ValueError):
        make_user("llm", task_from_tau2(RETAIL_TASK))


def test_evaluate_homestay_guided_with_scripted_user(tmp_path) -> None:
    from concierge.support.domains.homestay import TASKS_PATH

    out = tmp_path / "homestay.json"
    ticks: list[tuple[int, int]] = []
    result = evaluate(
        "homestay",
        None,
        TASKS_PATH,
        "guided",
        "scripted",
        None,
        None,
        trials=2,
        out=out,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert ticks[-1] == (20, 20)
    saved = json.loads(out.read_text())
    assert saved["pass^1"] == result["pass^1"] and "pass^2" in saved
    assert saved["mode"] == "guided" and saved["user"] == "scripted" and saved["model"] is None
    assert saved["floor"] == pytest.approx(0.3)  # 3 of 10 demo tasks need no database change
    # Deterministic user and rules: both trials agree, so pass^2 == pass^1.
    assert saved["pass^2"] == saved["pass^1"] >= 0.6
    rows = {(r["task_id"], r["trial"]): r for r in saved["tasks"]}
    assert rows[("cancel_flexible_full", 0)]["success"] is True
    assert rows[("cancel_flexible_full", 0)]["db_diff"] == {
        "agent": {"reservations": ["HS10001"]},
        "gold": {"reservations": ["HS10001"]},
    }
    transcripts = sorted(p.name for p in transcripts_dir_for(out).iterdir())
    assert len(transcripts) == 20 and "cancel_flexible_full_trial0.json" in transcripts
    record = json.loads((transcripts_dir_for(out) / "cancel_flexible_full_trial0.json").read_text())
    assert record["turns"][0]["user"].startswith("Hi! I want to cancel my Lisbon stay")
    # τ² scoring: homestay tasks have no reward_basis, so τ-bench's default DB+COMMUNICATE applies.
    assert saved["pass_labels"] == {"pass^1": "pass^1 (DB+COMMUNICATE)", "pass^2": "pass^2 (DB+COMMUNICATE)"}
    assert saved["not_scored_components"] == [] and saved["judge"] is None
    row = rows[("cancel_flexible_full", 0)]
    assert row["reward"] == 1.0 and row["reward_breakdown"] == {"DB": 1.0, "COMMUNICATE": 1.0}
    assert row["writes"] == 1 and row["db_changed"] and row["gold_changed"] and row["termination"] == "stop"
    metrics = saved["metrics"]
    assert set(metrics) >= {
        "write_precision",
        "harmful_write_rate",
        "missed_writes",
        "handoffs",
        "questions_per_conversation",
    }
    assert metrics["write_precision"] is not None and 0 <= metrics["harmful_write_rate"] <= 1
    assert metrics["questions_per_conversation"] > 0


def test_evaluate_homestay_with_the_cautious_customer() -> None:
    from concierge.support.domains.homestay import TASKS_PATH

    result = evaluate("homestay", None, TASKS_PATH, "guided", "cautious", None, None)
    assert result["user"] == "cautious" and result["n_tasks"] == 10
    assert 0.0 <= result["pass^1"] <= 1.0 and "metrics" in result


def test_nl_assertions_are_reported_not_scored_without_a_judge() -> None:
    from concierge.support.domains.homestay import TASKS_PATH
    from concierge.support.tasks import load_tasks

    task = load_tasks(TASKS_PATH)[0]
    task.reward_basis = ["DB", "NL_ASSERTION"]
    task.nl_assertions = ["The agent states the refund amount."]
    result = evaluate("homestay", None, [task], "guided", "scripted", None, None)
    assert result["pass_labels"]["pass^1"] == "pass^1 (DB; NL_ASSERTION not scored)"
    assert result["tasks"][0]["not_scored"] == ["NL_ASSERTION"]


def test_run_conversation_survives_an_agent_crash() -> None:
    class Broken:
        def respond(self, state: dict[str, Any], text: str) -> Any:
            raise RuntimeError("model fell over")

    convo = run_conversation(Broken(), ScriptedUser(task_from_tau2(RETAIL_TASK)))
    assert convo["error"] == "RuntimeError: model fell over" and len(convo["turns"]) == 1


def test_cli_eval_support_guided_and_bad_input(tmp_path) -> None:
    from typer.testing import CliRunner

    from concierge.cli import app

    runner = CliRunner()
    out = tmp_path / "cli.json"
    result = runner.invoke(
        app,
        ["eval", "support", "--domain", "homestay", "--mode", "guided", "--limit", "3", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["n_tasks"] == 3 and saved["mode"] == "guided" and "pass^1" in saved
    assert (tmp_path / "cli_transcripts").is_dir()
    bad = runner.invoke(app, ["eval", "support", "--domain", "homestay", "--mode", "bogus"])
    assert bad.exit_code == 2 and "--mode must be agent or guided" in bad.output
    cautious = runner.invoke(
        app,
        ["eval", "support", "--domain", "homestay", "--mode", "guided", "--user", "cautious", "--limit", "3"],
    )
    assert cautious.exit_code == 0, cautious.output
    said = " ".join(cautious.output.split())  # the console wraps long lines
    assert "pass^1 (DB+COMMUNICATE)=" in said and "harmful-write rate" in said
    assert "questions per conversation" in said and "user cautious" in said
    wrong = runner.invoke(app, ["eval", "support", "--domain", "homestay", "--mode", "guided", "--user", "x"])
    assert wrong.exit_code == 2 and "scripted, cautious or llm" in wrong.output


def test_a_judge_scores_nl_assertions_through_the_hub() -> None:
    from concierge.support.domains.homestay import TASKS_PATH
    from concierge.support.tasks import load_tasks

    task = load_tasks(TASKS_PATH)[0]
    task.reward_basis = ["DB", "NL_ASSERTION"]
    task.nl_assertions = ["The agent states the refund amount."]
    verdict = '{"results": [{"expectedOutcome": "The agent states the refund amount.", "reasoning": "it does", "metExpectation": true}]}'
    hub = echo_hub([verdict])
    result = evaluate("homestay", None, [task], "guided", "scripted", hub, None, judge="judge")
    assert result["pass_labels"]["pass^1"] == "pass^1 (DB+NL_ASSERTION)" and result["judge"] == "judge"
    row = result["tasks"][0]
    assert row["reward_breakdown"] == {"DB": 1.0, "NL_ASSERTION": 1.0} and row["judge_tokens"] == 10
    assert "assistant: " in hub.requests[0]["messages"][1]["content"]
