"""The generic support toolkit, apart from any one domain: typed tools, the copy-on-write database and
:class:`Domain` (a policy, a database of plain tables, and typed tools).

A domain's package imports what it needs from here::

    from concierge.support.toolkit import Db, Domain, ToolError, read, write
"""

from __future__ import annotations

from concierge.support.toolkit.common import calculate, fold_text, transfer_to_human_agents
from concierge.support.toolkit.db import DbSource, canonical_json, db_source, sha256_text
from concierge.support.toolkit.domain import Domain, ToolOutcome, read_policy, require_db
from concierge.support.toolkit.tools import (
    Db,
    Param,
    Table,
    ToolError,
    ToolKind,
    ToolSpec,
    coerce,
    generic,
    json_schema,
    parse_docstring,
    read,
    tool,
    write,
)

__all__ = [
    "Db",
    "DbSource",
    "Domain",
    "Param",
    "Table",
    "ToolError",
    "ToolKind",
    "ToolOutcome",
    "ToolSpec",
    "calculate",
    "canonical_json",
    "coerce",
    "db_source",
    "fold_text",
    "generic",
    "json_schema",
    "parse_docstring",
    "read",
    "read_policy",
    "require_db",
    "sha256_text",
    "tool",
    "transfer_to_human_agents",
    "write",
]
