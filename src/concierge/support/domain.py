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

import copy
import functools
import hashlib
import inspect
import json
import logging
import marshal
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

log = logging.getLogger(__name__)

ToolKind = Literal["read", "write", "generic"]
Table = MutableMapping[str, Any]
Db = MutableMapping[str, Table]

F = TypeVar("F", bound=Callable[..., Any])
_TOOL_ATTR = "__concierge_tool_kind__"


class ToolError(Exception):
    """A tool refused the call (bad input, unknown id, ineligible request); the db is unchanged."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def tool(kind: ToolKind) -> Callable[[F], F]:
    """Mark a function as a domain tool of the given kind."""
    if kind not in ("read", "write", "generic"):
        raise ValueError(f"unknown tool kind {kind!r}")

    def mark(fn: F) -> F:
        setattr(fn, _TOOL_ATTR, kind)
        return fn

    return mark


read = tool("read")
write = tool("write")
generic = tool("generic")


# --------------------------------------------------------------------------- docstrings

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {arg: text}, returns text)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    returns: list[str] = []
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    for line in lines:
        match = _SECTION.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if match:
            section, current, base_indent = match.group(1), None, None
            continue
        if section is None:
            description.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            if base_indent is None:
                base_indent = indent
            found = _PARAM.match(line.strip()) if indent <= base_indent else None
            if found:
                current = found.group(1).lstrip("*")
                params[current] = found.group(2).strip()
            elif current is not None:
                params[current] = (params[current] + " " + line.strip()).strip()
        elif section in ("Returns", "Return") and line.strip():
            returns.append(line.strip())
    return "\n".join(description).strip(), params, " ".join(returns)


# --------------------------------------------------------------------------- types

_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _strip_annotated(tp: Any) -> tuple[Any, str | None]:
    """(inner type, description) for ``Annotated[T, "description"]``."""
    if get_origin(tp) is Annotated:
        inner, *extras = get_args(tp)
        text = next((extra for extra in extras if isinstance(extra, str)), None)
        return inner, text
    return tp, None


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def json_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a type hint (the subset tools use)."""
    tp, description = _strip_annotated(tp)
    schema: dict[str, Any]
    origin = get_origin(tp)
    if tp is Any:
        schema = {}
    elif tp is str:
        schema = {"type": "string"}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int:
        schema = {"type": "integer"}
    elif tp is float:
        schema = {"type": "number"}
    elif origin is Literal:
        values = list(get_args(tp))
        kinds = {type(v) for v in values}
        schema = {"type": "string"} if kinds == {str} else {}
        schema["enum"] = values
    elif _is_union(tp):
        options = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(options) == 1:
            schema = json_schema(options[0])
        else:
            schema = {"anyOf": [json_schema(arg) for arg in options]}
    elif origin in (list, tuple, typing.List) or tp in (list, tuple):  # noqa: UP006
        args = get_args(tp)
        schema = {"type": "array"}
        if args:
            schema["items"] = json_schema(args[0])
    elif _is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        schema = {
            "type": "object",
            "properties": {name: json_schema(hint) for name, hint in hints.items()},
            "required": [name for name in hints if name in tp.__required_keys__],
        }
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            schema["description"] = inspect.cleandoc(tp.__doc__)
    elif origin in (dict, typing.Dict) or tp is dict:  # noqa: UP006
        schema = {"type": "object"}
    else:
        raise TypeError(f"unsupported tool argument type {tp!r}")
    if description:
        schema = {**schema, "description": description}
    return schema


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against ``tp`` and return it normalised; ToolError names the bad path."""
    tp, _ = _strip_annotated(tp)
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is str:
        if isinstance(value, str):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        # JSON has one number type: accept 3.0 for an integer, as pydantic's lax mode does.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif origin is Literal:
        allowed = get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise ToolError(f"{path} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    elif _is_union(tp):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path)
            except ToolError as exc:
                errors.append(exc.message)
        raise ToolError(errors[0] if len(errors) == 1 else f"{path} is invalid: {'; '.join(errors)}")
    elif origin in (list, tuple, typing.List) or tp in (list, tuple):  # noqa: UP006
        if isinstance(value, list | tuple):
            args = get_args(tp)
            if not args:
                return list(value)
            return [coerce(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
        return _type_error(path, "an array", value)
    elif _is_typeddict(tp):
        if isinstance(value, dict):
            hints = typing.get_type_hints(tp, include_extras=True)
            missing = [key for key in tp.__required_keys__ if key not in value]
            if missing:
                raise ToolError(f"{path} is missing {', '.join(sorted(missing))}")
            # Unknown keys are dropped, as pydantic does with τ²'s models.
            return {
                key: coerce(value[key], hint, f"{path}.{key}") for key, hint in hints.items() if key in value
            }
        return _type_error(path, "an object", value)
    elif origin in (dict, typing.Dict) or tp is dict:  # noqa: UP006
        if isinstance(value, dict):
            return value
        return _type_error(path, "an object", value)
    else:
        raise TypeError(f"unsupported tool argument type {tp!r}")
    return _type_error(path, _JSON_NAMES.get(tp, str(tp)), value)


def _type_error(path: str, expected: str, value: Any) -> Any:
    raise ToolError(f"{path} must be {expected}, got {_json_type_name(value)}")


# --------------------------------------------------------------------------- tool specs


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    required: bool
    default: Any
    description: str


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its function, kind, parameters (without the db) and docs."""

    name: str
    kind: ToolKind
    func: Callable[..., Any]
    params: tuple[Param, ...]
    description: str
    returns: str

    @classmethod
    def from_function(cls, fn: Callable[..., Any]) -> ToolSpec:
        kind = getattr(fn, _TOOL_ATTR, None)
        if kind is None:
            raise ValueError(f"{fn.__name__} is not marked as a tool (@read, @write or @generic)")
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        names = list(signature.parameters)
        if not names or names[0] != "db":
            raise ValueError(f"tool {fn.__name__} must take the database as its first parameter `db`")
        description, arg_docs, returns = parse_docstring(fn.__doc__)
        params = []
        for name in names[1:]:
            parameter = signature.parameters[name]
            if name not in hints:
                raise ValueError(f"tool {fn.__name__}: argument {name} has no type hint")
            required = parameter.default is inspect.Parameter.empty
            params.append(
                Param(
                    name,
                    hints[name],
                    required,
                    None if required else parameter.default,
                    arg_docs.get(name, ""),
                )
            )
        return cls(fn.__name__, kind, fn, tuple(params), description, returns)

    def openai_schema(self) -> dict[str, Any]:
        properties = {}
        for param in self.params:
            schema = json_schema(param.annotation)
            if param.description:
                schema = {**schema, "description": param.description}
            properties[param.name] = schema
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": [p.name for p in self.params if p.required],
                },
            },
        }

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments, or ToolError saying exactly what is wrong."""
        known = {p.name for p in self.params}
        extra = sorted(set(arguments) - known)
        if extra:
            raise ToolError(f"{self.name}: unexpected argument(s) {', '.join(extra)}")
        missing = [p.name for p in self.params if p.required and p.name not in arguments]
        if missing:
            raise ToolError(f"{self.name}: missing required argument(s) {', '.join(missing)}")
        bound = {}
        for param in self.params:
            if param.name in arguments:
                bound[param.name] = coerce(arguments[param.name], param.annotation, param.name)
        return bound


# --------------------------------------------------------------------------- db helpers


def _copy(value: Any) -> Any:
    """Deep copy of JSON-like data (marshal is several times faster than deepcopy)."""
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:
        return copy.deepcopy(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DbSource:
    """A database loaded once and shared, copy-on-write, by every Domain made from it.

    ``pristine`` is never changed: a fresh domain's tables are shallow copies of it, and a write
    tool gets a private copy of a record before it can touch it (see ``_WriteView``). So a fresh
    database costs a few dict copies, ``diff`` only compares the records that were copied, and
    ``db_hash`` re-serialises only those.
    """

    def __init__(self, tables: dict[str, Any], label: str = "") -> None:
        self.label = label
        self.pristine: dict[str, Any] = _copy(tables)
        self._fragments: dict[str, dict[str, str]] | None = None

    def fresh(self) -> dict[str, Any]:
        return {
            name: dict(table) if isinstance(table, dict) else _copy(table)
            for name, table in self.pristine.items()
        }

    def fragments(self) -> dict[str, dict[str, str]]:
        """``{table: {key: '"key":<canonical record json>'}}`` for dict tables."""
        if self._fragments is None:
            self._fragments = {
                name: {
                    key: json.dumps(key, ensure_ascii=False) + ":" + canonical_json(rec)
                    for key, rec in table.items()
                }
                for name, table in self.pristine.items()
                if isinstance(table, dict)
            }
        return self._fragments


_SOURCES: dict[tuple[str, int, int], DbSource] = {}


def db_source(path: Path) -> DbSource:
    """The (cached) DbSource of a ``db.json``; reloaded when the file changes."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise FileNotFoundError(f"database not found: {path}") from exc
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    source = _SOURCES.get(key)
    if source is None:
        with path.open(encoding="utf-8") as fh:
            tables = json.load(fh)
        if not isinstance(tables, dict):
            raise ValueError(f"{path}: a domain database must be a JSON object of tables")
        for stale in [k for k in _SOURCES if k[0] == key[0]]:
            del _SOURCES[stale]
        source = _SOURCES[key] = DbSource(tables, str(path))
    return source


