"""Typed tools: the ``@read`` / ``@write`` / ``@generic`` decorators, docstring parsing, JSON schemas of
type hints and argument checking (``ToolSpec``).

Tools are plain Python functions whose first parameter is the database, with type hints for every
other argument and a Google-style docstring; the decorators mark them.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

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
