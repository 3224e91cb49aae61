"""DB (and ENV_ASSERTION) reward, as ``tau2/evaluator/evaluator_env.py``.

τ² replays the gold actions on a fresh environment (errors ignored) and compares the database
hashes of that environment and the agent's: equal gives 1.0, else 0.0. A task whose criteria have
neither ``actions`` nor ``env_assertions`` (both null) gets 1.0 without a comparison.
"""

from __future__ import annotations

from typing import Any

from concierge.evals.rewards.base import Component


def db_reward(final_hash: str, gold_hash: str, *, no_db_criteria: bool = False) -> Component:
    if no_db_criteria:
        return Component("DB", 1.0, note="No expected actions or env assertions")
    match = final_hash == gold_hash
    return Component("DB", 1.0 if match else 0.0, [{"db_match": match}])


def env_assertion_reward(env_assertions: list[dict[str, Any]]) -> Component:
    """τ² multiplies one 0/1 per env assertion, starting from 1.0: none gives 1.0. Concierge's domains
    have no env-assertion functions, so a task with assertions is reported as not scored."""
    if not env_assertions:
        return Component("ENV_ASSERTION", 1.0, note="No env assertions")
    return Component("ENV_ASSERTION", None, note=f"{len(env_assertions)} env assertions not run")
