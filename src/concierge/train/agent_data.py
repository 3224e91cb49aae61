"""Agent examples: tool-calling trajectories (OpenAI format) from support tasks' gold actions."""

from __future__ import annotations

import json
import random
import re
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


# --------------------------------------------------------------------------- constrained actions


def _constrained_agent(domain: Any) -> Any:
    from concierge.support.agent import ToolAgent
    from concierge.support.session import guard_rules

    return ToolAgent(domain, None, rules=guard_rules(domain.name), actions="constrained")


def _confirmation(name: str, arguments: dict[str, Any]) -> str:
    details = "; ".join(
        f"{k.replace('_', ' ')}: {json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items()
    )
    return f"To confirm, I will {name.replace('_', ' ')} ({details}). Shall I proceed (yes/no)?"


def _until_transfer(messages: list[dict[str, Any]], handoff_tools: list[str]) -> list[dict[str, Any]]:
    """The conversation up to and including the model's transfer step (the fixed transfer message and
    the tool's result after it are the agent's, not the model's)."""
    for i, m in enumerate(messages):
        names = [str((c.get("function") or {}).get("name")) for c in m.get("tool_calls") or []]
        if any(n in handoff_tools for n in names):
            return messages[: i + 1]
    return messages


def action_record(
    agent: Any, messages: list[dict[str, Any]], *, record_id: str, task_id: str, source: str
) -> dict[str, Any]:
    """An ``agent_actions`` record: a whole conversation (session-format ``messages``) as the
    constrained agent reads it, so training sees what inference sends (same system prompt, same
    rendering of steps and tool results)."""
    from concierge.support.actions import ACTION_FORMAT, render_history

    handoff = agent.rules.handoff_tools
    rendered = render_history(_until_transfer(messages, handoff), handoff)
    return {
        "kind": "agent_actions",
        "id": record_id,
        "task_id": task_id,
        "source": source,
        "format": ACTION_FORMAT,
        "messages": [{"role": "system", "content": agent.constrained_system()}, *rendered],
    }


def _product_of(domain: Any, item_id: str) -> str | None:
    for product_id, product in (domain.db.get("products") or {}).items():
        if item_id in (product.get("variants") or {}):
            return str(product_id)
    return None


