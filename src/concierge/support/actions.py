"""Constrained agent actions: one JSON action per step, decoded under a schema built from the tools.

A small model cannot be trusted to write the OpenAI tools format (the embedded model made no tool
call in 74 conversations). In ``constrained`` mode each agent step is instead decoded under
:func:`action_schema`, so the output is always exactly one of:

* ``{"action": "tool", "name": <a tool>, "arguments": {...}}``: the arguments match that tool's
  own schema (``name`` is a const per variant of an ``anyOf``);
* ``{"action": "message", "content": "..."}``: a message to the customer, bounded in length;
* ``{"action": "transfer", "summary": "..."}``: a transfer to a human (the domain's handoff tool).

The history the model reads is rendered the same way (:func:`render_history`): its own past steps
as action JSON, tool results as ``TOOL RESULT`` messages. The training data builder
(``concierge.train.agent_data``) renders its conversations through the same functions, so a model
fine-tuned on them sees at inference exactly what it was trained on (:data:`ACTION_FORMAT`).
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema

ACTION_FORMAT = "concierge-action-v1"
MAX_MESSAGE_CHARS = 400  # a message to the customer, in characters (the grammar's bound)
MAX_SUMMARY_CHARS = 200
MAX_ARGUMENT_CHARS = 64  # free-text arguments: ids, names, emails, addresses, reasons
MAX_ARGUMENT_ITEMS = 8
TOOL_RESULT_PREFIX = "TOOL RESULT"
MAX_TOOL_RESULT_CHARS = 1800

# The compact prompt an in-house model is trained on and served with (its card's ``prompt``): no
# policy text, one short line per tool, and a window of the conversation (the customer's first
# message and the latest steps), so each step fits a few hundred tokens and a small model trains
# on the CPU in minutes. The policy is still enforced: the guardrails check every call.
COMPACT_AGENT_PROMPT = "concierge-agent-v1"
COMPACT_HISTORY_CHARS = 1200  # the window of the conversation, in characters
COMPACT_RESULT_CHARS = 800  # one tool result, as compact JSON
COMPACT_OPENING_CHARS = 700  # the customer's first message, always kept (its identity often comes last)


def _bounded(schema: Any) -> Any:
    """A tool's argument schema for decoding: descriptions dropped, strings and arrays bounded,
    no properties beyond the declared ones (so a weak model cannot loop inside the JSON)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {k: v for k, v in schema.items() if k not in ("description", "title", "examples")}
    kind = out.get("type")
    if kind == "string" and "enum" not in out and "const" not in out:
        out["maxLength"] = min(int(out.get("maxLength") or MAX_ARGUMENT_CHARS), MAX_ARGUMENT_CHARS)
    if kind == "array":
        out["maxItems"] = min(int(out.get("maxItems") or MAX_ARGUMENT_ITEMS), MAX_ARGUMENT_ITEMS)
        if "items" in out:
            out["items"] = _bounded(out["items"])
    if kind == "object" or "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _bounded(v) for k, v in (out.get("properties") or {}).items()}
        out["additionalProperties"] = False
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [_bounded(s) for s in out[key]]
    return out


def _functions(domain: Any, handoff_tools: list[str]) -> list[dict[str, Any]]:
    return [t["function"] for t in domain.openai_tools() if t["function"]["name"] not in handoff_tools]


def handoff_tool(domain: Any, handoff_tools: list[str]) -> str | None:
    """The domain's transfer tool (the first handoff tool it has), if any."""
    names = {t["function"]["name"] for t in domain.openai_tools()}
    return next((n for n in handoff_tools if n in names), None)


