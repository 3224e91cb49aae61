"""The command a model turns a customer's message into, and the prompt that asks for it.

A command is ``{intent, slots}`` under a JSON schema built from the domain's flows file (intent
enum + slot properties). Two prompts ask for it: the compact ``concierge-command-v1`` prompt
(:data:`PROMPT_VERSION`) that in-house models are trained on (``concierge.train`` builds its
examples with :func:`command_messages`), and a longer one with intent and slot descriptions for
models that were not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from concierge.support.guided.flows import Flows

NO_INTENT = "none"
PROMPT_VERSION = "concierge-command-v1"
_MAX_USER_CHARS = 600
_MAX_AGENT_CHARS = 160


def command_schema(flows: Flows) -> dict[str, Any]:
    """JSON schema of a command: the intent enum plus one property per slot."""
    properties: dict[str, Any] = {}
    for name, spec in flows.slots.items():
        # Length caps keep a weak model from looping inside a string under constrained decoding.
        prop: dict[str, Any] = (
            {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 8}
            if spec.get("list")
            else {"type": "string", "maxLength": 80}
        )
        if spec.get("enum") and not spec.get("list"):
            prop["enum"] = list(spec["enum"])
        if spec.get("description"):
            prop["description"] = spec["description"]
        properties[name] = prop
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": [*flows.intents, "none"]},
            "slots": {"type": "object", "properties": properties, "additionalProperties": False},
        },
        "required": ["intent", "slots"],
        "additionalProperties": False,
    }



@dataclass
class Command:
    """What the customer wants: ordered intents (each with its text segment) and slot values."""

    intents: list[tuple[str, str]] = field(default_factory=list)  # (intent, segment text)
    slots: dict[str, Any] = field(default_factory=dict)
    source: str = "rules"

    @property
    def intent(self) -> str | None:
        return self.intents[0][0] if self.intents else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent or "none",
            "intents": [i for i, _ in self.intents],
            "slots": self.slots,
            "source": self.source,
        }


def command_messages(flows: Any, transcript: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The compact command-extraction prompt (system + transcript) in-house models are trained on.

    Kept short on purpose (training cost grows with length): the intent names, no descriptions;
    the JSON schema of :func:`command_schema` constrains the output.
    """
    intents = ", ".join(flows.intents)
    system = (
        "Output the customer's latest message as JSON: its intent and the slot values it states "
        f'(intent "{NO_INTENT}" if it starts no new request). Intents: {intents}.'
    )
    lines = []
    for m in list(transcript)[-3:]:
        text = " ".join(str(m["content"]).split())
        if m["role"] == "user":
            text = text[:_MAX_USER_CHARS]
        elif len(text) > _MAX_AGENT_CHARS:  # the agent's question is at the end of its message
            text = "..." + text[-_MAX_AGENT_CHARS:]
        lines.append(f"{m['role']}: {text}")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def command_request(
    flows: Any, transcript: Sequence[dict[str, str]], max_tokens: int = 128
) -> dict[str, Any]:
    """The chat request (compact prompt + the guided command JSON schema) for a transcript."""
    return {
        "messages": command_messages(flows, transcript),
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "command", "schema": command_schema(flows), "strict": True},
        },
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def described_command_request(flows: Any, convo: Sequence[dict[str, Any]], max_tokens: int = 200) -> dict[str, Any]:
    """The longer prompt (intent and slot descriptions) for models not trained on :data:`PROMPT_VERSION`."""
    intents = "\n".join(
        f"- {name}: {spec.get('description', '')}" for name, spec in flows.intents.items()
    )
    slots = "\n".join(
        f"- {name}: {spec.get('description', '')}" for name, spec in flows.slots.items()
    )
    transcript_text = "\n".join(f"{m['role']}: {m['content']}" for m in convo)
    return {
        "messages": [
            {
                "role": "system",
                "content": (
                    "You read a customer service conversation and output the customer's latest request as JSON "
                    'with an intent and the slot values they stated. Use intent "none" if the message does not '
                    f"start a new request. Only copy slot values the customer actually said.\nIntents:\n{intents}"
                    f"\nSlots:\n{slots}"
                ),
            },
            {"role": "user", "content": transcript_text},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "command", "schema": command_schema(flows), "strict": True},
        },
        "temperature": 0,
        "max_tokens": max_tokens,
    }