_ABSENT = object()


class _WriteView(MutableMapping[str, Any]):
    """A table as a write tool sees it.

    Each record is made private to this domain (copied if still shared with the source) before the
    tool gets it, and its previous version is kept, so a failed call can be undone exactly.
    """

    def __init__(self, data: dict[str, Any], shared: Mapping[str, Any]) -> None:
        self._data = data
        self._shared = shared
        self._journal: dict[str, Any] = {}  # key -> previous record, or _ABSENT
        self._whole: dict[str, Any] | None = None

    def _own(self, key: str) -> None:
        if self._whole is not None or key in self._journal:
            return
        if key not in self._data:
            self._journal[key] = _ABSENT
            return
        current = self._data[key]
        if self._shared.get(key) is current:
            self._journal[key] = current  # the shared original is never changed: keep it as is
            self._data[key] = _copy(current)
        else:
            self._journal[key] = _copy(current)

    def _own_all(self) -> None:
        # Iterating hands out every record: make them all private and remember the whole table.
        if self._whole is not None:
            return
        whole = {}
        for key, current in self._data.items():
            if key in self._journal:
                continue
            if self._shared.get(key) is current:
                whole[key] = current
                self._data[key] = _copy(current)
            else:
                whole[key] = _copy(current)
        whole.update({k: v for k, v in self._journal.items() if v is not _ABSENT})
        self._whole = whole

    def __getitem__(self, key: str) -> Any:
        self._own(key)
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._own(key)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._own(key)
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def values(self):  # type: ignore[override]
        self._own_all()
        return self._data.values()

    def items(self):  # type: ignore[override]
        self._own_all()
        return self._data.items()

    def rollback(self) -> None:
        if self._whole is not None:
            self._data.clear()
            self._data.update(self._whole)
            return
        for key, previous in self._journal.items():
            if previous is _ABSENT:
                self._data.pop(key, None)
            else:
                self._data[key] = previous


