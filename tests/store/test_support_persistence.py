"""Support-domain writes are stored with the turn that made them, per tenant, and survive restarts.

Guided mode without a model (rule-based), on the built-in homestay domain: a cancellation the
customer confirms with "yes" is one turn whose messages and changed records commit together.
A "restart" is a new SupportSession with the database engines reset and the demo db regenerated,
so only what the database holds carries over. Runs on SQLite and, with ``-p postgres_plugin``, on
Postgres (the SQLite file checks are skipped there).
"""

from __future__ import annotations

import importlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from concierge import config, tenancy
from concierge.store import db
from concierge.store.tables import Conversation, DomainRecord, Message
from concierge.support.session import ConversationNotFound, DomainConflict, SupportSession

EMAIL = "maya.okafor@example.com"
RESERVATION = "HS10001"  # Maya's flexible Lisbon stay: a full refund of 395.0
ASK = f"{EMAIL}: please cancel {RESERVATION}, my plans changed"
DONE = re.compile(r"^Reservation (HS\d+) is cancelled\. \$")  # the flow's reply once the write is done


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        db.reset_engines()
        tenancy.create_tenant("acme")
        tenancy.create_tenant("beta")
        yield tmp_path
    db.reset_engines()


def new_session() -> SupportSession:
    return SupportSession(None, default_mode="guided", use_model=False)


def restart(mp: pytest.MonkeyPatch) -> SupportSession:
    """What a new process starts from: no cached engines, a freshly generated demo db, a new session."""
    db.reset_engines()
    mp.setattr(importlib.import_module("concierge.support.domains.homestay"), "_GENERATED", None)
    return new_session()


def reservation(session: SupportSession, tenant: str | None, rid: str = RESERVATION) -> dict[str, Any]:
    return session.domain("homestay", tenant).db["reservations"][rid]


def stored(tenant: str) -> dict[tuple[str, str], Any]:
    with db.session_scope() as s:
        rows = s.scalars(select(DomainRecord).where(DomainRecord.scope == tenant, DomainRecord.table_name != ""))
        return {(r.table_name, r.record_key): r.record for r in rows}


def cancel(session: SupportSession, tenant: str, rid: str = RESERVATION, email: str = EMAIL) -> str:
    cid = session.start("homestay", tenant=tenant)
    out = session.reply(cid, f"{email}: please cancel {rid}, my plans changed")
    assert "Shall I cancel it" in out["message"], out
    return cid


def test_confirmed_cancellation_survives_a_restart_and_the_conversation_continues(home: Path) -> None:
    session = new_session()
    cid = cancel(session, "acme")
    out = session.reply(cid, "yes")
    assert DONE.match(out["message"]) and [a["tool"] for a in out["actions"]] == ["cancel_reservation"]
    assert reservation(session, "acme")["status"] == "cancelled"

    with pytest.MonkeyPatch.context() as mp:
        after = restart(mp)
        kept = reservation(after, "acme")
        assert kept["status"] == "cancelled" and kept["refund_amount"] == 395.0
        assert kept["payment_history"][-1] == {
            "type": "refund", "amount": 395.0, "payment_method_id": "credit_card_1042",
        }
        assert after.state(cid)["version"] == 2
        # The conversation goes on where it stopped; asking again finds the stay already cancelled.
        out = after.reply(cid, "Thanks! Can you cancel HS10001 again?")
        assert out["status"] == "open" and not any(a["tool"] == "cancel_reservation" for a in out["actions"])
        again = after.start("homestay", tenant="acme")
        out = after.reply(again, ASK)
        assert "cannot be cancelled" in out["message"] and "Shall I cancel it" not in out["message"]
        roles = [m["role"] for m in after.transcript(cid)]
        assert roles.count("user") == 3 and roles[-1] == "assistant"
    assert set(stored("acme")) == {("reservations", RESERVATION)}


