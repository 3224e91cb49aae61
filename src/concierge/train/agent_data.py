"""Agent examples: tool-calling trajectories (OpenAI format) from support tasks' gold actions."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from concierge.support.guided.command import NO_INTENT
from concierge.support.tasks import Task
from concierge.train.customer_scripts import _free_script, _says_identity, _v1_script


def agent_examples(
    tasks: Sequence[Task], domain_factory: Callable[[], Any], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Tool-calling trajectories (OpenAI format) from each task's gold actions on a fresh database.

    The customer opens as in :func:`guided_examples`; every gold action becomes an assistant
    ``tool_calls`` message and its ``tool`` result (the real output of the domain's tool, errors
    as ``Error: ...``); writes are preceded by a confirmation exchange, as the policy requires.
    """
    from types import SimpleNamespace

    from concierge.support.agent import ToolAgent

    records: list[dict[str, Any]] = []
    for task in tasks:
        domain = domain_factory()
        domain.apply_initial_state(task.initial_state)
        rng = random.Random(f"{seed}:{task.id}")
        script = _v1_script(task, rng) or _free_script(task)
        if script is None or not task.actions:
            continue
        agent = ToolAgent(domain, None)
        opening = (
            " ".join(r.text for r in script.requests if r.intent != NO_INTENT) or script.requests[0].text
        )
        identity = "" if _says_identity(opening, script) else f" {script.identity_text}"
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": agent.system_prompt(SimpleNamespace(user_id=None))},
            {"role": "user", "content": f"{opening}{identity}".strip()},
        ]
        for n, action in enumerate(task.actions):
            arguments = json.dumps(action.arguments, ensure_ascii=False)
            if domain.is_write(action.name) and action.name != "transfer_to_human_agents":
                messages.append(
                    {
                        "role": "assistant",
                        "content": f"To confirm, I will run {action.name} with {arguments}. Shall I proceed (yes/no)?",
                    }
                )
                messages.append({"role": "user", "content": "Yes, please proceed."})
            call_id = f"call_{n}"
            messages.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": action.name, "arguments": arguments},
                        }
                    ],
                }
            )
            outcome = domain.execute(action.name, action.arguments)
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "name": action.name, "content": outcome.content}
            )
        messages.append({"role": "assistant", "content": "Is there anything else I can help you with?"})
        records.append(
            {
                "kind": "agent",
                "id": f"{task.id}:agent",
                "task_id": task.id,
                "messages": messages,
                "tools": domain.openai_tools(),
            }
        )
    return records
