"""Gold replay against τ²-bench's own reference results (needs ../shared/data; skipped without it).

For every task of the shared τ² retail and airline train sets and the τ-bench v1 retail train/dev
sets, replaying the gold actions through concierge's tools must give τ²'s ok/error pattern (with
the same error messages) and τ²'s final changed records (an absent field equals null; floats
exactly equal).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concierge.support.domains import load_domain
from concierge.support.domains.retail import REFERENCE_MISSING_TOOLS
from concierge.support.replay import compare_with_gold, load_gold, replay_gold
from concierge.support.tasks import Task, load_tasks
from concierge.support.toolkit import ToolError, canonical_json, sha256_text

pytestmark = pytest.mark.shared_data

CASES = {
    # name: (domain, db folder, task files, reference replay, tools the reference lacked)
    "tau2-retail": (
        "retail",
        "tau2/retail",
        ["tau2/retail/tasks_train.json"],
        "tau2/retail/gold_train.jsonl",
    ),
    "tau2-airline": (
        "airline",
        "tau2/airline",
        ["tau2/airline/tasks_train.json"],
        "tau2/airline/gold_train.jsonl",
    ),
    "tau-v1-retail": (
        "retail",
        "tau2/retail",
        ["tau_v1/retail/tasks_train.json", "tau_v1/retail/tasks_dev.json"],
        "tau_v1/retail/gold_train_dev.jsonl",
    ),
}
EXPECTED_COUNTS = {"tau2-retail": 74, "tau2-airline": 30, "tau-v1-retail": 520}


def _need(root: Path, *parts: str) -> list[Path]:
    paths = [root / part for part in parts]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data incomplete: {', '.join(missing)} not found")
    return paths


def _excluded(domain: str) -> tuple[str, ...]:
    return REFERENCE_MISSING_TOOLS if domain == "retail" else ()


@pytest.mark.parametrize("case", list(CASES))
def test_gold_replay_matches_reference(shared_data: Path, case: str) -> None:
    domain, db_dir, task_files, gold_file = CASES[case]
    db_path, gold_path, *task_paths = _need(shared_data, db_dir, gold_file, *task_files)
    gold = load_gold(gold_path)
    tasks: list[Task] = [task for path in task_paths for task in load_tasks(path)]
    assert len(tasks) == len(gold) == EXPECTED_COUNTS[case]

    def factory():  # noqa: ANN202
        return load_domain(domain, db_path, exclude_tools=_excluded(domain))

    mismatches = {}
    for task in tasks:
        assert task.id in gold, f"no reference row for task {task.id}"
        result = replay_gold(factory, task, with_hash=False)
        problems = compare_with_gold(result, gold[task.id])
        if problems:
            mismatches[task.id] = problems[:3]
    assert mismatches == {}, f"{len(mismatches)}/{len(tasks)} tasks differ from the reference: {mismatches}"


def test_failed_reference_writes_leave_the_db_unchanged(shared_data: Path) -> None:
    """Each write the reference saw fail fails here with τ²'s message and changes nothing."""
    db_path, gold_path, *task_paths = _need(
        shared_data,
        "tau2/retail",
        "tau_v1/retail/gold_train_dev.jsonl",
        "tau_v1/retail/tasks_train.json",
        "tau_v1/retail/tasks_dev.json",
    )
    gold = load_gold(gold_path)
    checked = 0
    for task in (t for path in task_paths for t in load_tasks(path)):
        outcomes = gold[task.id]["action_results"]
        if all(a["ok"] for a in outcomes):
            continue
        domain = load_domain("retail", db_path)
        for action, outcome in zip(task.actions, outcomes, strict=True):
            if outcome["ok"]:
                domain.call(action.name, action.arguments)
                continue
            before = domain.db_hash()
            with pytest.raises(ToolError) as failure:
                domain.call(action.name, action.arguments)
            assert failure.value.message == outcome["error"]
            assert domain.db_hash() == before
            checked += domain.is_write(action.name)
    assert checked >= 40  # 44 scripted write failures in the v1 reference


def test_get_item_details_is_the_only_toolkit_difference(shared_data: Path) -> None:
    """τ²'s reference lacked get_item_details; the full toolkit differs from it only there."""
    (db_path, gold_path, tasks_path) = _need(
        shared_data, "tau2/retail", "tau2/retail/gold_train.jsonl", "tau2/retail/tasks_train.json"
    )
    gold = load_gold(gold_path)
    differing = {}
    for task in load_tasks(tasks_path):
        problems = compare_with_gold(
            replay_gold(lambda: load_domain("retail", db_path), task, with_hash=False), gold[task.id]
        )
        if problems:
            differing[task.id] = problems
    assert set(differing) == {"21"}
    assert all("get_item_details" in p for p in differing["21"])
    item = load_domain("retail", db_path).call("get_item_details", {"item_id": "4107812777"})
    assert item["item_id"] == "4107812777" and isinstance(item["price"], float)


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_db_hash_and_shared_source(shared_data: Path, domain: str) -> None:
    """db_hash is sha256 of the canonical JSON; replays never leak into the shared loaded db."""
    (db_path, tasks_path) = _need(shared_data, f"tau2/{domain}", f"tau2/{domain}/tasks_train.json")
    tasks = [t for t in load_tasks(tasks_path) if len(t.actions) > 2][:6]
    fresh = load_domain(domain, db_path)
    pristine_hash = fresh.db_hash()
    raw = json.loads((db_path / "db.json").read_text(encoding="utf-8"))
    assert pristine_hash == sha256_text(canonical_json(raw))
    for task in tasks:
        replayed = load_domain(domain, db_path)
        result = replay_gold(lambda d=replayed: d, task)
        assert result["db_hash"] == sha256_text(canonical_json(replayed.db))
        assert (result["db_hash"] != pristine_hash) == result["db_changed"]
    assert load_domain(domain, db_path).db_hash() == pristine_hash
    assert fresh.diff() == {}


@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_openai_tools_match_tools_json(shared_data: Path, domain: str) -> None:
    (db_path,) = _need(shared_data, f"tau2/{domain}")
    reference = json.loads((db_path / "tools.json").read_text(encoding="utf-8"))
    loaded = load_domain(domain, db_path)
    ours = loaded.openai_tools()
    assert [t["function"]["name"] for t in ours] == [t["name"] for t in reference]
    kinds = {"READ": "read", "WRITE": "write", "GENERIC": "generic"}
    for schema, ref in zip(ours, reference, strict=True):
        function = schema["function"]
        params = function["parameters"]
        assert list(params["properties"]) == [p["name"] for p in ref["parameters"]], ref["name"]
        assert params["required"] == [p["name"] for p in ref["parameters"] if p["default"] is None]
        assert loaded.tool_kind(ref["name"]) == kinds[ref["tool_type"]]
        # Our description is the docstring's text before its sections.
        assert ref["docstring"].strip().startswith(function["description"].splitlines()[0])
        for name, prop in params["properties"].items():
            assert prop.get("description"), f"{ref['name']}.{name} has no description"


def test_v1_tasks_are_normalised(shared_data: Path) -> None:
    (train, dev) = _need(shared_data, "tau_v1/retail/tasks_train.json", "tau_v1/retail/tasks_dev.json")
    tasks = load_tasks(train)
    first = tasks[0]
    assert first.id == "train-0" and first.source_format == "v1" and first.user_id == "omar_anderson_3203"
    assert (
        first.actions[0].action_id == "train_0_0" and first.actions[0].name == "return_delivered_order_items"
    )
    assert load_tasks(dev)[3].id == "dev-3"
