"""τ²-bench's reward, one evaluator per component, and the combiner.

Each evaluator returns a :class:`Component` (``kind``, ``reward`` 0/1, ``scored``, checks); the
combiner multiplies the components the task's ``reward_basis`` lists, as
``tau2/evaluator/evaluator.py`` (``EvaluationType.ALL``) does, and says which were left unscored
(NL_ASSERTION without a judge, ENV_ASSERTION with assertions, which concierge cannot run).
"""

from concierge.evals.rewards.action import action_reward, matches_tool_call
from concierge.evals.rewards.base import Component
from concierge.evals.rewards.combine import combine, pass_label
from concierge.evals.rewards.communicate import communicate_reward, communicated
from concierge.evals.rewards.db import db_reward, env_assertion_reward
from concierge.evals.rewards.nl_assertions import nl_assertions_reward, trajectory_text

__all__ = [
    "Component",
    "action_reward",
    "combine",
    "communicate_reward",
    "communicated",
    "db_reward",
    "env_assertion_reward",
    "matches_tool_call",
    "nl_assertions_reward",
    "pass_label",
    "trajectory_text",
]
