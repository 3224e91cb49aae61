"""Durable metering: usage rows survive a database outage and a SIGKILL, and are written once.

(1) A live gateway meters calls while its database is unavailable (SQLite: the engine replaced by
one that cannot open its file; PostgreSQL: the schema renamed away); every call is answered, the
rows wait in the outbox, and when the database returns each row arrives exactly once. (2) A
gateway process is killed with SIGKILL after N answered calls whose rows it could not write yet
(the usage table is locked); after a restart the N rows are in the database, once each.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from concierge import tenancy
from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from concierge.store import db
from concierge.store.tables import Tenant, UsageRecord
from helpers.launch_gateway import CannedHub
from helpers.replicas import Replica, chat, database
from helpers.server import LiveServer


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path))  # the outbox lives here
        with database(request.param, tmp_path) as url:
            yield request.param, url
    db.reset_engines()


def _rows(url: str, tenant: str) -> tuple[int, int]:
    """(rows, distinct uids) metered for ``tenant``, read on a fresh engine."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            query = select(func.count(UsageRecord.id), func.count(func.distinct(UsageRecord.uid)))
            found = conn.execute(
                query.join(Tenant, Tenant.id == UsageRecord.tenant_id).where(Tenant.name == tenant)
            ).one()
    finally:
        engine.dispose()
    return int(found[0]), int(found[1])


def _outage(kind: str, url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(break, restore) for the database at ``url``."""
    if kind == "sqlite":
        failing = create_engine("sqlite:////nonexistent-concierge-dir/usage.db")
        good = db.get_engine(url)
        return (lambda: db._engines.__setitem__(url, failing)), (lambda: db._engines.__setitem__(url, good))
    schema = make_url(url).query["options"].split("search_path=")[1]
    admin = create_engine(make_url(url).difference_update_query(["options"]), isolation_level="AUTOCOMMIT")

    def rename(old: str, new: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER SCHEMA "{old}" RENAME TO "{new}"'))

    return (lambda: rename(schema, schema + "_away")), (lambda: rename(schema + "_away", schema))


def test_rows_metered_during_an_outage_arrive_once(store: tuple[str, str]) -> None:
    kind, url = store
    key = tenancy.create_key("acme", db_url=url).key
    settings = GatewaySettings(database_url=url, key_cache_ttl_s=300.0)
    app = create_app(CannedHub(0.0), settings)
    writer_of = lambda: app.state.usage_writer  # noqa: E731
    breaks, restore = _outage(kind, url)
    with LiveServer(app) as server:
        assert chat(server.url, key).status_code == 200  # the key is cached; one row written
        assert writer_of().flush(10)
        breaks()
        try:
            for _ in range(20):
                assert chat(server.url, key).status_code == 200
            assert not writer_of().flush(1.0)  # nothing can be written now ...
            assert writer_of().pending() == 20  # ... and nothing is dropped: it waits on disk
        finally:
            restore()
        assert _rows(url, "acme") == (1, 1)
        assert writer_of().flush(20)  # the database is back: the outbox drains
        assert writer_of().pending() == 0 and writer_of().dropped == 0
        assert _rows(url, "acme") == (21, 21)
        # A replay of rows already written (a crash between the insert and the outbox delete)
        # changes nothing: each row's uid is written once.
        row = tenancy.UsageRow("acme", "canned", "chat", 3, 4, uid="replayed-once")
        tenancy.record_usage(row, db_url=url)
        writer_of().outbox.append("usage", "replayed-once", row.to_json())
        writer_of().submit(row)
        assert writer_of().flush(10) and writer_of().pending() == 0
        assert _rows(url, "acme") == (22, 22)


def _lock_usage(kind: str, url: str) -> Callable[[], None]:
    """Hold a lock that stops inserts into ``usage`` (reads go on); returns the release."""
    if kind == "sqlite":
        conn = sqlite3.connect(make_url(url).database, isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")  # the file's write lock; WAL readers are not blocked

        def release_sqlite() -> None:
            conn.execute("ROLLBACK")
            conn.close()

        return release_sqlite
    engine = create_engine(url)
    conn = engine.connect()
    conn.execute(text("LOCK TABLE usage IN EXCLUSIVE MODE"))  # blocks INSERT, allows SELECT

    def release_pg() -> None:
        conn.rollback()
        conn.close()
        engine.dispose()

    return release_pg


def test_sigkill_after_n_answered_calls_loses_no_row(store: tuple[str, str], tmp_path: Path) -> None:
    kind, url = store
    key = tenancy.create_key("acme", db_url=url).key
    n = 15
    replica = Replica(tmp_path, url, delay=0.0)
    try:
        replica.wait_ready()
        release = _lock_usage(kind, url)
        try:
            for _ in range(n):
                assert chat(replica.url, key).status_code == 200
            assert replica.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            release()
        assert _rows(url, "acme") == (0, 0)  # the dead process wrote none of them
    finally:
        replica.stop(signal.SIGKILL)
    restarted = Replica(tmp_path, url, delay=0.0)
    try:
        restarted.wait_ready()
        deadline = time.monotonic() + 30
        while _rows(url, "acme")[0] < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _rows(url, "acme") == (n, n)  # replayed at start, once each
    finally:
        restarted.stop()
    assert _rows(url, "acme") == (n, n)
