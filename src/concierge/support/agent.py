"""Agent mode: the model reads the policy and calls the domain's tools.

Two ways to take actions (``actions``, per alias in the deployment: ``actions: tools | constrained``):

* ``tools``: the OpenAI tools format, for large models trained on it;
* ``constrained``: each step is one JSON action decoded under a schema built from the domain's
  tools (:mod:`concierge.support.actions`): a tool call with valid arguments, a message to the
  customer or a transfer, which a small model can drive.

Each model turn goes through the hub; every tool call passes the guardrails before it reaches
the domain; results (or ``Error: ...`` text, also for malformed arguments) go back to the
model, until it answers the customer or ``max_steps`` tool calls were spent. Every message to
the customer, in both ways, is bounded in length and cut where it starts repeating itself
(:func:`concierge.models.replies.bound_reply`); the same reply three turns running becomes a plain
offer of a person. Conversation state is a JSON dict (``messages``, ``guard``, ``status``) that the
session layer persists, so a turn can continue in another process.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from concierge.models.engine import ChatHub, ModelError, ServingHub
from concierge.models.hub import alias_option
from concierge.models.replies import bound_reply, same_reply
from concierge.support.actions import (
    COMPACT_AGENT_PROMPT,
    ActionParser,
    action_instructions,
    action_schema,
    compact_history,
    compact_instructions,
    cut_message,
    handoff_tool,
    render_history,
)
from concierge.support.grounding import Evidence
from concierge.support.guardrails import Guard, GuardRules, Turn, result_text

TRANSFER_MESSAGE = "YOU ARE BEING TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."
ACTION_MODES = ("tools", "constrained")
UNCLEAR_MESSAGE = "Could you tell me a bit more about what you need?"
REPEATING_MESSAGE = (
    "I'm sorry, I don't seem to be getting this right. Could you say it another way, or shall I transfer "
    "you to a human agent?"
)
_CHARS_PER_TOKEN = 3.2  # conservative for English and JSON with BPE tokenizers


@dataclass
class TurnResult:
    """What one customer message produced."""

    message: str
    actions: list[dict[str, Any]] = field(default_factory=list)
    status: str = "open"  # open | handoff | closed
    usage: dict[str, float] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0, "seconds": 0.0}
    )
    handoff: dict[str, Any] | None = None
    error: str | None = None  # a model failure the agent answered around

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "actions": self.actions, "status": self.status}


def add_usage(usage: dict[str, float], response: dict[str, Any], seconds: float) -> None:
    u = response.get("usage") or {}
    usage["prompt_tokens"] += int(u.get("prompt_tokens") or 0)
    usage["completion_tokens"] += int(u.get("completion_tokens") or 0)
    usage["model_calls"] += 1
    usage["seconds"] += seconds


def current_turn(messages: list[dict[str, Any]]) -> Turn:
    """The guard's view of the conversation: the latest customer message and what preceded it."""
    user_positions = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_positions:
        return Turn("", -1, None, "")
    last = user_positions[-1]
    agent_before = None
    for m in reversed(messages[:last]):
        if m.get("role") == "assistant" and m.get("content") and not m.get("tool_calls"):
            agent_before = m["content"]
            break
        if m.get("role") == "user":
            break
    customer_text = "\n".join(str(messages[i].get("content") or "") for i in user_positions)
    return Turn(
        str(messages[last].get("content") or ""),
        len(user_positions) - 1,
        agent_before,
        customer_text,
        evidence=Evidence.from_messages(messages),  # the grounding check before any write
    )


