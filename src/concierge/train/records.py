"""Training data files: JSON lines with a schema per kind, a content hash and a sidecar.

``<file>.meta.json`` beside the data holds ``{kind, count, sha256, source, counts, created}``;
``sha256`` is over the canonical lines (keys sorted, compact separators, one per line), so the
same examples always hash the same whatever the JSON formatting of the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

# --------------------------------------------------------------------------- schemas

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name", "arguments"],
                        "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
                    },
                },
            },
        },
    },
}
_MESSAGES = {"type": "array", "minItems": 2, "items": _MESSAGE}
_TRANSCRIPT = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": ["user", "assistant"]}, "content": {"type": "string"}},
        "additionalProperties": False,
    },
}

# The messages of the constrained-action kinds: a system prompt, then plain user/assistant turns.
_ACTION_MESSAGES: dict[str, Any] = {
    "type": "array",
    "minItems": 3,
    "prefixItems": [{"properties": {"role": {"const": "system"}}}],
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}},
        "additionalProperties": False,
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "guided": {
        "type": "object",
        "required": ["kind", "id", "task_id", "turn", "transcript", "command", "messages"],
        "properties": {
            "kind": {"const": "guided"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "turn": {"enum": ["opening", "identify", "order_id", "reason", "confirm", "followup", "sampled"]},
            "transcript": _TRANSCRIPT,
            "command": {
                "type": "object",
                "required": ["intent", "slots"],
                "properties": {"intent": {"type": "string"}, "slots": {"type": "object"}},
                "additionalProperties": False,
            },
            "messages": _MESSAGES,
        },
        "additionalProperties": False,
    },
    "agent": {
        "type": "object",
        "required": ["kind", "id", "task_id", "messages", "tools"],
        "properties": {
            "kind": {"const": "agent"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "messages": _MESSAGES,
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    },
    "agent_actions": {
        "type": "object",
        "required": ["kind", "id", "task_id", "source", "format", "messages"],
        "properties": {
            "kind": {"const": "agent_actions"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "source": {"enum": ["gold", "transcript"]},
            "format": {"const": "concierge-action-v1"},
            "messages": _ACTION_MESSAGES,
        },
        "additionalProperties": False,
    },
    "agent_steps": {
        "type": "object",
        "required": ["kind", "id", "task_id", "source", "format", "loss_on", "messages"],
        "properties": {
            "kind": {"const": "agent_steps"},
            "id": {"type": "string", "minLength": 1},
            "task_id": {"type": "string"},
            "source": {"enum": ["gold", "transcript"]},
            "format": {"const": "concierge-agent-v1"},
            "loss_on": {"const": "last"},
            "messages": _ACTION_MESSAGES,
        },
        "additionalProperties": False,
    },
    "shop": {
        "type": "object",
        "required": ["kind", "id", "turns", "query", "messages"],
        "properties": {
            "kind": {"const": "shop"},
            "id": {"type": "string", "minLength": 1},
            "turns": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "query": {"type": "object"},
            "messages": _MESSAGES,
        },
        "additionalProperties": False,
    },
    "distilled": {
        "type": "object",
        "required": ["kind", "id", "teacher", "messages"],
        "properties": {
            "kind": {"const": "distilled"},
            "id": {"type": "string", "minLength": 1},
            "teacher": {"type": "string"},
            "messages": _MESSAGES,
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    },
}
_VALIDATORS = {kind: jsonschema.Draft202012Validator(schema) for kind, schema in SCHEMAS.items()}


class DatasetError(ValueError):
    """A dataset that does not match its schema: one line naming the file and line."""


def validate_record(record: Any, where: str = "record") -> None:
    """Raise :class:`DatasetError` (naming ``where``) unless ``record`` matches its kind's schema."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    kind = record.get("kind")
    if kind not in _VALIDATORS:
        raise DatasetError(f"{where}: kind must be one of {', '.join(SCHEMAS)}, got {kind!r}")
    error = jsonschema.exceptions.best_match(_VALIDATORS[kind].iter_errors(record))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise DatasetError(f"{where}: {kind} record, field {path}: {error.message}")
    messages = record["messages"]
    if kind in ("agent_actions", "agent_steps"):
        _check_actions(messages, where, kind)
    if messages[-1].get("role") != "assistant":
        raise DatasetError(f"{where}: {kind} record, the last message must be the assistant's (the target)")
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and not message.get("content") and not message.get("tool_calls"):
            raise DatasetError(f"{where}: {kind} record, messages/{i}: assistant message without content")


_ACTION_KEYS = {
    "tool": ("action", "name", "arguments"),
    "message": ("action", "content"),
    "transfer": ("action", "summary"),
}


def _check_actions(messages: list[dict[str, Any]], where: str, kind: str = "agent_actions") -> None:
    """Every assistant turn of an ``agent_actions`` or ``agent_steps`` record is one action in the
    constrained format."""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            action = json.loads(message["content"])
        except json.JSONDecodeError:
            action = None
        keys = _ACTION_KEYS.get(action.get("action")) if isinstance(action, dict) else None
        if keys is None or tuple(action) != keys:
            raise DatasetError(
                f"{where}: {kind} record, messages/{i}: assistant content must be one action, "
                '{"action":"tool","name","arguments"} | {"action":"message","content"} | {"action":"transfer","summary"}'
            )


def canonical_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_hash(records: Iterable[dict[str, Any]]) -> str:
    """sha256 over the canonical lines, in order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(canonical_line(record).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


@dataclass
class DatasetInfo:
    path: Path
    kind: str
    count: int
    sha256: str
    counts: dict[str, int]


def write_dataset(
    path: Path | str, records: Sequence[dict[str, Any]], *, source: dict[str, Any] | None = None
) -> DatasetInfo:
    """Validate and write ``records`` as JSON lines, plus the ``.meta.json`` sidecar."""
    path = Path(path)
    if not records:
        raise DatasetError(f"{path}: no examples to write")
    for i, record in enumerate(records, 1):
        validate_record(record, f"{path}: example {i}")
    kinds = Counter(r["kind"] for r in records)
    kind = next(iter(kinds)) if len(kinds) == 1 else "mixed"
    counts = dict(Counter(f"{r['kind']}:{r.get('turn', 'all')}" for r in records))
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [canonical_line(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    digest = content_hash(records)
    meta = {
        "kind": kind,
        "count": len(records),
        "sha256": digest,
        "counts": counts,
        "source": source or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_path(path).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return DatasetInfo(path, kind, len(records), digest, counts)


def read_dataset(path: Path | str) -> list[dict[str, Any]]:
    """Read and validate a JSON-lines dataset; the first bad line raises :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            validate_record(record, f"{path}:{number}")
            records.append(record)
    if not records:
        raise DatasetError(f"{path}: no examples")
    sidecar = meta_path(path)
    if sidecar.is_file():
        try:
            expected = json.loads(sidecar.read_text(encoding="utf-8")).get("sha256")
        except (OSError, json.JSONDecodeError, AttributeError):
            raise DatasetError(f"{sidecar}: not a dataset sidecar (JSON with sha256)") from None
        actual = content_hash(records)
        if expected and expected != actual:
            raise DatasetError(
                f"{path}: content hash {actual[:16]} does not match {sidecar.name} ({str(expected)[:16]}): "
                "the file changed after it was built; rebuild it"
            )
    return records


def dataset_hash(path: Path | str) -> str:
    """The content hash of a dataset file (recomputed, not read from the sidecar)."""
    return content_hash(read_dataset(path))