def test_reset_forgets_one_tenants_writes_for_the_next_session(home: Path) -> None:
    from concierge.support.session import reset_domain_writes

    session = new_session()
    for tenant in ("demo-reset", "kept"):
        session.reply(cancel(session, tenant), "yes")
    assert reset_domain_writes("demo-reset", "homestay") >= 1
    assert stored("demo-reset") == {} and set(stored("kept")) == {("reservations", RESERVATION)}
    with pytest.MonkeyPatch.context() as mp:
        after = restart(mp)
        assert reservation(after, "demo-reset")["status"] == "confirmed"  # the source data again
        assert reservation(after, "kept")["status"] == "cancelled"


def test_one_tenants_writes_are_invisible_to_another(home: Path) -> None:
    session = new_session()
    acme = cancel(session, "acme")
    session.reply(acme, "yes")
    assert reservation(session, "acme")["status"] == "cancelled"
    assert reservation(session, "beta")["status"] == "confirmed"
    assert reservation(session, None)["status"] == "confirmed"
    # Beta's own data still has the booking: its customer can cancel it there.
    beta = cancel(session, "beta")
    with pytest.raises(ConversationNotFound):
        session.reply(beta, "yes", tenant="acme")  # nor can acme's key continue beta's conversation
    out = session.reply(beta, "yes", tenant="beta")
    assert DONE.match(out["message"])
    with pytest.MonkeyPatch.context() as mp:
        after = restart(mp)
        assert reservation(after, "beta")["status"] == "cancelled"
        assert reservation(after, None)["status"] == "confirmed"
    with db.session_scope() as s:
        rows = s.scalars(select(DomainRecord).where(DomainRecord.table_name != "")).all()
        assert sorted((r.scope, r.record_key, r.tenant_id is not None) for r in rows) == [
            ("acme", RESERVATION, True),
            ("beta", RESERVATION, True),
        ]


def test_a_failed_save_changes_neither_the_database_nor_memory(home: Path) -> None:
    import concierge.support.session as session_module

    session = new_session()
    cid = cancel(session, "acme")
    before = session.transcript(cid)
    real = session_module._store_writes

    def store_then_fail(s: Any, writes: Any) -> int:
        real(s, writes)
        raise RuntimeError("disk full")  # after the records were written in the turn's transaction

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session_module, "_store_writes", store_then_fail)
        with pytest.raises(RuntimeError, match="disk full"):
            session.reply(cid, "yes")
    assert reservation(session, "acme")["status"] == "confirmed"  # memory rolled back with the database
    assert stored("acme") == {}
    assert session.state(cid)["version"] == 1 and session.transcript(cid) == before  # no part of the turn
    out = session.reply(cid, "yes")  # the same confirmation goes through once the database takes it
    assert DONE.match(out["message"]) and reservation(session, "acme")["status"] == "cancelled"


def test_a_replica_never_acts_on_stale_data(home: Path) -> None:
    one, two = new_session(), new_session()  # two gateway replicas sharing the database
    first, second = cancel(one, "acme"), cancel(two, "acme")
    assert reservation(two, "acme")["status"] == "confirmed"  # replica two holds the booking in memory
    one.reply(first, "yes")
    # Replica two reloads the changed records before its turn: the tool sees the stay cancelled.
    out = two.reply(second, "yes")
    assert not any(a["tool"] == "cancel_reservation" and a["ok"] for a in out["actions"])
    assert "cannot be cancelled" in out["message"] and not DONE.match(out["message"])
    refunds = [p for p in reservation(two, "acme")["payment_history"] if p["type"] == "refund"]
    assert len(refunds) == 1  # refunded once


