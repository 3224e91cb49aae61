"""Where concierge keeps its state, and how it finds its database.

Everything lives under ``CONCIERGE_HOME`` (default ``~/.concierge``): the SQLite database,
search indexes, adapters and reports. ``CONCIERGE_DATABASE_URL`` points the store at
Postgres (or any SQLAlchemy URL) instead.
"""

from __future__ import annotations

import os
from pathlib import Path

_made: set[str] = set()  # state folders made by this process


def home() -> Path:
    """The state folder, created on first use (once per process and path: a support turn asks about
    twenty times, and the stat and mkdir were 12 % of its wall time under load)."""
    value = os.environ.get("CONCIERGE_HOME", "~/.concierge")
    path = Path(value).expanduser()
    if value not in _made:
        path.mkdir(parents=True, exist_ok=True)
        _made.add(value)
    return path


def database_url() -> str:
    url = os.environ.get("CONCIERGE_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{home() / 'concierge.db'}"


def deployment_path() -> Path | None:
    """The deployment config named by ``CONCIERGE_CONFIG``, if any (else the embedded default)."""
    value = os.environ.get("CONCIERGE_CONFIG")
    return Path(value).expanduser() if value else None
