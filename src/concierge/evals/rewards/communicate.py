"""COMMUNICATE reward, as ``tau2/evaluator/evaluator_communicate.py``.

Each ``communicate_info`` string must occur in some assistant message with text, compared in
lower case after commas are removed from the message (not from the info); all found gives 1.0,
else 0.0; no info gives 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

from concierge.evals.rewards.base import Component


def communicated(info: str, agent_messages: Sequence[str]) -> bool:
    """τ²'s check: the string appears in an agent message (case-insensitive, commas ignored)."""
    needle = info.lower()
    return any(needle in m.lower().replace(",", "") for m in agent_messages if m)


def communicate_reward(communicate_info: Sequence[str], agent_messages: Sequence[str]) -> Component:
    if not communicate_info:
        return Component("COMMUNICATE", 1.0, note="No communicate_info to evaluate")
    checks = [{"info": info, "met": communicated(info, agent_messages)} for info in communicate_info]
    return Component("COMMUNICATE", 1.0 if all(c["met"] for c in checks) else 0.0, checks)
