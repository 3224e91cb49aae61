"""Gold replay: run a task's expected actions on a fresh database and report what happened.

A correct agent's final database must equal the one obtained here (τ²-bench's success criterion),
so replaying the gold actions is both the evaluator's reference and the proof that a domain's
tools behave like τ²'s: compared with τ²'s own replay (``gold_*.jsonl``), the ok/error pattern and
the changed records must be the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from concierge.support.tasks import Task
from concierge.support.toolkit import Domain, ToolError

DomainFactory = Callable[[], Domain]


def replay_gold(domain_factory: DomainFactory, task: Task, *, with_hash: bool = True) -> dict[str, Any]:
    """Replay ``task.actions`` on a fresh domain (after the task's initial state).

    Returns ``{"task_id", "actions": [{"action_id", "name", "ok", "error"}], "db_hash", "db_diff",
    "db_changed"}``; ``db_diff`` is relative to the database as loaded.
    """
    domain = domain_factory()
    domain.apply_initial_state(task.initial_state)
    results = []
    for action in task.actions:
        try:
            domain.call(action.name, action.arguments)
        except ToolError as exc:
            results.append(
                {"action_id": action.action_id, "name": action.name, "ok": False, "error": exc.message}
            )
        else:
            results.append({"action_id": action.action_id, "name": action.name, "ok": True, "error": None})
    diff = domain.diff()
    return {
        "task_id": task.id,
        "actions": results,
        "db_hash": domain.db_hash() if with_hash else None,
        "db_diff": diff,
        "db_changed": bool(diff),
    }


def replay_all(
    domain_factory: DomainFactory, tasks: Iterable[Task], *, with_hash: bool = True
) -> Iterator[dict[str, Any]]:
    for task in tasks:
        yield replay_gold(domain_factory, task, with_hash=with_hash)


# --------------------------------------------------------------------------- comparison with a reference


def gold_key(row: dict[str, Any]) -> str:
    """The Task id a reference row belongs to (v1 rows carry an integer index and a split)."""
    task_id = row["task_id"]
    if isinstance(task_id, int) and row.get("split"):
        return f"{row['split']}-{task_id}"
    return str(task_id)


def load_gold(path: Path | str) -> dict[str, dict[str, Any]]:
    """Reference replay rows (JSON lines) by task id."""
    rows = {}
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            rows[gold_key(row)] = row
    return rows


def drop_nulls(value: Any) -> Any:
    """Remove null fields recursively, so that an absent field equals a null one."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _differences(ours: Any, theirs: Any, path: str, tol: float, out: list[str]) -> None:
    if len(out) >= 20:
        return
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            if key not in ours:
                out.append(f"{path}/{key}: missing here (reference {json.dumps(theirs[key])[:80]})")
            elif key not in theirs:
                out.append(f"{path}/{key}: not in reference (here {json.dumps(ours[key])[:80]})")
            else:
                _differences(ours[key], theirs[key], f"{path}/{key}", tol, out)
    elif isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            out.append(f"{path}: {len(ours)} entries here, {len(theirs)} in reference")
            return
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _differences(a, b, f"{path}[{i}]", tol, out)
    elif (
        isinstance(ours, int | float)
        and isinstance(theirs, int | float)
        and not isinstance(ours, bool)
        and not isinstance(theirs, bool)
    ):
        if not (ours == theirs or (tol > 0 and math.isclose(ours, theirs, rel_tol=0, abs_tol=tol))):
            out.append(f"{path}: {ours!r} here, {theirs!r} in reference")
    elif ours != theirs:
        out.append(f"{path}: {json.dumps(ours)[:80]} here, {json.dumps(theirs)[:80]} in reference")


def compare_with_gold(result: dict[str, Any], gold: dict[str, Any], *, tol: float = 0.0) -> list[str]:
    """Differences between a replay and a reference row (empty when they agree).

    Compared: each action's name, ok flag and error message, and the final diff with absent fields
    treated as null; numbers exactly, or within ``tol``.
    """
    problems: list[str] = []
    ours = [(a["name"], a["ok"], a["error"]) for a in result["actions"]]
    theirs = [(a["name"], a["ok"], a.get("error")) for a in gold.get("action_results", [])]
    if ours != theirs:
        for i in range(max(len(ours), len(theirs))):
            a = ours[i] if i < len(ours) else None
            b = theirs[i] if i < len(theirs) else None
            if a != b:
                problems.append(f"action {i}: {a} here, {b} in reference")
    _differences(
        drop_nulls(result["db_diff"]), drop_nulls(gold.get("final_db_diff") or {}), "db", tol, problems
    )
    return problems
