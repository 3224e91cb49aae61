"""Guided mode (Rasa CALM style): the model only turns the conversation into a command.

Per customer message the model produces ``{intent, slots}`` under a JSON schema built from the
domain's flows file (:mod:`.command`); a rule-based extractor (regexes and keyword lists from the
same file, :mod:`.slots`) backs it up and is merged with it, so a weak model still works.
Business logic is declarative: ONE YAML file per domain (``domains/<domain>/flows.yaml``,
:mod:`.flows`) lists intents, their slots and steps, with expressions in :mod:`.expr`.
:mod:`.engine` runs those steps through the guardrails into ``domain.call``.
"""

from __future__ import annotations

from concierge.support.guided.command import (
    NO_INTENT,
    PROMPT_VERSION,
    Command,
    command_messages,
    command_request,
    command_schema,
)
from concierge.support.guided.engine import GuidedAgent
from concierge.support.guided.flows import Flows, load_flows
from concierge.support.guided.slots import RuleExtractor, extract_slot, model_slot_value

__all__ = [
    "NO_INTENT",
    "PROMPT_VERSION",
    "Command",
    "Flows",
    "GuidedAgent",
    "RuleExtractor",
    "command_messages",
    "command_request",
    "command_schema",
    "extract_slot",
    "load_flows",
    "model_slot_value",
]
