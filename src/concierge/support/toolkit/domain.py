"""Support domains: a policy, a database of plain tables, and typed tools.

A domain's database is a plain ``dict`` of tables (``{table: {key: record}}``) loaded from a
``db.json`` the user points at; it is never copied into the project. Tools are plain Python
functions whose first parameter is that database, with type hints for every other argument and a
Google-style docstring; the ``@read`` / ``@write`` / ``@generic`` decorators mark them.
``Domain.call`` validates the arguments against the signature, runs the tool and, if the tool
fails, puts back every record the tool touched, so a failed call never leaves half a write behind.

A ``db.json`` is parsed once per process (``DbSource``); each ``Domain`` made from it shares the
unchanged records and copies a record only when a write tool touches it, so a fresh database per
task, trial or conversation costs microseconds and ``diff`` / ``db_hash`` look only at copies.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concierge.support.toolkit.db import (
    _ABSENT,
    DbSource,
    _copy,
    _deep_merge,
    _WriteView,
    canonical_json,
    sha256_text,
)
from concierge.support.toolkit.tools import ToolError, ToolKind, ToolSpec, _json_type_name

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the domain


@dataclass
class ToolOutcome:
    """A tool call as an agent sees it: ``content`` is the text of the tool message."""

    ok: bool
    content: str
    result: Any = None
    error: str | None = None


@functools.cache
def _spec_of(fn: Callable[..., Any]) -> ToolSpec:
    return ToolSpec.from_function(fn)


@dataclass
class Domain:
    """A support domain: name, policy text, database and typed tools.

    ``db`` is a plain ``{table: {key: record}}`` dict. When it comes from a ``DbSource``, records
    nobody has changed are shared with every other domain from the same file: read ``db`` freely,
    but change it only through ``call`` (or take a private record with ``edit``).
    """

    name: str
    policy: str
    db: dict[str, Any]
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    source: DbSource | None = None
    _initial: dict[str, Any] | None = field(default=None, repr=False)
    # The domain's clock (a date or datetime; None: today), read by guided mode and preconditions. A
    # field, so the copies a session makes (dataclasses.replace) keep it.
    now: Any = None
    # Whether writes can be taken back (restore): true for the in-process database, false where tools
    # write to another system.
    undoable: bool = True

    @classmethod
    def build(
        cls,
        name: str,
        policy: str,
        tools: Iterable[Callable[..., Any]],
        *,
        source: DbSource | None = None,
        db: dict[str, Any] | None = None,
        exclude_tools: Iterable[str] = (),
    ) -> Domain:
        """A domain over a fresh copy of ``source`` (or over ``db`` itself, which it then owns)."""
        if (source is None) == (db is None):
            raise ValueError("give exactly one of source= or db=")
        excluded = set(exclude_tools)
        specs: dict[str, ToolSpec] = {}
        seen: set[str] = set()
        for fn in tools:
            spec = _spec_of(fn)
            if spec.name in seen:
                raise ValueError(f"duplicate tool {spec.name}")
            seen.add(spec.name)
            if spec.name not in excluded:
                specs[spec.name] = spec
        unknown = excluded - seen
        if unknown:
            raise ValueError(f"cannot exclude unknown tool(s): {', '.join(sorted(unknown))}")
        if source is not None:
            return cls(name, policy, source.fresh(), specs, source)
        assert db is not None
        return cls(name, policy, db, specs, None, _copy(db))

    # -- tools

    def tool_kind(self, name: str) -> ToolKind:
        return self._spec(name).kind

    def is_write(self, name: str) -> bool:
        return self._spec(name).kind == "write"

    def _spec(self, name: str) -> ToolSpec:
        spec = self.tools.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ToolError(f"Tool '{name}' not found.")
        return spec

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools as an OpenAI ``tools=`` list."""
        return [spec.openai_schema() for spec in self.tools.values()]

    def call(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> Any:
        """Run a tool. Any failure raises ToolError and leaves the database as it was."""
        spec = self._spec(name)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(f"{name}: arguments are not valid JSON ({exc.msg})") from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ToolError(f"{name}: arguments must be a JSON object, got {_json_type_name(arguments)}")
        kwargs = spec.bind(arguments)
        if spec.kind != "write":
            result = self._run(spec, self.db, kwargs)
        else:
            views = {
                t: _WriteView(table, self._shared(t))
                for t, table in self.db.items()
                if isinstance(table, dict)
            }
            try:
                result = self._run(spec, {**self.db, **views}, kwargs)
            except ToolError:
                for view in views.values():
                    view.rollback()
                raise
        # Results are copies: whoever holds one cannot change the database through it.
        return _copy(result) if isinstance(result, dict | list) else result

    def _shared(self, table: str) -> Mapping[str, Any]:
        if self.source is None:
            return {}
        shared = self.source.pristine.get(table)
        return shared if isinstance(shared, dict) else {}

    @staticmethod
    def _run(spec: ToolSpec, db: Any, kwargs: dict[str, Any]) -> Any:
        try:
            return spec.func(db, **kwargs)
        except ToolError:
            raise
        except Exception as exc:  # a tool bug must reach the agent as an error, not a traceback
            log.exception("tool %s failed", spec.name)
            raise ToolError(f"{spec.name} failed: {type(exc).__name__}: {exc}") from exc

    def execute(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> ToolOutcome:
        """``call`` for an agent loop: never raises; errors read ``Error: ...`` as in τ²."""
        try:
            result = self.call(name, arguments)
        except ToolError as exc:
            return ToolOutcome(False, f"Error: {exc.message}", None, exc.message)
        content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        return ToolOutcome(True, content, result, None)

    def record(self, table: str, key: Any) -> Any:
        """Record ``key`` of ``table`` (None if absent): what the guardrails read to check ownership.

        A domain whose records live in another system (``support.domains.external``) looks it up there.
        """
        records = self.db.get(table)
        return records.get(key) if isinstance(records, dict) and isinstance(key, str) else None

    # -- state

    def edit(self, table: str, key: str) -> dict[str, Any]:
        """A record of this domain's own, safe to change in place (KeyError if absent)."""
        records = self.db[table]
        record = records[key]
        if self._shared(table).get(key) is record:
            record = records[key] = _copy(record)
        return record

    def apply_initial_state(self, state: Mapping[str, Any] | None) -> None:
        """Apply a τ² task's ``initial_state``: merge ``agent_data`` into the db, then run actions."""
        if not state:
            return
        data = state.get("initialization_data") or {}
        if data.get("user_data"):
            raise ValueError(
                f"domain {self.name} has no user-side database for initialization_data.user_data"
            )
        for table, update in (data.get("agent_data") or {}).items():
            records = self.db.get(table)
            if not isinstance(records, dict) or not isinstance(update, Mapping):
                self.db[table] = _copy(update)
                continue
            for key, value in update.items():
                if isinstance(value, Mapping) and isinstance(records.get(key), dict):
                    _deep_merge(self.edit(table, key), value)
                else:
                    records[key] = _copy(value)
        for action in state.get("initialization_actions") or []:
            env = action.get("env_type", "assistant")
            if env not in ("assistant", "agent"):
                raise ValueError(f"domain {self.name} has no {env!r} environment for initialization actions")
            self.call(action["func_name"], action.get("arguments") or {})

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the database, for a later ``diff``."""
        return _copy(self.db)

    def diff(self, initial: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """``{table: {key: new record, or None if deleted}}`` against ``initial`` (default: as loaded)."""
        if initial is None:
            initial = self.source.pristine if self.source is not None else self._initial
        assert initial is not None
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(initial) | set(self.db)):
            old, new = initial.get(name) or {}, self.db.get(name) or {}
            if not isinstance(old, dict) or not isinstance(new, dict):
                if old != new:
                    out[name] = {"*": new}
                continue
            # Shared records are unchanged by construction: compare only the ones that differ by identity.
            changed = {
                key: rec
                for key, rec in new.items()
                if old.get(key, _ABSENT) is not rec and old.get(key) != rec
            }
            changed.update({key: None for key in old.keys() - new.keys()})
            if changed:
                out[name] = dict(sorted(changed.items()))
        return _copy(out)

    def restore(self, initial: Mapping[str, Any]) -> None:
        """Put back every record that differs from ``initial`` (a :meth:`snapshot`): undoes the writes
        made since, so a set of changes that must happen together can be taken back as a whole."""
        for table, changed in self.diff(initial).items():
            old = initial.get(table)
            if "*" in changed or not isinstance(old, dict):
                self.db[table] = _copy(old)
                continue
            records = self.db[table]
            for key in changed:
                if key in old:
                    records[key] = _copy(old[key])
                else:
                    records.pop(key, None)

    def db_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, compact) of the whole database."""
        if self.source is None:
            return sha256_text(canonical_json(self.db))
        fragments = self.source.fragments()
        pristine = self.source.pristine
        parts = []
        for name in sorted(self.db):
            table = self.db[name]
            cached = fragments.get(name)
            head = json.dumps(name, ensure_ascii=False) + ":"
            if not isinstance(table, dict) or cached is None:
                parts.append(head + canonical_json(table))
                continue
            base = pristine[name]
            items = [
                cached[key]
                if base.get(key, _ABSENT) is table[key] or (key in base and base[key] == table[key])
                else json.dumps(key, ensure_ascii=False) + ":" + canonical_json(table[key])
                for key in sorted(table)
            ]
            parts.append(head + "{" + ",".join(items) + "}")
        return sha256_text("{" + ",".join(parts) + "}")


def read_policy(data_dir: Path) -> str:
    path = data_dir / "policy.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def require_db(name: str, data_dir: Path | None) -> Path:
    """The db.json a data-backed domain needs, or a clear error."""
    if data_dir is None:
        raise ValueError(f"domain {name!r} needs a data directory holding db.json (e.g. .../tau2/{name})")
    path = data_dir / "db.json"
    if not path.is_file():
        raise FileNotFoundError(f"domain {name!r}: no db.json in {data_dir}")
    return path