def _lookups(
    domain: Any, agent: Any, guard: Any, script: Any, name: str, arguments: dict[str, Any], done: set[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The reads a careful agent makes before ``name`` that the gold leaves out (τ-bench v1 golds
    hold only the writes): identify the customer from what they said, read their account, the order
    and the products of new items, so every write argument is grounded in a record looked up in the
    conversation (as the guardrails require). Only tools the domain has; none twice."""
    tools = set(domain.tools)
    steps: list[tuple[str, dict[str, Any]]] = []

    def add(tool: str, args: dict[str, Any]) -> None:
        key = f"{tool}:{json.dumps(args, sort_keys=True)}"
        if tool in tools and key not in done:
            done.add(key)
            steps.append((tool, args))

    if name in agent.rules.handoff_tools or name in agent.rules.identify_tools:
        return steps
    if guard.user_id is None and not any(k.startswith(("find_user", "find_guest")) for k in done):
        ident = script.identity
        if ident.get("email") and "find_user_id_by_email" in tools:
            add("find_user_id_by_email", {"email": ident["email"]})
        elif ident.get("first_name") and ident.get("zip"):
            add(
                "find_user_id_by_name_zip",
                {
                    "first_name": ident["first_name"],
                    "last_name": ident.get("last_name", ""),
                    "zip": ident["zip"],
                },
            )
    if domain.is_write(name):
        user_id = arguments.get("user_id") or "{user}"
        add("get_user_details", {"user_id": user_id})
        if arguments.get("order_id"):
            add("get_order_details", {"order_id": arguments["order_id"]})
        for item in arguments.get("new_item_ids") or []:
            product = _product_of(domain, str(item))
            if product:
                add("get_product_details", {"product_id": product})
    return steps


def _guarded_step(guard: Any, messages: list[dict[str, Any]], name: str, arguments: dict[str, Any]) -> bool:
    """Run one call through the guardrails and add it and its result to ``messages``; False if refused."""
    from concierge.support.agent import current_turn
    from concierge.support.guardrails import result_text

    call = {
        "id": f"call_{sum(1 for m in messages if m.get('tool_calls')) + 1}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    outcome = guard.call(name, dict(arguments), current_turn(messages))
    if outcome.get("refused"):
        return False
    messages.append(
        {"role": "tool", "tool_call_id": call["id"], "name": name, "content": result_text(outcome)}
    )
    return True


def gold_conversations(
    tasks: Sequence[Task], domain_factory: Callable[[], Any], *, seed: int = 0
) -> tuple[list[tuple[Task, Any, list[dict[str, Any]]]], dict[str, int]]:
    """Whole agent conversations (session-format messages) from each task's gold replay.

    The scripted customer (:mod:`.customer_scripts`) opens with its requests and identity; each gold
    action runs through the guardrails on a fresh database, so every tool result is the real one
    the agent would get (errors included) and every write follows a named proposal and the
    customer's yes; the agent closes with a reply. A task whose gold the guardrails refuse is left
    out (counted in the second return value, ``{"built", "no_script", "refused"}``), so no example
    teaches a step the agent could not take. Returns ``(task, agent, messages)`` per conversation.
    """
    from concierge.support.guardrails import Guard

    out: list[tuple[Task, Any, list[dict[str, Any]]]] = []
    counts = {"built": 0, "no_script": 0, "refused": 0}
    for task in tasks:
        domain = domain_factory()
        domain.apply_initial_state(task.initial_state)
        rng = random.Random(f"{seed}:{task.id}")
        script = _v1_script(task, rng) or _free_script(task)
        if script is None or not task.actions:
            counts["no_script"] += 1
            continue
        agent = _constrained_agent(domain)
        guard = Guard(domain, agent.rules, {})
        opening = (
            " ".join(r.text for r in script.requests if r.intent != NO_INTENT) or script.requests[0].text
        )
        identity = "" if _says_identity(opening, script) else f" {script.identity_text}"
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"{opening}{identity}".strip()}]
        refused = False
        done: set[str] = set()
        for action in task.actions:
            handoff = action.name in agent.rules.handoff_tools
            done.add(f"{action.name}:{json.dumps(action.arguments, sort_keys=True)}")
            for name, arguments in _lookups(
                domain, agent, guard, script, action.name, dict(action.arguments), done
            ):
                if arguments.get("user_id") == "{user}":
                    arguments = {**arguments, "user_id": guard.user_id}
                if not _guarded_step(guard, messages, name, arguments):
                    refused = True
                    break
            if refused:
                break
            if domain.is_write(action.name) and not handoff:
                messages.append(
                    {"role": "assistant", "content": _confirmation(action.name, action.arguments)}
                )
                messages.append(
                    {
                        "role": "user",
                        "content": rng.choice(["Yes, please proceed.", "Yes.", "Yes, go ahead."]),
                    }
                )
            if not _guarded_step(guard, messages, action.name, dict(action.arguments)):
                refused = True
                break
            if handoff:
                break
        if refused:
            counts["refused"] += 1
            continue
        if not any(a.name in agent.rules.handoff_tools for a in task.actions):
            messages.append({"role": "assistant", "content": "Is there anything else I can help you with?"})
        out.append((task, agent, _until_transfer(messages, agent.rules.handoff_tools)))
        counts["built"] += 1
    return out, counts


def constrained_examples(
    tasks: Sequence[Task], domain_factory: Callable[[], Any], *, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Whole agent conversations in the constrained action format from each task's gold replay
    (:func:`gold_conversations`), one ``agent_actions`` record each."""
    conversations, counts = gold_conversations(tasks, domain_factory, seed=seed)
    records = [
        action_record(agent, messages, record_id=f"{task.id}:actions", task_id=task.id, source="gold")
        for task, agent, messages in conversations
    ]
    return records, counts


def step_examples(
    tasks: Sequence[Task], domain_factory: Callable[[], Any], *, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``agent_steps`` records: one per agent step of each gold conversation, in the compact agent
    prompt (:data:`~concierge.support.actions.COMPACT_AGENT_PROMPT`): the tool lines, the window of
    the conversation before the step exactly as :func:`~concierge.support.actions.compact_history`
    shows it at inference, and the step as action JSON (the one turn learned, ``loss_on: last``).
    Each example is a few hundred tokens, where a whole conversation with the policy is thousands.
    A step that uses a value its window does not show (:func:`grounded_step`) is left out, counted
    as ``ungrounded``."""
    from concierge.support.actions import (
        COMPACT_AGENT_PROMPT,
        compact_history,
        compact_instructions,
        render_history,
    )

    conversations, counts = gold_conversations(tasks, domain_factory, seed=seed)
    counts["ungrounded"] = 0
    records: list[dict[str, Any]] = []
    for task, agent, messages in conversations:
        handoff = agent.rules.handoff_tools
        system = compact_instructions(agent.domain, handoff)
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            step = render_history([message], handoff)
            if len(step) != 1:  # one action per step (the gold has one call per message)
                continue
            window = compact_history(messages[:i], handoff)
            if not grounded_step(step[0]["content"], window):
                counts["ungrounded"] += 1
                continue
            records.append(
                {
                    "kind": "agent_steps",
                    "id": f"{task.id}:step:{i}",
                    "task_id": task.id,
                    "source": "gold",
                    "format": COMPACT_AGENT_PROMPT,
                    "loss_on": "last",
                    "messages": [{"role": "system", "content": system}, *window, step[0]],
                }
            )
    counts["steps"] = len(records)
    return records, counts


_QUOTED = re.compile(r'"([^"]+)"')


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [str(value)]


def grounded_step(step: str, window: list[dict[str, str]]) -> bool:
    """Whether every value a step writes is in the window it is learned from: a tool call's argument
    values, and the quoted values (ids) of a message such as a proposal. A step whose evidence fell
    out of the window would teach the model to invent ids, so it is not an example."""
    action = json.loads(step)
    seen = " ".join(m["content"] for m in window)
    if action.get("action") == "tool":
        values = _leaves(action.get("arguments") or {})
    elif action.get("action") == "message":
        values = _QUOTED.findall(action.get("content") or "")
    else:
        return True
    return all(v in seen or v.lstrip("#") in seen for v in values)


# --------------------------------------------------------------------------- rejection sampling


def _passed(record: dict[str, Any]) -> bool:
    """A conversation worth learning from: it succeeded, its database is the gold one, no error."""
    return bool(record.get("success")) and bool(record.get("db_match")) and not record.get("error")


def sampled_examples(
    transcripts: Sequence[dict[str, Any]], domain_factory: Callable[[], Any], flows: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Examples from the project's own evaluation transcripts (``concierge eval support --json``),
    keeping only conversations that passed (rejection sampling): an agent-mode conversation becomes
    one ``agent_actions`` record (in the constrained format, whatever format its model used), a
    guided-mode one a ``guided`` record per customer message with the command that was acted on.
    Returns the records and ``{"kept", "rejected", "agent", "guided"}``."""
    from concierge.support.guided.command import command_messages
    from concierge.train.guided_data import command_json

    records: list[dict[str, Any]] = []
    counts = {"kept": 0, "rejected": 0, "agent": 0, "guided": 0}
    agent = _constrained_agent(domain_factory())
    for transcript in transcripts:
        if not _passed(transcript):
            counts["rejected"] += 1
            continue
        counts["kept"] += 1
        task_id = str(transcript.get("task_id"))
        trial = transcript.get("trial", 0)
        messages = list(transcript.get("messages") or [])
        if transcript.get("mode") == "agent":
            records.append(
                action_record(
                    agent,
                    messages,
                    record_id=f"{task_id}:{trial}:sampled",
                    task_id=task_id,
                    source="transcript",
                )
            )
            counts["agent"] += 1
            continue
        commands = list(transcript.get("commands") or [])
        convo = [
            {"role": str(m["role"]), "content": str(m["content"])}
            for m in messages
            if m.get("role") in ("user", "assistant") and m.get("content")
        ]
        user_positions = [i for i, m in enumerate(convo) if m["role"] == "user"]
        for index, (position, command) in enumerate(zip(user_positions, commands, strict=False)):
            intent = command.get("intent") or NO_INTENT
            slots = {k: v for k, v in (command.get("slots") or {}).items() if k in flows.slots}
            prefix = convo[: position + 1][-6:]
            target = {"intent": intent, "slots": slots}
            chat = command_messages(flows, prefix)
            chat.append({"role": "assistant", "content": command_json(target, flows)})
            records.append(
                {
                    "kind": "guided",
                    "id": f"{task_id}:{trial}:sampled:{index}",
                    "task_id": task_id,
                    "turn": "sampled",
                    "transcript": prefix,
                    "command": target,
                    "messages": chat,
                }
            )
            counts["guided"] += 1
    return records, counts


def read_transcripts(folder: Any) -> list[dict[str, Any]]:
    """The transcripts of an evaluation run (``<run>_transcripts/*.json``), in name order."""
    from pathlib import Path

    from concierge.train.records import DatasetError

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: transcripts folder not found (concierge eval support --json RUN writes RUN_transcripts/)"
        )
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: not a transcript ({exc})") from None
        if not isinstance(data, dict) or "mode" not in data or "messages" not in data:
            raise DatasetError(f"{path}: not a transcript (needs mode and messages, as eval support writes)")
        out.append(data)
    if not out:
        raise DatasetError(f"{folder}: no transcripts (*.json) in it")
    return out
