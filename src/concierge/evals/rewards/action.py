"""ACTION reward, as ``tau2/evaluator/evaluator_action.py`` and ``Action.compare_with_tool_call``.

Every gold action must be matched by some tool call in the conversation (any order, repeats
allowed, whether or not the call succeeded): same name, and equal values on the compared
arguments, which are the action's ``compare_args`` or, when it has none, the tool call's own
argument names (an argument only the gold action has is then not compared); no compared
arguments at all is a match. All matched gives 1.0, else 0.0; no gold actions gives 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concierge.evals.rewards.base import Component
from concierge.support.tasks import Action


def matches_tool_call(action: Action, name: str, arguments: dict[str, Any]) -> bool:
    if action.name != name:
        return False
    keys = list(arguments) if action.compare_args is None else list(action.compare_args)
    if not keys:
        return True
    called = {k: v for k, v in arguments.items() if k in keys}
    gold = {k: v for k, v in action.arguments.items() if k in keys}
    return called == gold


def action_reward(gold_actions: Sequence[Action], tool_calls: Sequence[dict[str, Any]]) -> Component:
    """``tool_calls``: ``{"tool": name, "arguments": {...}}`` as the agent's actions record them."""
    if not gold_actions:
        return Component("ACTION", 1.0, note="No actions to evaluate")
    checks = []
    for action in gold_actions:
        found = any(
            matches_tool_call(action, str(c.get("tool") or c.get("name")), dict(c.get("arguments") or {}))
            for c in tool_calls
        )
        checks.append({"action_id": action.action_id, "name": action.name, "met": found})
    return Component("ACTION", 1.0 if all(c["met"] for c in checks) else 0.0, checks)
