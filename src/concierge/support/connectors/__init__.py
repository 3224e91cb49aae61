"""Connectors: support tools that act on a company's own systems instead of a ``db.json``.

A connector turns a tool call into a request to another process: an operation of an OpenAPI 3
service over HTTP (:mod:`.openapi`) or a tool of an MCP server over stdio or streamable HTTP
(:mod:`.mcp`). Each remote tool is declared ``read`` or ``write`` in the domain file
(:mod:`concierge.support.domains.external`); the guardrails check it exactly as a built-in tool.

What a connector guarantees, whatever the transport:

* reads are retried (a few times, with a short backoff) when the system is unreachable, slow or
  answers 502/503/504; writes are never retried by the connector;
* every write carries an idempotency key (``Idempotency-Key`` header; ``_meta.idempotency_key`` for
  MCP) derived from the tenant, the conversation, the tool, its arguments and how many times that
  same write already succeeded there (:mod:`.audit`), so a retry after a crash or a timeout sends
  the SAME key and the system applies it once;
* every write is in the audit log (``external_writes``) before it is sent and after it answers;
* failures reach the customer as a :class:`~concierge.support.toolkit.ToolError` whose text says
  what happened and offers a person (:class:`ServiceUnavailable`, :class:`ServiceTimeout`,
  :class:`ServiceRefused`, :class:`ServiceFailed`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Protocol

from concierge.support.toolkit import ToolError

OFFER_PERSON = "If you like, I can transfer you to a person who can help."


class ConnectorError(ToolError):
    """A remote tool call failed; ``message`` is written for the customer."""

    outcome = "error"  # how the audit log records a write that failed this way

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


class ServiceUnavailable(ConnectorError):
    """The system could not be reached: nothing was sent, so nothing changed."""


class ServiceTimeout(ConnectorError):
    """The system did not answer in time; a write may or may not have been applied."""

    outcome = "unknown"


class ServiceRefused(ConnectorError):
    """The system answered with a 4xx (or an MCP tool error): the request was refused as it stands."""


class ServiceFailed(ConnectorError):
    """The system answered with a 5xx: a write is not retried, and the operator sees it in the console."""

    outcome = "unknown"


@dataclass(frozen=True)
class CallContext:
    """Who a tool call is made for: the audit log's tenant and conversation, and its database."""

    tenant: str = ""
    conversation_id: str | None = None
    db_url: str | None = None
    turn: int | None = None  # the conversation's saved version this turn started from


class Connector(Protocol):
    """One configured system (a service or an MCP server)."""

    name: str
    label: str  # how the customer hears of it ("the Homestay booking system")

    def operation_schema(self, operation: str) -> dict[str, Any]:
        """The JSON schema (``type: object``) of the operation's arguments; KeyError if unknown."""
        ...

    def operations(self) -> list[str]: ...

    def call(
        self, operation: str, arguments: dict[str, Any], *, write: bool, idempotency_key: str | None
    ) -> Any:
        """The operation's result (parsed JSON); raises a :class:`ConnectorError`."""
        ...

    def close(self) -> None: ...


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, where: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the environment; a missing variable is a one-line error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None:
            if default is None:
                raise ValueError(f"{where}: environment variable {name} is not set")
            return default
        return found

    return _ENV_REF.sub(sub, value)


__all__ = [
    "OFFER_PERSON",
    "CallContext",
    "Connector",
    "ConnectorError",
    "ServiceFailed",
    "ServiceRefused",
    "ServiceTimeout",
    "ServiceUnavailable",
    "expand_env",
]