def action_schema(
    domain: Any, handoff_tools: list[str], *, max_message_chars: int = MAX_MESSAGE_CHARS
) -> dict[str, Any]:
    """The JSON schema one agent step is decoded under (see the module docstring)."""
    variants: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "action": {"const": "message"},
                "content": {"type": "string", "minLength": 1, "maxLength": max_message_chars},
            },
            "required": ["action", "content"],
            "additionalProperties": False,
        }
    ]
    for function in _functions(domain, handoff_tools):
        params = _bounded(copy.deepcopy(function.get("parameters") or {"type": "object"}))
        params.setdefault("properties", {})
        variants.append(
            {
                "type": "object",
                "properties": {
                    "action": {"const": "tool"},
                    "name": {"const": function["name"]},
                    "arguments": params,
                },
                "required": ["action", "name", "arguments"],
                "additionalProperties": False,
            }
        )
    if handoff_tool(domain, handoff_tools):
        variants.append(
            {
                "type": "object",
                "properties": {
                    "action": {"const": "transfer"},
                    "summary": {"type": "string", "minLength": 1, "maxLength": MAX_SUMMARY_CHARS},
                },
                "required": ["action", "summary"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": variants}


def action_instructions(domain: Any, handoff_tools: list[str]) -> str:
    """The part of the system prompt that says how to act, with one line per tool."""
    lines = []
    for function in _functions(domain, handoff_tools):
        props = (function.get("parameters") or {}).get("properties") or {}
        required = set((function.get("parameters") or {}).get("required") or [])
        args = ", ".join(f"{k}" + ("" if k in required else "?") for k in props)
        description = str(function.get("description") or "").strip().split("\n")[0].split(". ")[0][:140]
        lines.append(f"- {function['name']}({args}): {description}")
    transfer = (
        '\n{"action":"transfer","summary":"..."} hands the customer to a human agent (only when the policy '
        "says so or the customer asks for a person)."
        if handoff_tool(domain, handoff_tools)
        else ""
    )
    return (
        "# How to act\nEach of your turns is exactly one JSON action:\n"
        '{"action":"tool","name":"<tool>","arguments":{...}} calls a tool; its result comes back in a '
        f"message starting with {TOOL_RESULT_PREFIX}.\n"
        '{"action":"message","content":"..."} writes to the customer and waits for their answer.'
        f"{transfer}\nLook things up with tools before you answer; never invent ids or details.\n"
        "# Tools\n" + "\n".join(lines)
    )


def compact_instructions(domain: Any, handoff_tools: list[str]) -> str:
    """The whole system prompt of :data:`COMPACT_AGENT_PROMPT`: how to act and the tools' names and
    arguments (``?`` marks an optional one); no policy, no descriptions."""
    lines = []
    for function in _functions(domain, handoff_tools):
        props = (function.get("parameters") or {}).get("properties") or {}
        required = set((function.get("parameters") or {}).get("required") or [])
        lines.append(f"{function['name']}({','.join(k + ('' if k in required else '?') for k in props)})")
    transfer = ' or {"action":"transfer","summary":"..."}' if handoff_tool(domain, handoff_tools) else ""
    return (
        f"You are the {domain.name} customer service agent. Each turn is one JSON action: "
        '{"action":"tool","name":"<tool>","arguments":{...}} or {"action":"message","content":"..."}'
        f"{transfer}. Identify the customer, look records up with tools, never invent ids, and ask the "
        "customer to confirm a change before you make it.\nTools: " + "; ".join(lines)
    )


def _compact_result(content: str, limit: int) -> str:
    """A tool result as compact JSON (the engine's indentation dropped), cut at ``limit``."""
    text = content
    try:
        text = json.dumps(json.loads(content), ensure_ascii=False, separators=(",", ":"))
    except (json.JSONDecodeError, TypeError):
        pass
    return text if len(text) <= limit else text[:limit] + "...(cut)"


def compact_history(
    messages: list[dict[str, Any]], handoff_tools: list[str], *, budget: int = COMPACT_HISTORY_CHARS
) -> list[dict[str, str]]:
    """State messages as :data:`COMPACT_AGENT_PROMPT` shows them: rendered as by
    :func:`render_history` with compact tool results, then the customer's first message (cut) and
    the latest messages that fit ``budget`` characters (the last one always). Training examples and
    inference both come through here, so the model reads what it was trained on."""
    rendered = render_history(messages, handoff_tools, result_chars=COMPACT_RESULT_CHARS, compact=True)
    if not rendered:
        return []
    first = next((i for i, m in enumerate(rendered) if m["role"] == "user"), None)
    window: list[dict[str, str]] = []
    total = 0
    for i in range(len(rendered) - 1, -1, -1):
        if i == first:
            break
        size = len(rendered[i]["content"])
        if window and total + size > budget:
            break
        window.append(rendered[i])
        total += size
    window.reverse()
    if first is not None and (not window or window[0] is not rendered[first]):
        opening = rendered[first]["content"]
        if len(opening) > COMPACT_OPENING_CHARS:
            opening = opening[:COMPACT_OPENING_CHARS] + "..."
        window.insert(0, {"role": "user", "content": opening})
    return window


def action_json(action: dict[str, Any]) -> str:
    """An action as the model writes it: compact JSON, keys in the schema's order."""
    kind = action.get("action")
    if kind == "tool":
        ordered = {"action": "tool", "name": action["name"], "arguments": action.get("arguments") or {}}
    elif kind == "transfer":
        ordered = {"action": "transfer", "summary": action.get("summary") or ""}
    else:
        ordered = {"action": "message", "content": action.get("content") or ""}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def _call_arguments(call: dict[str, Any]) -> Any:
    raw = (call.get("function") or {}).get("arguments")
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw
    return raw or {}


def render_history(
    messages: list[dict[str, Any]],
    handoff_tools: list[str],
    *,
    result_chars: int = MAX_TOOL_RESULT_CHARS,
    compact: bool = False,
) -> list[dict[str, str]]:
    """State messages (OpenAI format, as the session stores them) as the constrained model reads them:
    plain ``user``/``assistant`` turns, its own steps as action JSON, tool results as ``TOOL RESULT``
    user messages (chat templates differ in how, or whether, they render a ``tool`` role), cut at
    ``result_chars`` (``compact``: JSON results re-written without whitespace first)."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        if role == "user":
            out.append({"role": "user", "content": str(m.get("content") or "")})
        elif role == "assistant":
            calls = m.get("tool_calls") or []
            if not calls:
                out.append(
                    {
                        "role": "assistant",
                        "content": action_json({"action": "message", "content": m.get("content")}),
                    }
                )
            for call in calls:
                name = str((call.get("function") or {}).get("name") or "")
                args = _call_arguments(call)
                if name in handoff_tools:
                    summary = args.get("summary") if isinstance(args, dict) else None
                    action = {"action": "transfer", "summary": str(summary or "")}
                else:
                    action = {
                        "action": "tool",
                        "name": name,
                        "arguments": args if isinstance(args, dict) else {},
                    }
                out.append({"role": "assistant", "content": action_json(action)})
        elif role == "tool":
            content = str(m.get("content") or "")
            if compact:
                content = _compact_result(content, result_chars)
            elif len(content) > result_chars:
                content = content[:result_chars] + " ...(cut)"
            out.append({"role": "user", "content": f"{TOOL_RESULT_PREFIX} {m.get('name') or ''}: {content}"})
    return out


@dataclass(frozen=True)
class Action:
    """One decoded step."""

    kind: str  # "tool" | "message" | "transfer"
    name: str | None = None
    arguments: dict[str, Any] | None = None
    content: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "tool":
            return {"action": "tool", "name": self.name, "arguments": self.arguments or {}}
        if self.kind == "transfer":
            return {"action": "transfer", "summary": self.content or ""}
        return {"action": "message", "content": self.content or ""}

    def assistant_message(self, transfer_tool: str | None) -> dict[str, Any]:
        """The step as an OpenAI assistant message (what the session stores and the guard reads)."""
        if self.kind == "message":
            return {"role": "assistant", "content": self.content or ""}
        name = self.name if self.kind == "tool" else transfer_tool
        arguments = self.arguments if self.kind == "tool" else {"summary": self.content or ""}
        call = {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": str(name), "arguments": json.dumps(arguments or {}, ensure_ascii=False)},
        }
        return {"role": "assistant", "content": "", "tool_calls": [call]}


_MESSAGE_HEAD = '{"action":"message","content":"'


def cut_message(text: str) -> str | None:
    """The content of a message action that ``max_tokens`` cut short (its JSON string unterminated),
    else None: the customer gets what was written so far rather than nothing."""
    stripped = (text or "").lstrip()
    if not stripped.startswith(_MESSAGE_HEAD):
        return None
    body = stripped[len(_MESSAGE_HEAD) :]
    for trim in range(0, 7):  # drop a half-written escape (\ or \uXXXX) at the end
        candidate = body[: len(body) - trim] if trim else body
        try:
            value = json.loads(f'"{candidate}"')
        except json.JSONDecodeError:
            continue
        return value.strip() or None
    return None


class ActionParser:
    """Reads a step's output against the action schema: an :class:`Action`, or None and why not."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema.Draft202012Validator(schema)

    def parse(self, text: str) -> tuple[Action | None, str | None]:
        stripped = (text or "").strip()
        if not stripped:
            return None, "empty output"
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            return None, f"not JSON ({exc.msg} at position {exc.pos})"
        errors = sorted(self._validator.iter_errors(data), key=lambda e: e.path)
        if errors:
            return None, f"not a valid action ({errors[0].message[:160]})"
        kind = data["action"]
        if kind == "tool":
            return Action("tool", name=data["name"], arguments=dict(data.get("arguments") or {})), None
        if kind == "transfer":
            return Action("transfer", content=str(data.get("summary") or "")), None
        content = str(data.get("content") or "").strip()
        if not content:
            return None, "empty message"
        return Action("message", content=content), None
