"""τ²'s final reward (``tau2/evaluator/evaluator.py``, ``EvaluationType.ALL``).

A conversation that ended prematurely (τ²: any termination but the agent or the user stopping;
here an error or the turn limit) gets 0.0. Otherwise the reward is the product of the components
the task's ``reward_basis`` lists (DB and ENV_ASSERTION from the environment evaluator, ACTION,
COMMUNICATE, NL_ASSERTION); components not listed do not count. A listed component that could not
be scored is left out of the product and named in ``not_scored``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def pass_label(
    k: int, covered: Iterable[str], not_scored: Iterable[str] | Mapping[str, int], n: int | None = None
) -> str:
    """``pass^1 (DB+COMMUNICATE; NL_ASSERTION not scored)``.

    ``not_scored`` may map a component to the number of conversations it was not scored in; with
    ``n`` (all conversations) a partial count is shown: ``NL_ASSERTION not scored in 29/74``.
    """
    counts = dict(not_scored) if isinstance(not_scored, Mapping) else {b: None for b in not_scored}
    cov = [b for b in KINDS if b in set(covered) and b not in counts]
    parts = []
    for b in KINDS:
        if b in counts:
            c = counts[b]
            parts.append(f"{b} not scored" + (f" in {c}/{n}" if c is not None and n and c < n else ""))
    inner = "+".join(cov) or "nothing scored"
    if parts:
        inner += "; " + ", ".join(parts)
    return f"pass^{k} ({inner})"
