"""τ²-bench's airline domain: the tools (``tools.py``), the guided-mode flows (``flows.yaml``) and the loader.

The database and policy come from the user's τ² data folder (``db.json``, ``policy.md``); the
domain ships neither.
"""

from __future__ import annotations

from pathlib import Path

from concierge.support.domains.airline.tools import NOW, TOOLS
from concierge.support.toolkit import Domain, db_source, read_policy, require_db


def load(data_dir: Path | None, *, exclude_tools: tuple[str, ...] | list[str] = ()) -> Domain:
    """The airline domain over a fresh copy of ``data_dir/db.json``."""
    path = require_db("airline", data_dir)
    assert data_dir is not None
    domain = Domain.build(
        "airline", read_policy(data_dir), TOOLS, source=db_source(path), exclude_tools=exclude_tools
    )
    domain.now = NOW  # the policy's clock, read by guided mode
    return domain


__all__ = ["TOOLS", "load"]
