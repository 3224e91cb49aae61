"""τ²-bench's reward rules on recorded conversations (rewards worked out by hand), and run metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concierge.evals.rewards import (
    action_reward,
    combine,
    communicate_reward,
    db_reward,
    matches_tool_call,
    nl_assertions_reward,
    pass_label,
)
from concierge.evals.rewards.base import Component
from concierge.evals.support_eval import run_metrics, score_conversation
from concierge.support.tasks import Action, load_tasks, task_from_tau2, task_from_v1
from helpers.hubs import ScriptedHub
from helpers.paths import DATA

RECORDED = json.loads((DATA / "recorded_conversations.json").read_text("utf-8"))


def judge_hub(reply: str) -> ScriptedHub:
    """The judge model: always ``reply``, metered as 100 prompt and 20 completion tokens."""
    return ScriptedHub(default=reply, usage={"prompt_tokens": 100, "completion_tokens": 20})


def _check(score: dict[str, Any], expected: dict[str, Any]) -> None:
    assert score["reward"] == expected["reward"]
    assert score["success"] is (expected["reward"] == 1.0)
    assert score["breakdown"] == expected["breakdown"]
    assert score["not_scored"] == expected["not_scored"]


def test_the_recorded_set_covers_every_component_passing_and_failing() -> None:
    assert 4 <= len(RECORDED) <= 8
    kinds = {k for r in RECORDED for k in r["expected"]["breakdown"]}
    assert {"DB", "COMMUNICATE", "ACTION", "NL_ASSERTION"} <= kinds
    assert any("COMMUNICATE" not in r["task"]["evaluation_criteria"]["reward_basis"] for r in RECORDED)


@pytest.mark.parametrize("record", RECORDED, ids=[r["name"] for r in RECORDED])
def test_recorded_conversation_scores_as_worked_out(record: dict[str, Any]) -> None:
    task = task_from_tau2(record["task"])
    score = score_conversation(task, record["convo"], record["final_hash"], record["gold_hash"])
    _check(score, record["expected"])
    if "judge_reply" in record:
        hub = judge_hub(record["judge_reply"])
        judged = score_conversation(
            task, record["convo"], record["final_hash"], record["gold_hash"], hub=hub, judge="judge"
        )
        _check(judged, record["expected_with_judge"])
        alias, request = hub.calls[0].alias, hub.calls[0].request
        assert alias == "judge"
        assert "expected outcomes" in request["messages"][0]["content"]
        prompt = request["messages"][1]["content"]
        assert "user: Cancel EHGLP3." in prompt and "assistant: I can cancel it for you." in prompt
        assert "['Agent should refuse to proceed with the cancellation.']" in prompt
        assert judged["judge_usage"]["model_calls"] == 1


def test_communicate_only_counts_where_the_basis_lists_it() -> None:
    record = next(r for r in RECORDED if r["name"] == "no_communicate_in_basis_passes")
    score = score_conversation(task_from_tau2(record["task"]), record["convo"], "h", "h")
    assert score["components"]["COMMUNICATE"]["reward"] == 0.0  # evaluated, as τ² does, but not counted
    assert score["reward"] == 1.0 and score["communicate_missing"] == ["41.64"]


def test_action_matching_follows_compare_with_tool_call() -> None:
    gold = Action("update_address", {"user_id": "u1", "zip": "10001"})
    assert matches_tool_call(gold, "update_address", {"user_id": "u1", "zip": "10001"})
    # Only the call's own argument names are compared when compare_args is None.
    assert matches_tool_call(gold, "update_address", {"user_id": "u1"})
    assert not matches_tool_call(gold, "update_address", {"user_id": "u1", "zip": "10002"})
    assert not matches_tool_call(gold, "update_user", {"user_id": "u1", "zip": "10001"})
    assert matches_tool_call(Action("think", {"x": 1}, compare_args=()), "think", {"x": 2})
    assert action_reward([], []).reward == 1.0
    assert action_reward([gold], [{"tool": "update_address", "arguments": {"zip": "9"}}]).reward == 0.0


def test_component_edge_rules() -> None:
    assert db_reward("a", "b", no_db_criteria=True).reward == 1.0
    assert db_reward("a", "b").reward == 0.0
    assert communicate_reward([], ["x"]).reward == 1.0
    assert communicate_reward(["chicago"], ["It ships to Chicago."]).reward == 1.0
    nl, _ = nl_assertions_reward([], [], None, None)
    assert nl.reward == 1.0  # no assertions: 1.0 even without a judge
    nl, _ = nl_assertions_reward(["x"], [], judge_hub("not json"), "judge")
    assert nl.reward == 0.0 and "judge error" in nl.note
    with pytest.raises(ValueError):
        combine(["DB", "BOGUS"], [])
    assert combine(["DB"], [Component("DB", 1.0)], premature="max_turns")["reward"] == 0.0


def test_pass_label_names_the_components() -> None:
    assert (
        pass_label(1, ["COMMUNICATE", "DB"], ["NL_ASSERTION"])
        == "pass^1 (DB+COMMUNICATE; NL_ASSERTION not scored)"
    )
    assert pass_label(2, ["DB"], []) == "pass^2 (DB)"


def test_task_loading_keeps_reward_basis_and_defaults_it() -> None:
    task = task_from_tau2(RECORDED[3]["task"])
    assert task.reward_basis == ["ACTION"] and task.actions[1].compare_args == ("order_id",)
    v1 = task_from_v1({"user_id": "u", "instruction": "x", "actions": [], "outputs": ["1"]}, 0, "train")
    assert v1.reward_basis == ["DB", "COMMUNICATE"]
    bare = task_from_tau2({"id": "b", "evaluation_criteria": {"actions": None}})
    assert bare.reward_basis == ["DB", "COMMUNICATE"] and bare.no_db_criteria


def test_real_task_files_read_their_reward_basis(shared_data: Path) -> None:
    retail = shared_data / "tau2" / "retail" / "tasks_train.json"
    airline = shared_data / "tau2" / "airline" / "tasks_train.json"
    if not retail.is_file() or not airline.is_file():
        pytest.skip(f"τ² task files not found under {shared_data / 'tau2'}")
    assert {tuple(t.reward_basis) for t in load_tasks(retail)} <= {("DB", "NL_ASSERTION"), ("DB",)}
    assert {tuple(t.reward_basis) for t in load_tasks(airline)} == {("DB", "COMMUNICATE")}


def _row(writes: int, db_changed: bool, gold_changed: bool, db_match: bool, handoff=False, questions=0):
    return {
        "writes": writes,
        "db_changed": db_changed,
        "gold_changed": gold_changed,
        "db_match": db_match,
        "handoff": handoff,
        "questions": questions,
    }


def test_run_metrics_on_hand_built_outcomes() -> None:
    rows = [
        _row(1, True, True, True, questions=2),  # right write
        _row(1, True, True, False, questions=1),  # wrong write: harmful
        _row(2, True, False, False, questions=3),  # wrote where nothing was due: harmful
        _row(0, False, True, False, handoff=True, questions=0),  # missed write, handed off
        _row(0, False, False, True, questions=2),  # nothing due, nothing done
    ]
    m = run_metrics(rows)
    assert m["write_precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["conversations_with_write"] == 3
    assert m["harmful_write_rate"] == pytest.approx(2 / 5)
    assert m["missed_writes"] == 1 and m["missed_write_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["handoffs"] == 1 and m["handoff_rate"] == pytest.approx(0.2)
    assert m["questions_per_conversation"] == pytest.approx(8 / 5)
    # 95 % Wilson intervals, from the closed form: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
    def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
        p = k / n
        centre, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
        return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]

    assert m["write_precision_ci95"] == pytest.approx(wilson(1, 3), abs=1e-3)
    assert m["harmful_write_rate_ci95"] == pytest.approx(wilson(2, 5), abs=1e-3)
    empty = run_metrics([_row(0, False, False, True)])
    assert empty["write_precision"] is None and empty["missed_write_rate"] is None
    assert empty["write_precision_ci95"] is None


def test_pass_label_counts_partly_scored_components() -> None:
    label = pass_label(1, ["DB", "NL_ASSERTION"], {"NL_ASSERTION": 29}, 74)
    assert label == "pass^1 (DB; NL_ASSERTION not scored in 29/74)"
    assert pass_label(1, ["DB"], {"NL_ASSERTION": 5}, 5) == "pass^1 (DB; NL_ASSERTION not scored)"
