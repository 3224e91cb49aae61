"""Where concierge keeps its state, and how it finds its database.

Everything lives under ``CONCIERGE_HOME`` (default ``~/.concierge``): the SQLite database,
search indexes, adapters and reports. ``CONCIERGE_DATABASE_URL`` points the store at
Postgres (or any SQLAlchemy URL) instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state folder, created on first use."""
    path = Path(os.environ.get("CONCIERGE_HOME", "~/.concierge")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
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
