"""SQLAlchemy 2 engine and sessions: SQLite in WAL mode by default, any URL (Postgres) by config.

Each capability declares its tables on :class:`~concierge.store.base.Base` in its own module
(listed in ``concierge.store.base.TABLE_MODULES``). :func:`init_db` brings the database to the newest
migration (:mod:`concierge.store.migrate`) when the process first makes an engine for a URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from concierge import config
from concierge.store.base import Base

__all__ = ["Base", "get_engine", "init_db", "make_engine", "reset_engines", "session_scope"]

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# One sessionmaker per engine: each sessionmaker() call makes a new Session subclass, whose event
# dispatch SQLAlchemy then builds on first use: made anew on every call, a session_scope with one
# SELECT cost 0.33-0.35 ms of CPU against 0.14 ms with the maker kept (2,000 calls, SQLite, 2026-12-02),
# and a support turn opens about seven.
_makers: dict[str, sessionmaker[Session]] = {}  # URL -> the maker of that URL's engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one writer commits; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_BUSY_TIMEOUT_S = 10.0
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class _WriteGate:
    """Writers to one SQLite database queue on a lock in this process instead of polling SQLite.

    SQLite lets one connection write at a time. A connection that finds the write lock taken waits
    in SQLite's busy handler, which sleeps 1, 2, 5 ... up to 100 ms between tries and so leaves the
    database idle while writers sleep: under 32 concurrent support turns the gateway held the GIL
    only half the time (py-spy, 2026-12-03), the rest was writers asleep in ``do_execute``. Here a
    transaction takes the gate just before its first write (where pysqlite's implicit BEGIN takes
    SQLite's write lock) and gives it back when it commits, rolls back or returns to the pool, so
    the next writer starts as soon as the last one ends. Other processes on the same file still
    meet SQLite's busy handler. A writer that waits longer than the busy timeout goes on without
    the gate and meets SQLite's own lock, as before (never a deadlock this lock alone made).
    """

    def __init__(self, timeout: float = _BUSY_TIMEOUT_S) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout
        self._holder: int | None = None  # id() of the DBAPI connection that holds the gate

    def before_execute(self, conn, _cursor, statement: str, *_args) -> None:  # noqa: ANN001
        dbapi = id(conn.connection.dbapi_connection)
        if self._holder == dbapi or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        if self._lock.acquire(timeout=self._timeout):
            self._holder = dbapi

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self.before_execute)
        event.listen(engine.pool, "checkin", lambda dbapi_connection, _record: self._release(id(dbapi_connection)))
        # A connection dropped after an error is invalidated, not checked in: give its gate back too.
        event.listen(engine.pool, "invalidate", lambda dbapi_connection, *_: self._release(id(dbapi_connection)))
        event.listen(engine.pool, "close", lambda dbapi_connection, *_: self._release(id(dbapi_connection)))
        dialect = engine.dialect  # one per engine: released after SQLite's own commit or rollback
        for name in ("do_commit", "do_rollback"):
            ended = getattr(dialect, name)

            def end(dbapi_connection, _ended=ended) -> None:  # noqa: ANN001
                try:
                    _ended(dbapi_connection)
                finally:
                    self._release(id(dbapi_connection))

            setattr(dialect, name, end)

    def _release(self, dbapi: int) -> None:
        if self._holder == dbapi:
            self._holder = None
            self._lock.release()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite: WAL, a busy timeout, writers queued in-process), schema untouched."""
    if url.startswith("sqlite"):
        # A pool as large as the gateway's busy worker threads: past the default 5 (+10 overflow), each
        # connection given back was closed and the next one opened anew, pragmas and all.
        database = make_url(url).database
        pool = {} if database in (None, "", ":memory:") else {"pool_size": 20, "max_overflow": 20}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_S}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        _WriteGate().install(engine)
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
        _makers.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written data."""
    url = url or config.database_url()
    engine = get_engine(url)
    maker = _makers.get(url)
    if maker is None or maker.kw.get("bind") is not engine:  # new, or the URL's engine was replaced
        maker = _makers[url] = sessionmaker(engine, expire_on_commit=False)
    session = maker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