class ToolAgent:
    """The classic tool-calling loop over one domain."""

    mode = "agent"

    def __init__(
        self,
        domain: Any,
        hub: ChatHub,
        alias: str = "support-agent",
        *,
        rules: GuardRules | None = None,
        max_steps: int = 12,
        max_tokens: int = 512,
        temperature: float = 0.0,
        tenant: str | None = None,
        handoff_message: str = TRANSFER_MESSAGE,
        max_history_chars: int = 24000,
        actions: str | None = None,
        max_reply_chars: int = 1200,
    ) -> None:
        self.domain = domain
        self.hub = hub
        self.alias = alias
        self.rules = rules or GuardRules.from_dict(None)
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.tenant = tenant
        self.handoff_message = handoff_message
        self.max_history_chars = max_history_chars
        self._full_tools = domain.openai_tools()
        self.context_length = _context_length(hub, alias)
        self.actions = actions or alias_option(hub, alias, "actions") or "tools"
        if self.actions not in ACTION_MODES:
            raise ValueError(f"actions must be one of {', '.join(ACTION_MODES)}, not {self.actions!r}")
        self.max_reply_chars = max_reply_chars
        self._transfer_tool = handoff_tool(domain, self.rules.handoff_tools)
        if self.actions == "constrained":
            self.action_schema = action_schema(domain, self.rules.handoff_tools)
            # Before the customer is identified the guard refuses every account tool, so the grammar
            # offers only the tools it would let through (the guard still checks each call).
            # Once identified, identification tools are refused ("already identified"): left out too.
            before = set(self.rules.identify_tools) | set(self.rules.open_tools) | set(self.rules.claim_tools)
            self.unidentified_schema = _only(self.action_schema, lambda name: name in before)
            self.identified_schema = _only(
                self.action_schema, lambda name: name not in self.rules.identify_tools
            )
            self._parser = ActionParser(self.action_schema)
            self._instructions = action_instructions(domain, self.rules.handoff_tools)
        # An alias trained on the compact agent prompt (its card's provenance) is served that prompt:
        # a small model scores far better on the prompt it was trained on.
        self.compact_prompt = (
            self.actions == "constrained" and trained_prompt(hub, alias) == COMPACT_AGENT_PROMPT
        )

    def _budget(self, system: str) -> tuple[str, list[dict[str, Any]], int]:
        """System prompt, tools and history budget (chars) that fit the model's context window.

        Small embedded models have 4k-token windows: a τ² policy plus its tool schemas can exceed
        that, so descriptions are shortened first, then the policy is cut, rather than failing.
        In constrained mode the tools are lines of the system prompt (no ``tools=``) and only the
        policy is cut, never the instructions that follow it.
        """
        if self.actions == "constrained":
            if not self.context_length:
                return f"{system}\n\n{self._instructions}", [], self.max_history_chars
            budget = int(self.context_length * _CHARS_PER_TOKEN) - int(self.max_tokens * _CHARS_PER_TOKEN)
            room_for_policy = int(budget * 0.7) - len(self._instructions)
            if len(system) > room_for_policy:
                system = (
                    system[: max(room_for_policy, 500)] + "\n[policy truncated to fit the model's context]"
                )
            system = f"{system}\n\n{self._instructions}"
            return system, [], max(1000, min(self.max_history_chars, budget - len(system)))
        tools = self._full_tools
        if not self.context_length:
            return system, tools, self.max_history_chars
        budget = int(self.context_length * _CHARS_PER_TOKEN) - int(self.max_tokens * _CHARS_PER_TOKEN)
        if len(system) + len(json.dumps(tools)) > budget * 0.75:
            tools = [_compact_tool(t) for t in tools]
        room_for_policy = int(budget * 0.75) - len(json.dumps(tools))
        if len(system) > room_for_policy:
            system = system[: max(room_for_policy, 500)] + "\n[policy truncated to fit the model's context]"
        history = max(1000, min(self.max_history_chars, budget - len(system) - len(json.dumps(tools))))
        return system, tools, history

    def system_prompt(self, guard: Guard | None) -> str:
        """The policy prompt. Tools mode says who the customer is; constrained mode (``guard`` None)
        keeps one prompt for the whole conversation, as its training data has it (the identification
        is in the history), so llama.cpp reuses the cached prompt from step to step."""
        if guard is None:
            who = "Identify the customer with the tools first; their results show who the customer is."
        elif guard.user_id:
            who = f"The customer has been identified as user id {guard.user_id}."
        else:
            who = "The customer has not been identified yet."
        return (
            f"You are a customer service agent for the {self.domain.name} domain. Follow the policy below "
            "exactly. Use the tools to look things up and to make changes; never invent information. "
            "Make at most one tool call at a time. Before any change to the database, list the details and "
            "ask the customer to confirm with an explicit yes. Identify the customer before accessing any "
            "account. If a request is outside the policy, politely refuse.\n"
            f"{who}\n\n# Policy\n{self.domain.policy}"
        )

    def respond(self, state: dict[str, Any], user_text: str) -> TurnResult:
        """Add the customer's message to ``state`` and run the loop until the agent answers."""
        messages: list[dict[str, Any]] = state.setdefault("messages", [])
        guard = Guard(self.domain, self.rules, state.setdefault("guard", {}))
        messages.append({"role": "user", "content": user_text})
        result = TurnResult("")
        steps = 0
        while True:
            try:
                message = self._next_step(guard, messages, result)
            except ModelError as exc:
                # The model is down or the context overflowed: answer politely, keep the state usable.
                result.usage["model_errors"] = result.usage.get("model_errors", 0) + 1
                result.error = f"{type(exc).__name__}: {exc.message}"
                text = "I'm sorry, I'm having trouble answering right now. Please try again in a moment."
                messages.append({"role": "assistant", "content": text})
                result.message = text
                break
            calls = message.get("tool_calls") or []
            if not calls:
                text = self._checked_reply(message.get("content") or "", messages, result)
                messages.append({"role": "assistant", "content": text})
                result.message = text
                break
            if steps >= self.max_steps:
                text = (
                    "I'm sorry, I could not complete this request. Let me know if you want me to transfer "
                    "you to a human agent."
                )
                messages.append({"role": "assistant", "content": text})
                result.message = text
                break
            calls = [_normalise_call(c) for c in calls]
            messages.append(
                {"role": "assistant", "content": message.get("content") or "", "tool_calls": calls}
            )
            handed_off = False
            for call in calls:
                steps += 1
                action = self._run_call(guard, call, messages)
                result.actions.append(action)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "name": call["function"]["name"],
                        "content": result_text(action),
                    }
                )
                if action.get("ok") and action["tool"] in self.rules.handoff_tools:
                    handed_off = True
            if handed_off:
                # Policy: after the transfer call, the agent sends the fixed transfer message and stops.
                messages.append({"role": "assistant", "content": self.handoff_message})
                result.message = self.handoff_message
                result.status = "handoff"
                result.handoff = guard.state.get("handoff")
                break
        state["status"] = result.status if result.status != "open" else state.get("status", "open")
        return result

    def _next_step(self, guard: Guard, messages: list[dict[str, Any]], result: TurnResult) -> dict[str, Any]:
        """The model's next step as an assistant message (``content`` and/or ``tool_calls``)."""
        if self.actions == "constrained":
            schema = self.step_schema(guard, must_answer=_stuck(result.actions))
            return self._constrained_step(self.step_prompt(messages), result, schema)
        system, tools, history_chars = self._budget(self.system_prompt(guard))
        history = self._history(messages, history_chars)
        request = {
            "messages": [{"role": "system", "content": system}, *history],
            "tools": tools,
            "tool_choice": "auto",
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        response = self._call(request, result)
        return (response.get("choices") or [{}])[0].get("message") or {}

    def _call(self, request: dict[str, Any], result: TurnResult) -> dict[str, Any]:
        started = time.perf_counter()
        response = self.hub.chat(self.alias, request, tenant=self.tenant)
        add_usage(result.usage, response, time.perf_counter() - started)
        return response

    def constrained_system(self) -> str:
        """The whole system prompt of a constrained step (policy, cut to fit, and the action rules;
        the tool lines alone for an alias trained on the compact prompt)."""
        if self.compact_prompt:
            return compact_instructions(self.domain, self.rules.handoff_tools)
        return self._budget(self.system_prompt(None))[0]

    def step_prompt(self, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        """The messages one constrained step sends: the system prompt and the history as the model
        reads it (the whole recent history, or the compact prompt's window)."""
        if self.compact_prompt:
            system = compact_instructions(self.domain, self.rules.handoff_tools)
            rendered = compact_history(messages, self.rules.handoff_tools)
        else:
            system, _, history_chars = self._budget(self.system_prompt(None))  # once a step
            rendered = render_history(self._history(messages, history_chars), self.rules.handoff_tools)
        return [{"role": "system", "content": system}, *rendered]

    def step_schema(self, guard: Guard, *, must_answer: bool = False) -> dict[str, Any]:
        """The schema this step decodes under: the tools the guard would consider now.

        Before the customer is identified (where the domain requires it) only identification and
        open tools; after it, no identification tools; ``must_answer`` (the turn's last two calls,
        to one tool, failed): a message only, so the model tells the customer instead of spending
        its steps on the same refused call. The guard still checks every call."""
        if must_answer:
            return {"anyOf": self.action_schema["anyOf"][:1]}
        if guard.user_id is None and self.rules.require_identity:
            return self.unidentified_schema
        if guard.user_id is not None:
            return self.identified_schema
        return self.action_schema

    def constrained_request(
        self, prompt: list[dict[str, str]], schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The chat request for one constrained step: ``prompt`` (:meth:`step_prompt`) under
        ``schema`` (default: every action)."""
        schema = schema or self.action_schema
        return {
            "messages": prompt,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "agent_action", "schema": schema, "strict": True},
            },
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _constrained_step(
        self, prompt: list[dict[str, str]], result: TurnResult, schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One action under the grammar; an invalid one (cut by max_tokens) is retried once, then the
        agent asks the customer to say more rather than act on it."""
        request = self.constrained_request(prompt, schema)
        for attempt in range(2):
            if attempt:
                request = {**request, "temperature": max(0.7, self.temperature), "seed": attempt}
            response = self._call(request, result)
            message = (response.get("choices") or [{}])[0].get("message") or {}
            text = str(message.get("content") or "")
            action, problem = self._parser.parse(text)
            if action is not None:
                return action.assistant_message(self._transfer_tool)
            partial = cut_message(text) if _finish(response) == "length" else None
            if partial:  # a message max_tokens cut short: send what was written (bounded later)
                result.usage["cut_messages"] = result.usage.get("cut_messages", 0) + 1
                return {"role": "assistant", "content": partial}
            result.usage["invalid_actions"] = result.usage.get("invalid_actions", 0) + 1
            result.usage["last_invalid_action"] = problem  # type: ignore[assignment]
        return {"role": "assistant", "content": UNCLEAR_MESSAGE}

    def _checked_reply(self, text: str, messages: list[dict[str, Any]], result: TurnResult) -> str:
        """The message to the customer: bounded, loops cut, and no third identical reply in a row."""
        reply = bound_reply(text, self.max_reply_chars)
        if reply.looped:
            result.usage["looped_replies"] = result.usage.get("looped_replies", 0) + 1
        text = reply.text or UNCLEAR_MESSAGE
        previous = [
            str(m.get("content") or "")
            for m in messages
            if m.get("role") == "assistant" and not m.get("tool_calls") and m.get("content")
        ][-2:]
        if len(previous) == 2 and all(same_reply(text, p) for p in previous):
            result.usage["looped_replies"] = result.usage.get("looped_replies", 0) + 1
            text = REPEATING_MESSAGE
        return text

    def _run_call(self, guard: Guard, call: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        name = call["function"]["name"]
        raw = call["function"].get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
        except json.JSONDecodeError as exc:
            return {
                "tool": name,
                "arguments": raw,
                "kind": "unknown",
                "ok": False,
                "refused": False,
                "error": f"{name}: arguments are not valid JSON ({exc.msg} at position {exc.pos}); "
                "send a JSON object.",
            }
        if not isinstance(arguments, dict):
            return {
                "tool": name,
                "arguments": raw,
                "kind": "unknown",
                "ok": False,
                "refused": False,
                "error": f"{name}: arguments must be a JSON object.",
            }
        # The guard judges the customer's latest message, not the tool messages after it.
        return guard.call(name, arguments, current_turn(messages))

    def _history(self, messages: list[dict[str, Any]], budget: int | None = None) -> list[dict[str, Any]]:
        """Recent messages within a character budget; never starts on an orphan tool result."""
        budget = budget or self.max_history_chars
        out: list[dict[str, Any]] = []
        total = 0
        for m in reversed(messages):
            size = len(str(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or ""))
            if out and total + size > budget:
                break
            out.append(m)
            total += size
        out.reverse()
        while out and out[0].get("role") in ("tool",) or (out and out[0].get("tool_calls")):
            out.pop(0)
        return out


def _normalise_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    return {
        "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": str(function.get("name") or ""), "arguments": arguments},
    }


def _context_length(hub: ChatHub, alias: str) -> int | None:
    """The alias's context window per request, if the hub serves cards (None: assume it is large)."""
    if not isinstance(hub, ServingHub):  # a chat-only hub (the Hub protocols, models/engine.py)
        return None
    try:
        value = hub.card(alias).context_length
    except ModelError:  # an alias the hub does not know: no budget
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def _only(schema: dict[str, Any], keep: Any) -> dict[str, Any]:
    """The action schema with only the tool variants whose name ``keep`` accepts (messages and
    transfers stay)."""
    return {
        "anyOf": [
            v
            for v in schema["anyOf"]
            if "name" not in v["properties"] or keep(v["properties"]["name"]["const"])
        ]
    }


def _finish(response: dict[str, Any]) -> str | None:
    return (response.get("choices") or [{}])[0].get("finish_reason")


def _stuck(actions: list[dict[str, Any]]) -> bool:
    """The turn's last two tool calls were to the same tool and both failed (refused or an error)."""
    if len(actions) < 2:
        return False
    a, b = actions[-2], actions[-1]
    return not a.get("ok") and not b.get("ok") and a.get("tool") == b.get("tool")


def trained_prompt(hub: ChatHub | None, alias: str | None) -> str | None:
    """The prompt an alias was trained on (its deployment provenance's ``prompt``), if any."""
    spec_of = getattr(hub, "spec", None)
    if not alias or not callable(spec_of):
        return None
    try:
        prompt = (getattr(spec_of(alias), "provenance", None) or {}).get("prompt")
    except ModelError:  # an alias the hub does not know, or a hub without deployment specs
        return None
    return str(prompt) if prompt else None


def _compact_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """The tool with its first description sentence and bare parameter types."""
    function = tool.get("function") or {}
    description = str(function.get("description") or "").strip().split("\n")[0].split(". ")[0][:160]
    params = function.get("parameters") or {}
    properties = {
        name: {k: v for k, v in spec.items() if k in ("type", "enum", "items")}
        for name, spec in (params.get("properties") or {}).items()
    }
    return {
        "type": "function",
        "function": {
            "name": function.get("name"),
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": params.get("required", []),
            },
        },
    }
