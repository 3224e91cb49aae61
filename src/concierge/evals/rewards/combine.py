"""τ²'s final reward (``tau2/evaluator/evaluator.py``, ``EvaluationType.ALL``).

A conversation that ended prematurely (τ²: any termination but the agent or the user stopping;
here an error or the turn limit) gets 0.0. Otherwise the reward is the product of the components
the task's ``reward_basis`` lists (DB and ENV_ASSERTION from the environment evaluator, ACTION,
COMMUNICATE, NL_ASSERTION); components not listed do not count. A listed component that could not
be scored is left out of the product and named in ``not_scored``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from concierge.evals.rewards.base import KINDS, Component


def combine(
    reward_basis: Sequence[str], components: Iterable[Component], *, premature: str | None = None
) -> dict[str, Any]:
    """``{"reward", "success", "reward_basis", "breakdown", "covered", "not_scored", "note"}``."""
    by_kind = {c.kind: c for c in components}
    basis = [b for b in KINDS if b in {str(x).upper() for x in reward_basis}]
    unknown = sorted({str(x).upper() for x in reward_basis} - set(KINDS))
    if unknown:
        raise ValueError(f"unknown reward_basis entries {unknown}")
    covered = [b for b in basis if b in by_kind and by_kind[b].scored]
    not_scored = [b for b in basis if b not in covered]
    breakdown = {b: by_kind[b].reward for b in covered}
    if premature:
        reward = 0.0
        note = f"Simulation terminated prematurely: {premature}"
    else:
        reward = 1.0
        for b in covered:
            reward *= float(by_kind[b].reward or 0.0)
        note = ""
    return {
        "reward": reward,
        "success": reward >= 1.0 - 1e-6,
        "reward_basis": basis,
        "breakdown": breakdown,
        "covered": covered,
        "not_scored": not_scored,
        "note": note,
    }


def pass_label(k: int, covered: Iterable[str], not_scored: Iterable[str]) -> str:
    """``pass^1 (DB+COMMUNICATE; NL_ASSERTION not scored)``."""
    cov = [b for b in KINDS if b in set(covered)]
    miss = [b for b in KINDS if b in set(not_scored)]
    inner = "+".join(cov) or "nothing scored"
    if miss:
        inner += f"; {'+'.join(miss)} not scored"
    return f"pass^{k} ({inner})"