def test_concurrent_writes_to_the_same_record_conflict_instead_of_overwriting(home: Path) -> None:
    one, two = new_session(), new_session()
    first, second = cancel(one, "acme"), cancel(two, "acme")
    real_fork = two._fork

    def fork_while_the_other_replica_commits(name: str, scope: str) -> Any:
        forked = real_fork(name, scope)
        one.reply(first, "yes")  # lands while replica two's turn runs on its fork
        return forked

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(two, "_fork", fork_while_the_other_replica_commits)
        with pytest.raises(DomainConflict, match=f"reservations/{RESERVATION}"):
            two.reply(second, "yes")
    assert two.state(second)["version"] == 1  # nothing of the refused turn was saved
    assert reservation(two, "acme")["payment_history"].count(
        {"type": "refund", "amount": 395.0, "payment_method_id": "credit_card_1042"}
    ) == 1
    out = two.reply(second, "yes")  # sent again: decided on current data
    assert not any(a["tool"] == "cancel_reservation" and a["ok"] for a in out["actions"])


def test_two_replicas_racing_for_the_same_bookings_cancel_each_once(home: Path) -> None:
    from concierge.support.domains.homestay.generate import TODAY

    replicas = [new_session(), new_session()]  # two gateway replicas sharing the database
    source = replicas[0].domain("homestay", "beta").db  # nobody writes for beta: the source data
    todo = sorted(
        rid for rid, r in source["reservations"].items()
        if r["status"] == "confirmed" and r["check_in"] > TODAY.isoformat()
    )[:12]
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def work(replica: SupportSession) -> None:
        # Both replicas take the same bookings in the same order, so their turns race for each one.
        try:
            for rid in todo:
                email = source["guests"][source["reservations"][rid]["guest_id"]]["email"]
                cid = replica.start("homestay", tenant="acme")
                asked = replica.reply(cid, f"{email}: please cancel {rid}, my plans changed")["message"]
                if "Shall I cancel it" not in asked:
                    outcomes.append("refused at once")  # the other replica's cancellation was loaded first
                    continue
                for _ in range(5):  # what a client does with a 409: send the message again
                    try:
                        out = replica.reply(cid, "yes")
                        outcomes.append("done" if DONE.match(out["message"]) else "refused at yes")
                        break
                    except DomainConflict:
                        outcomes.append("conflict")
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert outcomes.count("done") == len(todo), outcomes  # each booking cancelled by exactly one turn
    with db.session_scope() as s:
        writes = s.scalars(select(Message).where(Message.role == "tool")).all()
        done = sorted(m.data["arguments"]["reservation_id"] for m in writes
                      if m.data["tool"] == "cancel_reservation" and m.data["ok"])
    assert done == todo
    for replica in replicas:
        bookings = replica.domain("homestay", "acme").db["reservations"]
        for rid in todo:
            refunds = [p for p in bookings[rid]["payment_history"] if p["type"] == "refund"]
            assert bookings[rid]["status"] == "cancelled" and len(refunds) <= 1, (rid, refunds)


# --------------------------------------------------------------------------- SIGKILL during write turns

_WRITER = """
import sys
from concierge.support.domains.homestay.generate import TODAY
from concierge.support.session import SupportSession

tenant = sys.argv[1]
session = SupportSession(None, default_mode="guided", use_model=False)
domain = session.domain("homestay", tenant)
today = TODAY.isoformat()
todo = sorted(r for r, v in domain.db["reservations"].items() if v["status"] == "confirmed" and v["check_in"] > today)
print("ready", len(todo), flush=True)
for rid in todo:
    booking = domain.db["reservations"][rid]  # the tenant's copy: stored cancellations are applied
    if booking["status"] != "confirmed":
        continue
    cid = session.start("homestay", tenant=tenant)
    session.reply(cid, f"{domain.db['guests'][booking['guest_id']]['email']}: please cancel {rid}, my plans changed")
    session.reply(cid, "yes")
    print("done", rid, flush=True)
print("none left", flush=True)  # every booking is cancelled: wait for the kill, as mid-turn
import time
time.sleep(600)
"""

ROUNDS = 6


