"""Support tasks: τ²-bench tasks and τ-bench v1 tasks, read into one ``Task`` type.

τ² schema: ``{id, user_scenario.instructions{...}, initial_state, evaluation_criteria{actions:
[{action_id, name, arguments}], communicate_info, nl_assertions, reward_basis}}``.
v1 schema: ``{user_id, instruction, actions: [{name, kwargs}], outputs}``; v1 tasks have no id, so a
task is named ``<split>-<index in its file>`` (split from the file name: ``tasks_dev.json`` → dev),
and its actions ``<split>_<index>_<n>`` as in the shared gold files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_REWARD_BASIS = ("DB", "COMMUNICATE")


@dataclass(frozen=True)
class Action:
    """One expected tool call."""

    name: str
    arguments: dict[str, Any]
    action_id: str = ""
    compare_args: tuple[str, ...] | None = None  # τ²: only these arguments are compared (None: all)


@dataclass
class Task:
    """A support task: who the user is, what they want, and what a correct agent does."""

    id: str
    actions: list[Action]
    instructions: str = ""
    user_scenario: dict[str, Any] = field(default_factory=dict)
    initial_state: dict[str, Any] | None = None
    communicate_info: list[str] = field(default_factory=list)
    nl_assertions: list[str] = field(default_factory=list)
    # τ²'s reward components (DB, ENV_ASSERTION, COMMUNICATE, ACTION, NL_ASSERTION); the default is
    # τ-bench's [DB, COMMUNICATE], which also applies to v1 tasks.
    reward_basis: list[str] = field(default_factory=lambda: list(DEFAULT_REWARD_BASIS))
    # τ² gives a DB reward of 1 when a task has neither ``actions`` nor ``env_assertions`` (both null).
    no_db_criteria: bool = False
    env_assertions: list[dict[str, Any]] = field(default_factory=list)
    user_id: str | None = None
    split: str | None = None
    source_format: str = "tau2"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def user_instructions(scenario: dict[str, Any]) -> str:
    """The user simulator's brief from a τ² ``user_scenario``."""
    instructions = scenario.get("instructions")
    if isinstance(instructions, str):
        return instructions
    if not isinstance(instructions, dict):
        return ""
    parts = []
    for key, title in (
        ("reason_for_call", "Reason for call"),
        ("known_info", "Known info"),
        ("unknown_info", "Unknown info"),
        ("task_instructions", "Task instructions"),
    ):
        text = _text(instructions.get(key)).strip()
        if text:
            parts.append(f"{title}:\n{text}")
    persona = _text(scenario.get("persona")).strip()
    if persona:
        parts.insert(0, f"Persona:\n{persona}")
    return "\n\n".join(parts)


def task_from_tau2(raw: dict[str, Any]) -> Task:
    criteria = raw.get("evaluation_criteria") or {}
    task_id = str(raw["id"])
    actions = [
        Action(
            a["name"],
            dict(a.get("arguments") or {}),
            str(a.get("action_id") or f"{task_id}_{i}"),
            tuple(a["compare_args"]) if a.get("compare_args") is not None else None,
        )
        for i, a in enumerate(criteria.get("actions") or [])
    ]
    scenario = raw.get("user_scenario") or {}
    basis = criteria.get("reward_basis")
    return Task(
        id=task_id,
        actions=actions,
        instructions=user_instructions(scenario),
        user_scenario=scenario,
        initial_state=raw.get("initial_state"),
        communicate_info=[str(x) for x in criteria.get("communicate_info") or []],
        nl_assertions=[str(x) for x in criteria.get("nl_assertions") or []],
        reward_basis=[str(b).upper() for b in basis] if basis is not None else list(DEFAULT_REWARD_BASIS),
        no_db_criteria=criteria.get("actions") is None and criteria.get("env_assertions") is None,
        env_assertions=list(criteria.get("env_assertions") or []),
        source_format="tau2",
        raw=raw,
    )


def task_from_v1(raw: dict[str, Any], index: int, split: str) -> Task:
    actions = [
        Action(a["name"], dict(a.get("kwargs") or a.get("arguments") or {}), f"{split}_{index}_{i}")
        for i, a in enumerate(raw.get("actions") or [])
    ]
    return Task(
        id=f"{split}-{index}",
        actions=actions,
        instructions=str(raw.get("instruction") or ""),
        user_scenario={"instructions": raw.get("instruction")},
        communicate_info=[str(x) for x in raw.get("outputs") or []],
        user_id=raw.get("user_id"),
        split=split,
        source_format="v1",
        raw=raw,
    )


def split_from_path(path: Path) -> str:
    """``tasks_dev.json`` → ``dev``; anything else without a split suffix → ``train``."""
    stem = path.stem
    if stem.startswith("tasks_") and len(stem) > len("tasks_"):
        return stem[len("tasks_") :]
    return "train"


def load_tasks(path: Path | str, split: str | None = None) -> list[Task]:
    """Read a task file in either schema (a JSON list, or one task per line)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON task file ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of tasks")
    split = split or split_from_path(path)
    tasks = []
    for index, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: task {index} is not an object")
        if "evaluation_criteria" in raw or "user_scenario" in raw:
            tasks.append(task_from_tau2(raw))
        elif "instruction" in raw and "actions" in raw:
            tasks.append(task_from_v1(raw, index, split))
        else:
            raise ValueError(f"{path}: task {index} is neither a τ² nor a τ-bench v1 task")
    return tasks
