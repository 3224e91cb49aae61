"""Agent datasets in the constrained action format: gold replays of τ-bench v1 retail train tasks, and
rejection sampling from the project's own evaluation transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from concierge.support.actions import TOOL_RESULT_PREFIX, ActionParser
from concierge.support.agent import ToolAgent
from concierge.support.domains import load_domain
from concierge.support.guided import load_flows
from concierge.support.replay import replay_gold
from concierge.support.session import guard_rules
from concierge.support.tasks import load_tasks
from concierge.train import datasets as ds
from helpers.hubs import ScriptedHub

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def retail(shared_data: Path) -> tuple[list[Any], Any]:
    tasks = load_tasks(shared_data / "tau_v1" / "retail" / "tasks_train.json")[:8]
    return tasks, lambda: load_domain("retail", shared_data / "tau2")


@pytest.fixture(scope="module")
def built(retail: tuple[list[Any], Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    tasks, factory = retail
    return ds.constrained_examples(tasks, factory)


def _actions(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in record["messages"] if m["role"] == "assistant"]


def test_gold_conversations_reproduce_the_gold_outcome(retail, built) -> None:
    tasks, factory = retail
    records, counts = built
    assert counts["built"] == len(records) >= 4 and sum(counts.values()) == len(tasks)
    by_id = {t.id: t for t in tasks}
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in factory().openai_tools()}
    for record in records:
        task = by_id[record["task_id"]]
        domain = factory()
        domain.apply_initial_state(task.initial_state)
        actions = _actions(record)
        for action in actions:
            if action["action"] == "tool":
                jsonschema.validate(action["arguments"], tools[action["name"]])
                domain.execute(action["name"], action["arguments"])
        # Running the conversation's calls gives the database the gold actions give.
        assert domain.db_hash() == replay_gold(factory, task)["db_hash"]
        # Every write follows a proposal and the customer's yes; the agent speaks last.
        messages = record["messages"]
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and json.loads(m["content"]).get("name") in (a.name for a in task.actions):
                assert "Shall I proceed (yes/no)?" in messages[i - 2]["content"]
                assert messages[i - 1]["content"].startswith("Yes")
        assert actions[-1]["action"] in ("message", "transfer")


def test_training_records_are_what_the_agent_sends_at_inference(retail, built) -> None:
    """Replay a record through the constrained agent, the model's outputs scripted from the record:
    the last request the model is sent, plus its answer, is the record itself."""
    tasks, factory = retail
    record = built[0][0]
    task = next(t for t in tasks if t.id == record["task_id"])
    outputs = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    hub = ScriptedHub(*outputs)
    domain = factory()
    domain.apply_initial_state(task.initial_state)
    agent = ToolAgent(domain, hub, "m", rules=guard_rules("retail"), actions="constrained")
    parser = ActionParser(agent.action_schema)
    assert all(parser.parse(o)[0] is not None for o in outputs)  # valid under the inference schema
    state: dict[str, Any] = {}
    for m in record["messages"][1:]:
        if m["role"] == "user" and not m["content"].startswith(TOOL_RESULT_PREFIX):
            agent.respond(state, m["content"])
    last = hub.requests[-1]["messages"]
    assert [*last, {"role": "assistant", "content": outputs[-1]}] == record["messages"]


def test_write_read_and_one_line_errors(tmp_path: Path, built) -> None:
    records = built[0][:3]
    info = ds.write_dataset(tmp_path / "a.jsonl", records, source={"tasks": "v1 train"})
    assert ds.read_dataset(info.path) == records and info.kind == "agent_actions"
    lines = info.path.read_text().splitlines()
    # One assistant turn that is not an action: the line and the message are named.
    bad = json.loads(lines[1])
    bad["messages"][2]["content"] = "Sure, I will look that up."
    (tmp_path / "b.jsonl").write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(ds.DatasetError) as err:
        ds.read_dataset(tmp_path / "b.jsonl")
    assert f"{tmp_path / 'b.jsonl'}:2: agent_actions record, messages/2: assistant content must be one action" in str(err.value)
    assert "\n" not in str(err.value)
    # A file edited after it was built no longer matches its sidecar's content hash.
    info.path.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(ds.DatasetError, match="content hash .* does not match a.jsonl.meta.json"):
        ds.read_dataset(info.path)


def test_rejection_sampling_keeps_only_passed_conversations(tmp_path: Path) -> None:
    from concierge.evals.support_eval import evaluate
    from concierge.support.domains.homestay import TASKS_PATH

    summary = evaluate("homestay", None, TASKS_PATH, "guided", "scripted", None, None, out=tmp_path / "run.json")
    transcripts = ds.read_transcripts(tmp_path / "run_transcripts")
    passed = [t for t in transcripts if t["success"] and t["db_match"]]
    assert 0 < len(passed) < len(transcripts)  # both kinds present, so the filter is tested
    # An agent-mode conversation that passed, ending in a transfer, and one that failed.
    handoff = [
        {"role": "user", "content": "I want a person."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "transfer_to_human_agents", "arguments": json.dumps({"summary": "wants a person"})}}]},
        {"role": "tool", "tool_call_id": "c", "name": "transfer_to_human_agents", "content": "Transfer successful"},
        {"role": "assistant", "content": "YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."},
    ]
    agent_runs = [
        {"mode": "agent", "task_id": "x", "trial": 0, "success": True, "db_match": True, "messages": handoff},
        {"mode": "agent", "task_id": "y", "trial": 0, "success": False, "db_match": True, "messages": handoff},
    ]
    records, counts = ds.sampled_examples(transcripts + agent_runs, lambda: load_domain("homestay"), load_flows("homestay"))
    assert counts["kept"] == len(passed) + 1 and counts["rejected"] == len(transcripts) - len(passed) + 1
    assert summary["pass^1"] == pytest.approx(len(passed) / len(transcripts))
    guided = [r for r in records if r["kind"] == "guided"]
    assert {r["task_id"] for r in guided} == {str(t["task_id"]) for t in passed}
    for t in passed:  # each customer message with the command guided mode acted on
        acted = [(c["intent"], c["slots"]) for c in t["commands"]]
        mine = [(r["command"]["intent"], r["command"]["slots"]) for r in guided if r["task_id"] == str(t["task_id"])]
        assert mine == acted
    (agent,) = [r for r in records if r["kind"] == "agent_actions"]
    assert agent["task_id"] == "x" and agent["source"] == "transcript"
    assert json.loads(agent["messages"][-1]["content"]) == {"action": "transfer", "summary": "wants a person"}
    info = ds.write_dataset(tmp_path / "s.jsonl", records)
    assert ds.read_dataset(info.path) == records


def test_cli_builds_agent_actions(tmp_path: Path, shared_data: Path) -> None:
    from typer.testing import CliRunner

    from concierge.cli import app

    out = tmp_path / "cli.jsonl"
    args = ["train", "dataset", "--kind", "agent_actions", "--tasks", str(shared_data / "tau_v1" / "retail" / "tasks_train.json"),
            "--data-dir", str(shared_data / "tau2"), "--limit", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "agent_actions examples" in result.output and ds.read_dataset(out)
    missing = CliRunner().invoke(app, ["train", "dataset", "--kind", "sampled", "--tasks", str(tmp_path / "nope"),
                                       "--out", str(out)])
    assert missing.exit_code != 0 and "transcripts folder not found" in missing.output


class _CompactHub(ScriptedHub):
    """A hub whose alias was trained on the compact agent prompt (its provenance says so)."""

    def spec(self, alias: str) -> Any:
        from types import SimpleNamespace

        from concierge.support.actions import COMPACT_AGENT_PROMPT

        return SimpleNamespace(provenance={"prompt": COMPACT_AGENT_PROMPT})


def test_step_examples_are_the_requests_the_compact_agent_sends(retail) -> None:
    """Replay gold conversations through an agent served with the compact prompt, its outputs scripted
    from the gold steps: each step example is exactly the request sent at that step plus the step, and
    a step whose ids fell out of the window (so the model would have to invent them) is no example."""
    from concierge.support.actions import render_history
    from concierge.train.agent_data import gold_conversations

    tasks, factory = retail
    records, counts = ds.step_examples(tasks, factory)
    assert counts["steps"] == len(records) and counts["ungrounded"] > 0
    by_id = {r["id"]: r for r in records}
    checked = 0
    for task, gold_agent, messages in gold_conversations(tasks, factory)[0][:3]:
        steps = [(i, m) for i, m in enumerate(messages) if m["role"] == "assistant"]
        outputs = [render_history([m], gold_agent.rules.handoff_tools)[0]["content"] for _, m in steps]
        hub = _CompactHub(*outputs)
        domain = factory()
        domain.apply_initial_state(task.initial_state)
        agent = ToolAgent(domain, hub, "m", rules=guard_rules("retail"), actions="constrained")
        assert agent.compact_prompt and "Policy" not in agent.constrained_system()
        state: dict[str, Any] = {}
        for m in messages:
            if m["role"] == "user":
                agent.respond(state, m["content"])
        assert len(hub.requests) == len(steps)
        for n, (i, _) in enumerate(steps):
            record = by_id.get(f"{task.id}:step:{i}")
            if record is None:
                continue
            assert [*hub.requests[n]["messages"], {"role": "assistant", "content": outputs[n]}] == record["messages"]
            # Bounded: the prompt is a window, not the whole conversation with the policy.
            assert sum(len(m["content"]) for m in record["messages"][1:]) < 1200 + 700 + 800 + len(outputs[n]) + 200
            checked += 1
    assert checked >= 6


def test_a_step_is_grounded_only_in_what_its_window_shows() -> None:
    from concierge.train.agent_data import grounded_step

    window = [
        {"role": "user", "content": "Cancel order #W123, please."},
        {"role": "user", "content": 'TOOL RESULT get_order_details: {"order_id":"#W123","items":[{"item_id":"111"}]}'},
    ]
    cancel = '{"action":"tool","name":"cancel_pending_order","arguments":{"order_id":"#W123","reason":"no longer needed"}}'
    assert not grounded_step(cancel, window)  # the reason was never said
    said = [*window, {"role": "user", "content": "I do not need it any more."}]  # said, but not so
    assert not grounded_step(cancel, said)
    assert grounded_step(cancel, [*window, {"role": "user", "content": "It is no longer needed."}])
    proposal = json.dumps({"action": "message", "content": 'Return items (item ids: ["111", "222"]). Shall I proceed (yes/no)?'})
    assert not grounded_step(proposal, window)  # "222" is nowhere in the window
    assert grounded_step(proposal.replace(', \\"222\\"', ""), window)
    assert grounded_step('{"action":"transfer","summary":"wants a person"}', window)