@pytest.fixture(scope="module")
def killed_writers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run confirmed-cancellation turns in a subprocess and SIGKILL it at random moments, ROUNDS times.

    Module-scoped: the two tests below check the same killed database.
    """
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("killed-writers")
        mp.setenv("CONCIERGE_HOME", str(home))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        db.reset_engines()
        tenancy.create_tenant("acme")
        # The writer gets this run's database (under the Postgres plugin: the schema of this home).
        env = {**os.environ, "CONCIERGE_HOME": str(home), "CONCIERGE_DATABASE_URL": config.database_url()}
        done: list[str] = []
        for round_no in range(ROUNDS):
            proc = subprocess.Popen(
                [sys.executable, "-c", _WRITER, "acme"], env=env, stdout=subprocess.PIPE, text=True
            )
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().startswith("ready"), f"writer failed to start (seed {seed})"
                if round_no == 0:  # at least one confirmed write reaches the database
                    line = proc.stdout.readline()
                    assert line.startswith("done"), f"writer failed: {line!r} (seed {seed})"
                    done.append(line.split()[1])
                time.sleep(rng.uniform(0.02, 0.6))  # mid-turn, mid-commit, between turns: wherever it lands
                os.kill(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate(timeout=10)
            finally:
                proc.kill()
                proc.wait(10)
            assert proc.returncode == -signal.SIGKILL, f"the writer ended by itself (seed {seed})"
            done += [line.split()[1] for line in out.splitlines() if line.startswith("done")]
            if "none left" in out:  # a fast machine: later rounds would only kill a waiting process
                break
        yield {"seed": seed, "done": done}
    db.reset_engines()


def test_sigkill_during_write_turns_leaves_writes_and_messages_in_agreement(
    killed_writers: dict[str, Any],
) -> None:
    seed = killed_writers["seed"]
    cancelled_by: dict[str, str] = {}  # reservation -> conversation whose turn cancelled it
    with db.session_scope() as s:
        conversations = s.scalars(select(Conversation).where(Conversation.kind == "support")).all()
        assert conversations, f"no conversation was written before the kills (seed {seed})"
        for conv in conversations:
            messages = s.scalars(
                select(Message).where(Message.conversation_id == conv.id).order_by(Message.id)
            ).all()
            users = [m for m in messages if m.role == "user"]
            assert conv.state["version"] == len(users), f"{conv.id}: a turn was half saved (seed {seed})"
            wrote = [
                m.data["arguments"]["reservation_id"]
                for m in messages
                if m.role == "tool" and m.data["tool"] == "cancel_reservation" and m.data["ok"]
            ]
            said = [DONE.match(m.content).group(1) for m in messages if m.role == "assistant" and DONE.match(m.content)]
            assert wrote == said, f"{conv.id}: write {wrote} vs done message {said} (seed {seed})"
            for rid in wrote:
                assert rid not in cancelled_by, f"{rid} cancelled twice (seed {seed})"
                cancelled_by[rid] = conv.id
    overlay = stored("acme")
    in_db = {key for (table, key), record in overlay.items() if table == "reservations"}
    assert all(overlay[("reservations", rid)]["status"] == "cancelled" for rid in in_db)
    # No write without its message, no "done" message without its write.
    assert in_db == set(cancelled_by), f"seed {seed}"
    # Every turn the writer finished before it was killed is there: a committed turn is durable.
    assert set(killed_writers["done"]) <= in_db and len(in_db) >= 1, f"seed {seed}"
    with pytest.MonkeyPatch.context() as mp:
        after = restart(mp)  # what the next process sees: exactly the stored cancellations
        bookings = after.domain("homestay", "acme").db["reservations"]
        source = after.domain("homestay", "beta").db["reservations"]  # a tenant nobody wrote for
        assert {rid for rid in bookings if bookings[rid]["status"] != source[rid]["status"]} == in_db


def test_sigkill_during_write_turns_leaves_the_sqlite_file_intact(killed_writers: dict[str, Any]) -> None:
    url = config.database_url()
    if not url.startswith("sqlite"):
        pytest.skip("PRAGMA integrity_check is a SQLite file check; this run's store is not SQLite")
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
