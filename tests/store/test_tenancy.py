"""Tenants, keys (hashed at rest), usage metering and the keys/usage CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from concierge import tenancy
from concierge.commands import gateway as cli
from concierge.store import db
from concierge.store.tables import ApiKey
from concierge.tenancy import PREFIX_CHARS


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path
    db.reset_engines()


def test_keys_are_hashed_at_rest(home: Path) -> None:
    if not db.get_engine().url.get_backend_name().startswith("sqlite"):
        pytest.skip("reads the SQLite file's bytes; on other databases test_no_table_holds_a_raw_key checks the rows")
    new = tenancy.create_key("acme")
    assert new.key.startswith("ck-") and len(new.key) > 40
    assert new.info.prefix == new.key[:11] and new.info.scope == "api"
    raw = (home / "concierge.db").read_bytes()
    wal = home / "concierge.db-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert new.key.encode() not in raw and new.key[11:].encode() not in raw
    with sqlite3.connect(home / "concierge.db") as conn:
        (stored,) = conn.execute("select key_hash from api_keys").fetchone()
    assert stored == tenancy.hash_key(new.key) and len(stored) == 64


def test_no_table_holds_a_raw_key() -> None:
    """Every column of every table, on any database: only the hash and the 11-character prefix are kept."""
    from sqlalchemy import select

    keys = [tenancy.create_key("acme"), tenancy.create_key("globex", "operator")]
    dump: list[str] = []
    with db.session_scope() as session:
        for table in db.Base.metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in session.execute(select(table)).all()]
        stored = dict(session.execute(select(ApiKey.prefix, ApiKey.key_hash)).all())
    text = "\n".join(dump)
    for new in keys:
        assert new.key not in text and new.key[PREFIX_CHARS:] not in text
        assert stored[new.info.prefix] == tenancy.hash_key(new.key)


def test_authenticate_and_revoke_by_each_reference() -> None:
    keys = [tenancy.create_key("acme"), tenancy.create_key("acme", "operator"), tenancy.create_key("globex")]
    principal = tenancy.authenticate(keys[0].key)
    assert principal is not None and principal.tenant == "acme" and principal.scope == "api"
    assert tenancy.authenticate(keys[1].key).scope == "operator"
    for bad in (None, "", "ck-nope", keys[0].key + "x", "sk-" + keys[0].key[3:]):
        assert tenancy.authenticate(bad) is None

    assert tenancy.revoke_key(keys[0].info.prefix).id == keys[0].info.id  # by prefix
    assert tenancy.revoke_key(keys[1].key).id == keys[1].info.id  # by the full key
    assert tenancy.revoke_key(str(keys[2].info.id)).tenant == "globex"  # by id
    assert all(tenancy.authenticate(k.key) is None for k in keys)
    assert all(not k.active for k in tenancy.list_keys())
    assert tenancy.revoke_key(keys[0].info.prefix).revoked_at is not None  # revoking twice is harmless


def test_revoke_errors() -> None:
    tenancy.create_key("acme")
    tenancy.create_key("acme")
    with pytest.raises(tenancy.TenancyError, match="no key"):
        tenancy.revoke_key("ck-zzzzzzzz")
    with pytest.raises(tenancy.TenancyError, match="2 keys match"):
        tenancy.revoke_key("ck-")
    with pytest.raises(tenancy.TenancyError, match="no key"):
        tenancy.revoke_key("999")
    with pytest.raises(tenancy.TenancyError):
        tenancy.create_key("acme", "root")
    with pytest.raises(tenancy.TenancyError):
        tenancy.create_tenant("  ")


def test_list_keys_by_tenant() -> None:
    tenancy.create_key("acme")
    tenancy.create_key("globex")
    assert [k.tenant for k in tenancy.list_keys("globex")] == ["globex"]
    assert len(tenancy.list_keys()) == 2
    assert tenancy.list_keys("nobody") == []
    assert [t.name for t in tenancy.list_tenants()] == ["acme", "globex"]


def test_usage_summary_groups_and_counts_errors() -> None:
    tenancy.create_tenant("acme")
    tenancy.record_usage(
        [
            tenancy.UsageRow("acme", "tiny", "chat", 10, 5, 100.0),
            tenancy.UsageRow("acme", "tiny", "chat", 20, 7, 300.0),
            tenancy.UsageRow("acme", "tiny", "chat", 0, 0, 5.0, status=503),
            tenancy.UsageRow("acme", "embed", "embeddings", 4, 0, 2.0),
            tenancy.UsageRow(None, "tiny", "chat", 1, 1, 1.0),  # in-process caller, no tenant
            tenancy.UsageRow("ghost", "tiny", "chat", 1, 1, 1.0),  # unknown tenant name -> NULL
        ]
    )
    rows = {(r.tenant, r.model): r for r in tenancy.usage_summary()}
    chat = rows[("acme", "tiny")]
    assert (chat.requests, chat.errors, chat.prompt_tokens, chat.completion_tokens) == (3, 1, 30, 12)
    assert chat.avg_latency_ms == pytest.approx(135.0)
    assert rows[(None, "tiny")].requests == 2
    assert [r.model for r in tenancy.usage_summary("acme")] == ["embed", "tiny"]


def test_usage_writer_flushes_on_close() -> None:
    tenancy.create_tenant("acme")
    writer = tenancy.UsageWriter()
    for _ in range(500):
        writer.submit(tenancy.UsageRow("acme", "tiny", "chat", 2, 3, 1.0))
    writer.submit_log(None, "tiny", "req", "resp")
    writer.close()
    assert writer.written == 500 and writer.dropped == 0
    assert tenancy.usage_summary("acme")[0].requests == 500
    writer.submit(tenancy.UsageRow("acme", "tiny", "chat", 1, 1, 1.0))  # after close: written directly
    assert tenancy.usage_summary("acme")[0].requests == 501


# ---- CLI ----------------------------------------------------------------------------------------
def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(cli.keys_app, name="keys")
    app.command()(cli.usage)
    return app


def test_cli_keys_create_prints_key_last() -> None:
    runner = CliRunner()
    result = runner.invoke(_cli(), ["keys", "create", "--tenant", "acme", "--scope", "operator"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    principal = tenancy.authenticate(key)
    assert principal is not None and principal.tenant == "acme" and principal.scope == "operator"

    listing = runner.invoke(_cli(), ["keys", "list", "--tenant", "acme"])
    assert listing.exit_code == 0 and key[:11] in listing.stdout and key not in listing.stdout

    revoked = runner.invoke(_cli(), ["keys", "revoke", key[:11]])
    assert revoked.exit_code == 0 and tenancy.authenticate(key) is None


def test_cli_bad_input_is_one_line_exit_2() -> None:
    runner = CliRunner()
    for args in (["keys", "create", "--tenant", "acme", "--scope", "root"], ["keys", "revoke", "ck-missing"]):
        result = runner.invoke(_cli(), args)
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
        assert "Traceback" not in result.output


def test_cli_usage_table_and_json() -> None:
    tenancy.create_tenant("acme")
    tenancy.record_usage(tenancy.UsageRow("acme", "tiny", "chat", 10, 5, 100.0))
    runner = CliRunner()
    table = runner.invoke(_cli(), ["usage"])
    assert table.exit_code == 0 and "acme" in table.stdout and "tiny" in table.stdout
    data = json.loads(runner.invoke(_cli(), ["usage", "--json", "--tenant", "acme"]).stdout)
    assert data == [
        {
            "tenant": "acme",
            "model": "tiny",
            "endpoint": "chat",
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "avg_latency_ms": 100.0,
        }
    ]
    assert "No usage" in runner.invoke(_cli(), ["usage", "--tenant", "nobody"]).stdout


def test_outbox_appends_that_wait_share_one_commit_and_each_is_on_disk_when_append_returns(home: Path) -> None:
    outbox = tenancy.UsageOutbox(home / "outbox.sqlite")
    commit = outbox._commit
    first_started, others_queued = threading.Event(), threading.Event()
    n = 12

    def slow_first(rows: list) -> None:
        if not first_started.is_set():  # hold the first commit until every other append waits behind it
            first_started.set()
            assert others_queued.wait(10)
        commit(rows)

    outbox._commit = slow_first  # type: ignore[method-assign]
    missing: list[str] = []

    def append(i: int) -> None:
        outbox.append("usage", f"uid-{i}", "{}")
        reader = sqlite3.connect(home / "outbox.sqlite")  # another connection sees the row at once
        try:
            if reader.execute("SELECT COUNT(*) FROM outbox WHERE uid = ?", (f"uid-{i}",)).fetchone()[0] != 1:
                missing.append(f"uid-{i}")
        finally:
            reader.close()

    threads = [threading.Thread(target=append, args=(0,))]
    threads[0].start()
    assert first_started.wait(10)
    threads += [threading.Thread(target=append, args=(i,)) for i in range(1, n)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(outbox._waiting) < n - 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    others_queued.set()
    for thread in threads:
        thread.join(10)
    assert not missing
    assert outbox.pending() == n
    assert outbox.commits == 2  # the first row alone, then the eleven that queued behind it together
    outbox.close()


def test_usage_rows_whose_outbox_commit_fails_are_written_to_the_database_directly() -> None:
    tenancy.create_tenant("acme")
    writer = tenancy.UsageWriter()

    def broken(rows: list) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    writer.outbox._commit = broken  # type: ignore[method-assign]
    threads = [threading.Thread(target=writer.submit, args=(tenancy.UsageRow("acme", "tiny", "chat", 1, 2, 1.0),))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert tenancy.usage_summary("acme")[0].requests == 8  # every waiter of the failed commit fell back


@pytest.mark.parametrize("power_safe", [True, False])
def test_an_outbox_row_survives_the_process_being_killed_once_append_returns(home: Path, power_safe: bool) -> None:
    path = home / "killed.sqlite"
    script = (
        "import os, signal, sys; from pathlib import Path; from concierge.tenancy import UsageOutbox; "
        f"box = UsageOutbox(Path({str(path)!r}), power_safe={power_safe}); "
        "box.append('usage', 'uid-1', '{}'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ}, timeout=60)
    assert done.returncode == -signal.SIGKILL
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("SELECT uid FROM outbox").fetchall() == [("uid-1",)]
    finally:
        reader.close()
