"""SQLite writers in one process queue on the engine's write gate (``concierge.store.db._WriteGate``).

Under concurrent writers every transaction commits (none fails with "database is locked"), and the
gate is given back however a transaction ends: commit, rollback after an error, or a connection
returned to the pool without either. A gate that leaked would make the next writer wait for the
busy timeout (10 s) instead of going at once.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from concierge.store import db
from concierge.store.tables import Tenant


@pytest.fixture()
def url(tmp_path: Path):  # noqa: ANN201
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    yield url
    db.reset_engines()


def _write_one(url: str, name: str) -> None:
    with db.session_scope(url) as session:
        session.execute(select(func.count(Tenant.id))).scalar()  # a read first, as turns do
        session.connection().execute(insert(Tenant).values(name=name))


def test_concurrent_writers_all_commit(url: str) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: _write_one(url, f"t{i}"), range(400)))
    with db.session_scope(url) as session:
        assert session.scalar(select(func.count(Tenant.id))) == 400


def _next_write_seconds(url: str) -> float:
    t0 = time.monotonic()
    done = threading.Event()

    def write() -> None:
        _write_one(url, f"after-{t0}")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(8), "the next writer was still waiting: the gate was not given back"
    return time.monotonic() - t0


def test_gate_given_back_after_a_rollback(url: str) -> None:
    with pytest.raises(RuntimeError):
        with db.session_scope(url) as session:
            session.connection().execute(insert(Tenant).values(name="rolled-back"))
            raise RuntimeError("the turn failed after its first write")
    assert _next_write_seconds(url) < 2
    with db.session_scope(url) as session:
        assert session.scalar(select(func.count(Tenant.id)).where(Tenant.name == "rolled-back")) == 0


def test_gate_given_back_when_a_connection_returns_unfinished(url: str) -> None:
    engine = db.get_engine(url)
    conn = engine.connect()
    conn.execute(text("INSERT INTO tenants (name, created_at) VALUES ('left-open', CURRENT_TIMESTAMP)"))
    conn.close()  # neither commit nor rollback by the caller: the pool resets it on return
    assert _next_write_seconds(url) < 2


def test_gate_given_back_when_a_connection_is_invalidated(url: str) -> None:
    engine = db.get_engine(url)
    conn = engine.connect()
    conn.execute(text("INSERT INTO tenants (name, created_at) VALUES ('dropped', CURRENT_TIMESTAMP)"))
    conn.invalidate()  # what the pool does with a connection after a disconnect-type error
    conn.close()
    assert _next_write_seconds(url) < 2


def test_a_writer_waits_for_the_one_holding_the_gate(url: str) -> None:
    engine = db.get_engine(url)
    holder = engine.connect()
    holder.execute(insert(Tenant).values(name="first"))
    finished: list[float] = []

    def second() -> None:
        _write_one(url, "second")
        finished.append(time.monotonic())

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert not finished  # queued behind the open write transaction
    released = time.monotonic()
    holder.commit()
    holder.close()
    thread.join(5)
    assert finished and finished[0] - released < 1
    with db.session_scope(url) as session:
        assert set(session.scalars(select(Tenant.name))) == {"first", "second"}