def _deep_merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = _copy(value)


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


# --------------------------------------------------------------------------- registry

DomainLoader = Callable[..., Domain]


def domain_names() -> list[str]:
    """Every registered domain (built-ins and plugins, through :mod:`concierge.plugins`)."""
    from concierge import plugins

    return plugins.names("domains")


def load_domain(
    name: str, data_dir: Path | str | None = None, *, exclude_tools: Iterable[str] = ()
) -> Domain:
    """A fresh domain by name; ``data_dir`` holds its ``db.json`` (and ``policy.md``).

    ``data_dir`` may also be a parent folder with a ``<name>/`` subfolder (e.g. ``data/tau2``).
    """
    from concierge import plugins

    loader = plugins.get("domains", name)
    if loader is None:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(domain_names())}")
    return loader(resolve_data_dir(name, data_dir), exclude_tools=exclude_tools)


def resolve_data_dir(name: str, data_dir: Path | str | None) -> Path | None:
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not (path / "db.json").is_file() and (path / name / "db.json").is_file():
        path = path / name
    return path


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


# --------------------------------------------------------------------------- tools every domain shares


def fold_text(text: str) -> str:
    """Case- and accent-insensitive form of a name or email, for look-ups."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


_ARITH_CHARS = set("0123456789+-*/(). ")


def _arith(node: Any) -> float | int:
    import ast
    import operator

    binary = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv,
    }
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _arith(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and type(node.op) in binary:
        return binary[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _arith(node.left), _arith(node.right)
        if abs(exponent) > 64 or abs(base) > 1e12:  # keep `9**9**9` from hanging the server
            raise ToolError("Exponent too large")
        return base**exponent
    raise ToolError("Invalid expression")


@generic
def calculate(db: Db, expression: str) -> str:
    """
    Calculate the result of a mathematical expression.

    Args:
        expression: The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, operators (+, -, *, /), parentheses, and spaces.

    Returns:
        The result of the mathematical expression.

    Raises:
        ValueError: If the expression is invalid.
    """
    import ast

    if not all(char in _ARITH_CHARS for char in expression):
        raise ToolError("Invalid characters in expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError("Invalid expression") from None
    try:
        value = _arith(tree)
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    except OverflowError:
        raise ToolError("Result too large") from None
    return str(round(float(value), 2))


@generic
def transfer_to_human_agents(db: Db, summary: str) -> str:
    """
    Transfer the user to a human agent, with a summary of the user's issue.
    Only transfer if
     -  the user explicitly asks for a human agent
     -  given the policy and the available tools, you cannot solve the user's issue.

    Args:
        summary: A summary of the user's issue.

    Returns:
        A message indicating the user has been transferred to a human agent.
    """
    return "Transfer successful"
