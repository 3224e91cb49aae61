"""Run the tests against PostgreSQL: ``pytest -p postgres_plugin`` with CONCIERGE_DATABASE_URL set.

The tests isolate themselves by pointing ``CONCIERGE_HOME`` at a fresh folder (and dropping
``CONCIERGE_DATABASE_URL``), so each gets an empty SQLite file. Under this plugin each home gets
an empty Postgres schema instead (``ct_<hash of the home>``, in the database of the URL given,
selected by ``search_path``), created on first use and dropped at the end. Tests that pass an explicit SQLite URL, or open the
SQLite file themselves, still use SQLite. Start a server with ``scripts/start_postgres.sh``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from concierge import config

_BASE = os.environ.get("CONCIERGE_DATABASE_URL", "")
_created: set[str] = set()
_creating = threading.Lock()


def _admin_engine():  # noqa: ANN202
    return create_engine(_BASE, isolation_level="AUTOCOMMIT")


def _database_url() -> str:
    home = str(Path(os.environ.get("CONCIERGE_HOME", "~/.concierge")).expanduser().resolve())
    name = "ct_" + hashlib.sha1(home.encode()).hexdigest()[:16]
    with _creating:  # threads of one test (a gateway's workers) may ask for the same new home at once
        if name not in _created:
            engine = _admin_engine()
            try:
                with engine.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                    conn.execute(text(f'CREATE SCHEMA "{name}"'))
            finally:
                engine.dispose()
            _created.add(name)
    url = make_url(_BASE).update_query_dict({"options": f"-csearch_path={name}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def _postgres_per_home() -> Iterator[None]:
    if not _BASE.startswith("postgresql"):
        pytest.exit("postgres_plugin: set CONCIERGE_DATABASE_URL=postgresql+psycopg://... (scripts/start_postgres.sh)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "database_url", _database_url)
        yield
    from concierge.store import db

    db.reset_engines()
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            for name in sorted(_created):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()
