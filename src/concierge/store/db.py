"""SQLAlchemy 2 engine and sessions: SQLite in WAL mode by default, any URL (Postgres) by config.

Each capability declares its tables on :class:`~concierge.store.base.Base` in its own module
(listed in ``concierge.store.base.TABLE_MODULES``). :func:`init_db` brings the database to the newest
migration (:mod:`concierge.store.migrate`) when the process first makes an engine for a URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from concierge import config
from concierge.store.base import Base

__all__ = ["Base", "get_engine", "init_db", "make_engine", "reset_engines", "session_scope"]

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one writer commits; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite: WAL and a busy timeout), schema untouched."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL for the process; the schema is upgraded to the newest revision on first use."""
    url = url or config.database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url)
            try:
                init_db(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[url] = engine
        return engine


def init_db(engine: Engine) -> None:
    """Create or upgrade the schema (fresh: create_all + stamp; older: run the pending revisions)."""
    from concierge.store import migrate

    migrate.upgrade(engine)


def reset_engines() -> None:
    """Forget cached engines (tests switch CONCIERGE_HOME between cases)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written data."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
