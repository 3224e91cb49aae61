"""Flows files: a domain's intents, slots, steps, messages and guardrails, declared in ONE YAML file.

A built-in domain keeps its flows beside its tools (``support/domains/<domain>/flows.yaml``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import yaml

from concierge.support.agent import TRANSFER_MESSAGE
from concierge.support.domains import flows_path
from concierge.support.guardrails import GuardRules

# --------------------------------------------------------------------------- flows files


@dataclass
class Flows:
    """A parsed flows file."""

    domain: str
    intents: dict[str, dict[str, Any]]
    slots: dict[str, dict[str, Any]]
    identify: dict[str, Any]
    messages: dict[str, str]
    guardrails: GuardRules
    raw: dict[str, Any] = field(default_factory=dict)

    def message(self, key: str, default: str = "") -> str:
        return self.messages.get(key, default)


def load_flows(domain: str | None = None, path: str | Path | None = None) -> Flows:
    """The flows file of a domain (``domains/<domain>/flows.yaml``), or one at ``path``.

    Parsed once per file version (path, size, modification time): a support turn builds its agent
    afresh, and parsing the YAML was half the cost of a turn. Callers only read the result."""
    file = Path(path) if path else flows_path(str(domain))
    name = os.path.abspath(file)  # no realpath: one stat per turn, not one per path component
    try:
        stat = os.stat(name)
    except OSError:
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        raise FileNotFoundError(f"no flows file for domain {domain!r}: {file}")
    return _parse_flows(name, stat.st_size, stat.st_mtime_ns, domain)


@functools.lru_cache(maxsize=64)
def _parse_flows(name: str, _size: int, _mtime: int, domain: str | None) -> Flows:
    file = Path(name)
    raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    intents = raw.get("intents") or {}
    slots = raw.get("slots") or {}
    for name, intent in intents.items():
        for slot in intent.get("slots") or []:
            if slot not in slots:
                raise ValueError(f"{file.name}: intent {name} uses undeclared slot {slot}")
    messages = {
        "greeting": "Hello! How can I help you today?",
        "anything_else": "Is there anything else I can help you with?",
        "not_understood": "Sorry, I did not understand. What can I help you with?",
        "declined": "Understood, I will not make that change.",
        "handoff": TRANSFER_MESSAGE,
        "error": "I could not complete that: {error}",
        **(raw.get("messages") or {}),
    }
    return Flows(
        domain=str(raw.get("domain") or domain or file.stem),
        intents=intents,
        slots=slots,
        identify=raw.get("identify") or {},
        messages=messages,
        guardrails=GuardRules.from_dict(raw.get("guardrails")),
        raw=raw,
    )

