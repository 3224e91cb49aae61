"""Support domains defined outside the package: a folder with a ``domain.yaml``.

A company describes its support desk in files, not code::

    acme-bookings/
      domain.yaml     # name, connectors, tools (each read or write), ownership look-ups
      policy.md       # what the agent may do (the model reads it; guided mode answers from it)
      flows.yaml      # guided-mode flows and the guardrails, as for the built-in domains
      tasks.json      # optional: τ²-style tasks for `concierge eval support`
      openapi.json    # optional: the service's OpenAPI document (or a URL in domain.yaml)
      tools.py        # optional: Python tools over db.json, as the built-in domains have

``domain.yaml``::

    name: acme-bookings
    connectors:
      bookings:
        type: openapi                     # or: mcp (command: [...] for stdio, or url: for streamable HTTP)
        openapi: openapi.json             # a file in the folder, or an http(s) URL
        base_url: ${BOOKINGS_URL:-http://127.0.0.1:8765}
        headers: {Authorization: "Bearer ${BOOKINGS_TOKEN}"}
        timeout: 5                        # seconds per request
        retries: 2                        # reads only; writes are never retried
    tools:
      - {name: find_guest_by_email, kind: read, connector: bookings}
      - {name: cancel_reservation, kind: write, connector: bookings, operation: cancelReservation}
      - {name: transfer_to_human_agents, builtin: true}
    records:                              # how the guardrails find who owns a record an argument names
      reservations: {tool: get_reservation_details, key: reservation_id, owner: guest_id}

The guardrails (identity, ownership, an explicit yes before a write, preconditions, handoff) come
from ``flows.yaml`` and apply to these tools exactly as to the built-in ones: the tools reach the
guard as an ordinary :class:`~concierge.support.toolkit.Domain`, whose ``kind`` per tool is the
one the domain file declares. Ownership of a record the company's system holds is checked by
looking it up with the ``records:`` read tool.

Domains are found three ways, all through :mod:`concierge.plugins`: a deployment config's
``support: domains:`` section (:func:`configure`), ``CONCIERGE_DOMAINS`` (folders, separated by
``os.pathsep``), and a package's entry point registering :func:`folder_loader`.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml

from concierge.plugins import hookimpl
from concierge.support.connectors import CallContext, ConnectorError, ServiceRefused, expand_env
from concierge.support.toolkit import (
    Domain,
    Param,
    ToolError,
    ToolSpec,
    calculate,
    db_source,
    transfer_to_human_agents,
)

log = logging.getLogger(__name__)

DOMAIN_FILE = "domain.yaml"
DOMAINS_ENV = "CONCIERGE_DOMAINS"
BUILTIN_TOOLS: dict[str, Callable[..., Any]] = {
    "calculate": calculate,
    "transfer_to_human_agents": transfer_to_human_agents,
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
_TOP_KEYS = {"name", "description", "policy", "flows", "tasks", "python", "db", "clock", "connectors", "tools",
             "records"}
_CONNECTOR_KEYS = {
    "openapi": {"type", "label", "openapi", "base_url", "headers", "timeout", "retries"},
    "mcp": {"type", "label", "command", "url", "env", "cwd", "headers", "timeout"},
}
_TOOL_KEYS = {"name", "kind", "connector", "operation", "python", "builtin", "description"}


class DomainFileError(ValueError):
    """A domain folder that cannot be used; ``problems`` holds one ``file: field: what`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- the domain object


@dataclass(frozen=True)
class RemoteTool:
    connector: str
    operation: str
    kind: str


@dataclass
class ExternalDomain(Domain):
    """A Domain whose tools (some or all) call a company's systems through connectors."""

    remote: dict[str, RemoteTool] = field(default_factory=dict)
    connectors: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    flows_file: Path | None = None
    folder: Path | None = None
    now: date | None = None
    undoable: bool = False  # its writes are in the company's system: they cannot be taken back here
    context: CallContext = field(default_factory=CallContext)
    _looked_up: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def bind(self, context: CallContext) -> ExternalDomain:
        """Make this (per-turn) copy's writes count for ``context`` (the audit log's tenant and conversation)."""
        self.context = context
        self._looked_up = {}
        return self

    def _run(self, spec: ToolSpec, db: Any, kwargs: dict[str, Any]) -> Any:  # type: ignore[override]
        remote = self.remote.get(spec.name)
        if remote is None:
            return Domain._run(spec, db, kwargs)
        connector = self.connectors[remote.connector]
        if remote.kind != "write":
            try:
                return connector.call(remote.operation, kwargs, write=False, idempotency_key=None)
            except ToolError:
                raise
            except Exception as exc:  # a connector bug reaches the agent as an error, not a traceback
                log.exception("tool %s failed", spec.name)
                raise ToolError(f"{spec.name} failed: {type(exc).__name__}: {exc}") from exc
        from concierge.support.connectors import audit

        try:
            row, key = audit.begin(
                self.context, domain=self.name, tool=spec.name, connector=remote.connector, arguments=kwargs
            )
        except Exception as exc:  # noqa: BLE001 - no audit row, no write
            raise ToolError(
                "I cannot record this change right now, so I have not made it. "
                "If you like, I can transfer you to a person who can help."
            ) from exc
        try:
            result = connector.call(remote.operation, kwargs, write=True, idempotency_key=key)
        except ConnectorError as exc:
            _finish(row, self.context, status=exc.outcome, error=exc.detail, http_status=exc.status)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, the outcome is unknown: flag it
            log.exception("write %s failed", spec.name)
            _finish(row, self.context, status="unknown", error=f"{type(exc).__name__}: {exc}")
            raise ToolError(
                f"{spec.name} failed, so I cannot confirm the change; our team has been told and will check it. "
                "If you like, I can transfer you to a person who can help."
            ) from exc
        _finish(row, self.context, status="ok", result=result)
        return result

    def record(self, table: str, key: Any) -> Any:
        """The record ``key`` of ``table``, looked up in the company's system with the ``records:`` tool.

        ``None`` when the system says there is no such record; a connector failure raises ToolError
        (the guard then refuses the call: ownership that cannot be checked is not assumed).
        """
        how = self.records.get(table)
        if how is None or not isinstance(key, str):
            return super().record(table, key)
        cached = self._looked_up.get((table, key), _MISSING)
        if cached is not _MISSING:
            return cached
        try:
            found = self.call(how["tool"], {how["key"]: key})
        except ServiceRefused:
            found = None  # not found (or not visible): the tool itself will say so
        self._looked_up[(table, key)] = found
        return found


_MISSING = object()


def _finish(row: int, context: CallContext, **outcome: Any) -> None:
    """Record a write's outcome; if the audit store fails now, the row stays ``pending`` (flagged)."""
    from concierge.support.connectors import audit

    try:
        audit.finish(row, context, **outcome)
    except Exception:  # noqa: BLE001 - the write itself is done (or failed): do not lose that answer
        log.exception("could not record the outcome of external write %s", row)


# --------------------------------------------------------------------------- JSON schema -> tool params

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}


def _annotation(schema: Mapping[str, Any]) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return Literal[tuple(enum)]  # type: ignore[valid-type]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, Mapping) and o.get("type") != "null"]
        if len(options) == 1:
            return _annotation(options[0]) | None
        if options:
            return Any
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "array":
        items = schema.get("items")
        return list[_annotation(items)] if isinstance(items, Mapping) else list  # type: ignore[misc]
    return _JSON_TYPES.get(str(kind), Any)


def remote_spec(name: str, kind: str, schema: Mapping[str, Any], description: str = "") -> ToolSpec:
    """A ToolSpec whose arguments are the JSON schema's properties (the call itself goes to a connector)."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    params = tuple(
        Param(
            arg,
            _annotation(prop if isinstance(prop, Mapping) else {}),
            arg in required,
            None if arg in required else (prop or {}).get("default"),
            str((prop or {}).get("description") or ""),
        )
        for arg, prop in properties.items()
    )

    def not_local(db: Any, **kwargs: Any) -> Any:  # ExternalDomain._run sends the call to the connector
        raise ToolError(f"{name} is served by a connector")

    text = description or str(schema.get("description") or "")
    if kind == "write" and "confirm" not in text.lower():
        text = (text + " " if text else "") + "Explain the change and get the customer's explicit yes first."
    return ToolSpec(name, kind, not_local, params, text.strip(), "")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reading a domain folder


@dataclass
class DomainFiles:
    """A parsed, checked ``domain.yaml`` and the files it names."""

    folder: Path
    name: str
    raw: dict[str, Any]
    policy: Path
    flows: Path | None
    tasks: Path | None
    python: Path | None
    db: Path | None


def _where(field_path: str) -> str:
    return f"{DOMAIN_FILE}: {field_path}"


def read_domain_file(folder: Path | str) -> tuple[DomainFiles | None, list[str]]:
    """Parse ``folder/domain.yaml``; problems name the file and the field."""
    folder = Path(folder).expanduser().resolve()
    path = folder / DOMAIN_FILE
    if not path.is_file():
        return None, [f"{folder}: no {DOMAIN_FILE} (a domain folder holds domain.yaml, policy.md and flows.yaml)"]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return None, [f"{DOMAIN_FILE}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"]
    if not isinstance(raw, dict):
        return None, [f"{DOMAIN_FILE}: expected a mapping with name, connectors and tools"]
    problems: list[str] = []
    for key in sorted(set(raw) - _TOP_KEYS):
        hint = difflib.get_close_matches(str(key), sorted(_TOP_KEYS), n=1)
        problems.append(_where(f"{key}: unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")))
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(_where(f"name: must be lowercase letters, digits, - or _ (up to 50), got {name!r}"))
        name = str(name)

    def file_of(key: str, default: str | None, required: bool) -> Path | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            problems.append(_where(f"{key}: must be a file name"))
            return None
        target = (folder / value).resolve()
        if not target.is_file():
            if required or key in raw:
                problems.append(f"{value}: not found in {folder} (named by {DOMAIN_FILE}: {key})")
            return None
        return target

    policy = file_of("policy", "policy.md", True)
    flows = file_of("flows", "flows.yaml", False)
    tasks = file_of("tasks", "tasks.json", False)
    python = file_of("python", None, False)
    db = file_of("db", None, False)
    files = DomainFiles(folder, name, raw, policy or folder / "policy.md", flows, tasks, python, db)
    return files, problems


def _connector_config(
    name: str, raw: Any, overrides: Mapping[str, Any] | None, problems: list[str]
) -> dict[str, Any] | None:
    where = f"connectors.{name}"
    if not isinstance(raw, Mapping):
        problems.append(_where(f"{where}: must be a mapping (type: openapi or mcp, ...)"))
        return None
    config = {**raw, **dict(overrides or {})}
    kind = config.get("type")
    if kind not in _CONNECTOR_KEYS:
        problems.append(_where(f"{where}.type: must be openapi or mcp, got {kind!r}"))
        return None
    for key in sorted(set(config) - _CONNECTOR_KEYS[kind]):
        hint = difflib.get_close_matches(str(key), sorted(_CONNECTOR_KEYS[kind]), n=1)
        problems.append(_where(f"{where}.{key}: unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")))
    for key in ("timeout",):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            problems.append(_where(f"{where}.{key}: must be a positive number of seconds, got {value!r}"))
    retries = config.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        problems.append(_where(f"{where}.retries: must be a whole number >= 0, got {retries!r}"))
    headers = config.get("headers")
    if headers is not None and (
        not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values())
    ):
        problems.append(_where(f"{where}.headers: must map header names to strings"))
    if kind == "openapi":
        if not isinstance(config.get("openapi"), str):
            problems.append(_where(f"{where}.openapi: the OpenAPI document (a file in the folder or a URL) is required"))
        base = config.get("base_url")
        if not isinstance(base, str):
            problems.append(_where(f"{where}.base_url: the service's base URL is required"))
    else:
        has_command, has_url = config.get("command") is not None, config.get("url") is not None
        if has_command == has_url:
            problems.append(_where(f"{where}: give exactly one of command (stdio) or url (streamable HTTP)"))
        command = config.get("command")
        if has_command and (
            not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command)
        ):
            problems.append(_where(f"{where}.command: must be a list of strings, e.g. [python, -m, my_server]"))
    return config


def _expanded(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """String settings with ``${ENV}`` expanded (headers and env too)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str):
            out[key] = expand_env(value, _where(f"{where}.{key}"))
        elif isinstance(value, Mapping):
            out[key] = {k: expand_env(v, _where(f"{where}.{key}.{k}")) if isinstance(v, str) else v
                        for k, v in value.items()}
        elif isinstance(value, list):
            out[key] = [expand_env(v, _where(f"{where}.{key}")) if isinstance(v, str) else v for v in value]
        else:
            out[key] = value
    return out


_CONNECTORS: dict[str, Any] = {}
_CONNECTORS_LOCK = threading.Lock()


def _make_connector(files: DomainFiles, name: str, config: Mapping[str, Any]) -> Any:
    """The connector for this config (one per process and config: forks and reloads share it)."""
    settings = _expanded(config, f"connectors.{name}")
    key = json.dumps([str(files.folder), name, settings], sort_keys=True, default=str)
    with _CONNECTORS_LOCK:
        found = _CONNECTORS.get(key)
        if found is not None:
            return found
        label = settings.get("label")
        timeout = float(settings.get("timeout") or 10.0)
        if settings["type"] == "openapi":
            from concierge.support.connectors.openapi import OpenAPIConnector, read_document

            doc = read_document(settings["openapi"], files.folder)
            connector: Any = OpenAPIConnector(
                name, doc, base_url=settings["base_url"], headers=settings.get("headers"), timeout=timeout,
                retries=int(settings.get("retries", 2)), label=label,
            )
        else:
            from concierge.support.connectors.mcp import MCPConnector

            connector = MCPConnector(
                name, command=settings.get("command"), url=settings.get("url"), env=settings.get("env"),
                cwd=settings.get("cwd") or str(files.folder), headers=settings.get("headers"), timeout=timeout,
                label=label,
            )
        _CONNECTORS[key] = connector
        return connector


def close_connectors() -> None:
    """Close every connector (tests; a server shutting down): MCP stdio servers are stopped."""
    with _CONNECTORS_LOCK:
        found = list(_CONNECTORS.values())
        _CONNECTORS.clear()
    for connector in found:
        try:
            connector.close()
        except Exception:  # noqa: BLE001
            pass


def _python_tools(files: DomainFiles, problems: list[str]) -> dict[str, Callable[..., Any]]:
    if files.python is None:
        return {}
    module_name = f"concierge_domain_{files.name.replace('-', '_')}_tools"
    try:
        spec = importlib.util.spec_from_file_location(module_name, files.python)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the company's code: report it as one line
        problems.append(f"{files.python.name}: cannot import: {type(exc).__name__}: {exc}")
        return {}
    return {
        name: obj for name, obj in vars(module).items()
        if callable(obj) and getattr(obj, "__concierge_tool_kind__", None) is not None
    }


def _tool_specs(
    files: DomainFiles,
    connectors: dict[str, Any],
    problems: list[str],
    *,
    connect: bool,
) -> tuple[list[Any], dict[str, RemoteTool]]:
    """(functions and ToolSpecs, remote tools) for every tool the domain file declares."""
    tools = files.raw.get("tools")
    if not isinstance(tools, list) or not tools:
        problems.append(_where("tools: must list the domain's tools"))
        return [], {}
    python = _python_tools(files, problems)
    items: list[Any] = []
    remote: dict[str, RemoteTool] = {}
    seen: set[str] = set()
    unreachable: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            problems.append(_where(f"{where}: must be a mapping with name and kind"))
            continue
        name = tool.get("name")
        if isinstance(name, str):
            where = f"tools[{i}] ({name})"
        for key in sorted(set(tool) - _TOOL_KEYS):
            problems.append(_where(f"{where}.{key}: unknown field"))
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
            problems.append(_where(f"{where}.name: must be a tool name (letters, digits, _), got {name!r}"))
            continue
        if name in seen:
            problems.append(_where(f"{where}.name: {name} is declared twice"))
            continue
        seen.add(name)
        if tool.get("builtin"):
            if name not in BUILTIN_TOOLS:
                problems.append(_where(f"{where}.builtin: the built-in tools are {', '.join(BUILTIN_TOOLS)}"))
            else:
                items.append(BUILTIN_TOOLS[name])
            continue
        kind = tool.get("kind")
        if kind not in ("read", "write"):
            problems.append(_where(f"{where}.kind: must be read or write, got {kind!r}"))
            continue
        if tool.get("python"):
            fn = python.get(name)
            if fn is None:
                problems.append(_where(f"{where}.python: {files.python.name if files.python else 'python:'} has no "
                                       f"@{kind} function {name}"))
            elif getattr(fn, "__concierge_tool_kind__", None) != kind:
                problems.append(_where(f"{where}.kind: {name} is declared {kind} but its function is marked "
                                       f"@{fn.__concierge_tool_kind__}"))
            else:
                items.append(fn)
            continue
        connector_name = tool.get("connector")
        if connector_name not in connectors:
            known = ", ".join(connectors) or "none declared"
            problems.append(_where(f"{where}.connector: must name a connector ({known}), got {connector_name!r}"))
            continue
        operation = str(tool.get("operation") or name)
        connector = connectors[connector_name]
        schema: dict[str, Any] | None = None
        if connector is not None:  # None: an MCP server not started for a check, or a broken connector
            try:
                schema = connector.operation_schema(operation)
            except KeyError:
                hint = difflib.get_close_matches(operation, connector.operations(), n=1)
                problems.append(_where(
                    f"{where}.operation: {connector_name} has no operation {operation!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                ))
                continue
            except ConnectorError as exc:
                if connector_name not in unreachable:  # once per connector, not once per tool
                    unreachable.add(str(connector_name))
                    problems.append(_where(f"connectors.{connector_name}: cannot list its tools: {exc.detail}"))
        remote[name] = RemoteTool(str(connector_name), operation, kind)
        items.append(remote_spec(name, kind, schema or {"type": "object", "properties": {}},
                                 str(tool.get("description") or "")))
    return items, remote


def _check_flows(files: DomainFiles, tool_names: set[str], problems: list[str]) -> None:
    """The flows file parses, and every tool it names (guardrails, ``call:`` steps) is declared."""
    if files.flows is None:
        return
    from concierge.support.guardrails import GuardRules

    label = files.flows.name
    try:
        raw = yaml.safe_load(files.flows.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        problems.append(f"{label}: not valid YAML: {getattr(exc, 'problem', exc)}")
        return
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: expected a mapping (guardrails, messages, slots, intents)")
        return
    try:
        rules = GuardRules.from_dict(raw.get("guardrails"))
    except (TypeError, ValueError, AttributeError) as exc:
        problems.append(f"{label}: guardrails: {exc}")
        return
    for field_name in ("identify_tools", "open_tools", "handoff_tools"):
        for tool in getattr(rules, field_name):
            if tool not in tool_names:
                problems.append(f"{label}: guardrails.{field_name}: {tool} is not a tool of {DOMAIN_FILE}")
    for tool in rules.claim_tools:
        if tool not in tool_names:
            problems.append(f"{label}: guardrails.claim_tools: {tool} is not a tool of {DOMAIN_FILE}")
    slots = raw.get("slots") or {}
    for intent, body in (raw.get("intents") or {}).items():
        if not isinstance(body, Mapping):
            problems.append(f"{label}: intents.{intent}: must be a mapping with steps")
            continue
        for slot in body.get("slots") or []:
            if slot not in slots:
                problems.append(f"{label}: intents.{intent}.slots: {slot} is not declared under slots")
        for j, step in enumerate(body.get("steps") or []):
            if isinstance(step, Mapping) and "call" in step and step["call"] not in tool_names:
                problems.append(f"{label}: intents.{intent}.steps[{j}].call: {step['call']} is not a tool of "
                                f"{DOMAIN_FILE}")


def _check_records(files: DomainFiles, kinds: dict[str, str], problems: list[str]) -> dict[str, dict[str, str]]:
    records = files.raw.get("records") or {}
    if not isinstance(records, Mapping):
        problems.append(_where("records: must map table names to {tool, key}"))
        return {}
    out: dict[str, dict[str, str]] = {}
    for table, how in records.items():
        where = f"records.{table}"
        if not isinstance(how, Mapping) or not isinstance(how.get("tool"), str) or not isinstance(how.get("key"), str):
            problems.append(_where(f"{where}: must be {{tool: <a read tool>, key: <its argument>}}"))
            continue
        if kinds.get(how["tool"]) != "read":
            problems.append(_where(f"{where}.tool: {how['tool']} must be a read tool of this domain"))
            continue
        out[str(table)] = {"tool": how["tool"], "key": how["key"]}
    return out


def build_domain(
    folder: Path | str,
    settings: Mapping[str, Any] | None = None,
    *,
    exclude_tools: Iterable[str] = (),
    connect: bool = True,
) -> ExternalDomain:
    """The domain a folder describes; ``settings`` (from a deployment config) override its connectors'
    fields (``{"connectors": {"bookings": {"base_url": ...}}}``). Raises :class:`DomainFileError`."""
    files, problems = read_domain_file(folder)
    if files is None:
        raise DomainFileError(problems)
    overrides = dict((settings or {}).get("connectors") or {})
    raw_connectors = files.raw.get("connectors") or {}
    if not isinstance(raw_connectors, Mapping):
        problems.append(_where("connectors: must map connector names to their settings"))
        raw_connectors = {}
    for name in sorted(set(overrides) - set(raw_connectors)):
        problems.append(f"deployment config: support.domains.{files.name}.connectors.{name}: {DOMAIN_FILE} declares "
                        f"no connector {name}")
    connectors: dict[str, Any] = {}
    for name, raw in raw_connectors.items():
        before = len(problems)
        config = _connector_config(str(name), raw, overrides.get(name), problems)
        connectors[str(name)] = None
        if config is None or len(problems) > before:
            continue
        try:
            connectors[str(name)] = _make_connector(files, str(name), config) if (
                connect or config.get("type") == "openapi") else None
        except ValueError as exc:  # a missing environment variable, an unreadable document
            problems.append(str(exc) if str(exc).startswith(DOMAIN_FILE) else _where(f"connectors.{name}: {exc}"))
    items, remote = _tool_specs(files, connectors, problems, connect=connect)
    kinds = {
        (item.name if isinstance(item, ToolSpec) else item.__name__):
        (item.kind if isinstance(item, ToolSpec) else item.__concierge_tool_kind__)
        for item in items
    }
    records = _check_records(files, kinds, problems)
    _check_flows(files, set(kinds), problems)
    clock = files.raw.get("clock")
    now: date | None = None
    if clock is not None:
        try:
            now = clock if isinstance(clock, date) else date.fromisoformat(str(clock))
        except ValueError:
            problems.append(_where(f"clock: must be a date YYYY-MM-DD, got {clock!r}"))
    if files.tasks is not None:
        try:
            tasks = json.loads(files.tasks.read_text(encoding="utf-8"))
            if not isinstance(tasks, list):
                problems.append(f"{files.tasks.name}: must be a JSON list of tasks")
        except json.JSONDecodeError as exc:
            problems.append(f"{files.tasks.name}: not valid JSON at line {exc.lineno}: {exc.msg}")
    if problems:
        raise DomainFileError(problems)
    policy = files.policy.read_text(encoding="utf-8")
    db = json.loads(files.db.read_text(encoding="utf-8")) if files.db is not None else None
    specs = [item for item in items if isinstance(item, ToolSpec)]
    functions = [item for item in items if not isinstance(item, ToolSpec)]
    excluded = set(exclude_tools)
    if files.db is not None:
        domain = ExternalDomain.build(files.name, policy, functions, source=db_source(files.db),
                                      exclude_tools=excluded & {f.__name__ for f in functions})
    else:
        domain = ExternalDomain.build(files.name, policy, functions, db={} if db is None else db,
                                      exclude_tools=excluded & {f.__name__ for f in functions})
    assert isinstance(domain, ExternalDomain)
    for spec in specs:
        if spec.name not in excluded:
            domain.tools[spec.name] = spec
    unknown = excluded - set(kinds)
    if unknown:
        raise ValueError(f"cannot exclude unknown tool(s): {', '.join(sorted(unknown))}")
    domain.remote = {name: tool for name, tool in remote.items() if name not in excluded}
    domain.connectors = {name: c for name, c in connectors.items() if c is not None}
    domain.records = records
    domain.flows_file = files.flows
    domain.folder = files.folder
    domain.now = now
    return domain


def check_domain_dir(folder: Path | str, *, connect: bool = False) -> list[str]:
    """Every problem with a domain folder (empty when it can serve), each naming the file and the field.

    Without ``connect`` nothing is contacted but a document given by URL: MCP servers are not started,
    so their tools' names are checked only with ``connect=True``.
    """
    try:
        build_domain(folder, connect=connect)
    except DomainFileError as exc:
        return exc.problems
    except ValueError as exc:
        return [str(exc)]
    return []


# --------------------------------------------------------------------------- registration


class FolderLoader:
    """A registered domain loader for a folder: ``loader(data_dir, *, exclude_tools=())``."""

    def __init__(self, folder: Path | str, settings: Mapping[str, Any] | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.settings = dict(settings or {})
        self.external = True

    @property
    def flows_file(self) -> Path | None:
        files, _ = read_domain_file(self.folder)
        return files.flows if files is not None else None

    @property
    def tasks_file(self) -> Path | None:
        files, _ = read_domain_file(self.folder)
        return files.tasks if files is not None else None

    def __call__(self, data_dir: Path | None = None, *, exclude_tools: Iterable[str] = ()) -> ExternalDomain:
        try:
            return build_domain(self.folder, self.settings, exclude_tools=exclude_tools)
        except DomainFileError as exc:
            # Unavailable, not a crash: the session turns FileNotFoundError into a clear 503 for the domain.
            raise FileNotFoundError(f"domain folder {self.folder}: {exc}") from exc

    def __repr__(self) -> str:
        return f"FolderLoader({str(self.folder)!r})"


def folder_loader(folder: Path | str, settings: Mapping[str, Any] | None = None) -> FolderLoader:
    """What a package's ``register_domains`` hook registers for a domain folder it ships."""
    return FolderLoader(folder, settings)


def domain_name_of(folder: Path | str) -> str:
    files, problems = read_domain_file(folder)
    if files is None:
        raise DomainFileError(problems)
    return files.name


class _ConfiguredDomains:
    """The plugin object for domains a deployment config or ``CONCIERGE_DOMAINS`` names."""

    def __init__(self, loaders: dict[str, FolderLoader]) -> None:
        self.loaders = loaders

    @hookimpl
    def register_domains(self, register: Any) -> None:
        for name, loader in self.loaders.items():
            register(name, loader)


PLUGIN_NAME = "concierge.support.configured-domains"


@dataclass
class SupportConfig:
    """The ``support:`` section of a deployment config."""

    domains: dict[str, FolderLoader] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)  # tenant -> domain
    default_domain: str | None = None


def parse_support_config(raw: Any, base_dir: Path | None = None, where: str = "deployment config") -> SupportConfig:
    """Validate ``support: {domains: {name: {path, connectors}}, tenants: {tenant: domain}, default: name}``."""
    if raw is None:
        return SupportConfig()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: support: must be a mapping (domains, tenants, default)")
    unknown = sorted(set(raw) - {"domains", "tenants", "default"})
    if unknown:
        raise ValueError(f"{where}: support.{unknown[0]}: unknown field (expected domains, tenants, default)")
    config = SupportConfig()
    for name, entry in (raw.get("domains") or {}).items():
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
            raise ValueError(f"{where}: support.domains.{name}.path: the domain folder is required")
        extra = sorted(set(entry) - {"path", "connectors"})
        if extra:
            raise ValueError(f"{where}: support.domains.{name}.{extra[0]}: unknown field (expected path, connectors)")
        folder = Path(os.path.expandvars(os.path.expanduser(entry["path"])))
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        files, problems = read_domain_file(folder)
        if files is None:
            raise ValueError(f"{where}: support.domains.{name}.path: {problems[0]}")
        if files.name != name:
            raise ValueError(f"{where}: support.domains.{name}: {folder / DOMAIN_FILE} names the domain "
                             f"{files.name!r}; use that name")
        config.domains[str(name)] = FolderLoader(folder, {"connectors": entry.get("connectors") or {}})
    tenants = raw.get("tenants") or {}
    if not isinstance(tenants, Mapping):
        raise ValueError(f"{where}: support.tenants: must map tenant names to domain names")
    config.tenants = {str(t): str(d) for t, d in tenants.items()}
    if raw.get("default") is not None:
        config.default_domain = str(raw["default"])
    return config


def env_folders() -> dict[str, FolderLoader]:
    """The domain folders ``CONCIERGE_DOMAINS`` names (``os.pathsep``-separated), by domain name."""
    found: dict[str, FolderLoader] = {}
    for part in filter(None, os.environ.get(DOMAINS_ENV, "").split(os.pathsep)):
        folder = Path(part).expanduser()
        try:
            found[domain_name_of(folder)] = FolderLoader(folder)
        except DomainFileError as exc:
            raise ValueError(f"{DOMAINS_ENV}: {folder}: {exc}") from exc
    return found


_configured: dict[str, FolderLoader] = {}


def _register_configured(loaders: dict[str, FolderLoader]) -> None:
    from concierge import plugins

    plugins.unregister_plugin(PLUGIN_NAME)
    if loaders:
        plugins.register_plugin(_ConfiguredDomains(dict(loaders)), PLUGIN_NAME)
    _configured.clear()
    _configured.update(loaders)


def configure(config: SupportConfig) -> SupportConfig:
    """Register the config's domain folders with :mod:`concierge.plugins` (replacing an earlier config's)
    and check that every domain its tenants name is known; an invalid config changes nothing."""
    from concierge import plugins

    previous = dict(_configured)
    _register_configured(config.domains)
    try:
        known = set(plugins.names("domains"))
        for tenant, domain in config.tenants.items():
            if domain not in known:
                raise ValueError(f"deployment config: support.tenants.{tenant}: unknown domain {domain!r}; known: "
                                 f"{', '.join(sorted(known))}")
        if config.default_domain is not None and config.default_domain not in known:
            raise ValueError(f"deployment config: support.default: unknown domain {config.default_domain!r}")
    except Exception:
        _register_configured(previous)
        raise
    return config


def configure_from_deployment(deployment: Any) -> SupportConfig:
    """Apply a deployment config's ``support:`` section (a :class:`~concierge.models.deployment.Deployment`,
    or anything with ``support``/``base_dir``/``path``); an object without one configures nothing new."""
    raw = getattr(deployment, "support", None)
    if not isinstance(raw, Mapping) or not raw:
        return SupportConfig()
    where = str(getattr(deployment, "path", None) or "deployment config")
    return configure(parse_support_config(raw, getattr(deployment, "base_dir", None), where=where))
