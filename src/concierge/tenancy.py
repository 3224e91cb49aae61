"""Tenants, API keys and usage metering (core: no web or CLI imports).

A key is ``ck-`` + ``secrets.token_urlsafe(32)``. Only its SHA-256 hash and a short prefix are
stored, so a leaked database does not leak working keys; the prefix lets people tell keys apart.
Usage rows are written per model call; :class:`UsageWriter` puts each on disk first (a fsync'd
SQLite outbox under ``CONCIERGE_HOME/outbox``), then moves them to the database in batches on a
background thread, so the request path never waits on the database and an outage or a crash
loses nothing that was metered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select

from concierge.store.db import session_scope
from concierge.store.tables import ApiKey, RequestLog, Tenant, UsageRecord

log = logging.getLogger(__name__)

KEY_PREFIX = "ck-"
PREFIX_CHARS = 11  # "ck-" + 8 characters of the token: enough to tell keys apart, useless to attack
SCOPES = ("api", "operator")


class TenancyError(ValueError):
    """Bad input to a tenancy operation (unknown tenant or key, bad scope); the message is one line."""


@dataclass(frozen=True)
class TenantInfo:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class KeyInfo:
    id: int
    tenant: str
    prefix: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: ``key`` is shown once and never stored."""

    key: str
    info: KeyInfo


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant behind an authenticated key."""

    tenant_id: int
    tenant: str
    key_id: int
    scope: str


@dataclass(frozen=True)
class UsageRow:
    """One metered call, as queued for writing."""

    tenant: str | None
    model: str
    endpoint: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    status: int = 200
    tenant_id: int | None = None  # set when known, saves a name lookup
    uid: str | None = None  # unique per metered call: a replayed row is written once (None: a new one)
    created_at: datetime | None = None  # when the call was metered (None: when written)

    def to_json(self) -> str:
        # Field by field: dataclasses.asdict deep-copies, and this runs once per metered call.
        return json.dumps({
            "tenant": self.tenant, "model": self.model, "endpoint": self.endpoint,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "latency_ms": self.latency_ms, "status": self.status, "tenant_id": self.tenant_id,
            "uid": self.uid, "created_at": self.created_at.isoformat() if self.created_at else None,
        })

    @classmethod
    def from_json(cls, text: str) -> UsageRow:
        data = json.loads(text)
        if data.get("created_at"):
            data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)


@dataclass(frozen=True)
class UsageSummary:
    tenant: str | None
    model: str
    endpoint: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    avg_latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no salt/KDF needed).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    # SQLite drops tzinfo on the way back; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _key_info(row: ApiKey, tenant_name: str) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        tenant=tenant_name,
        prefix=row.prefix,
        scope=row.scope,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        revoked_at=_aware(row.revoked_at),
    )


def create_tenant(name: str, *, db_url: str | None = None, exist_ok: bool = True) -> TenantInfo:
    """Create a tenant (or return the existing one when ``exist_ok``)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TenancyError("tenant name must be 1-100 characters")
    with session_scope(db_url) as session:
        row = session.scalar(select(Tenant).where(Tenant.name == name))
        if row is not None:
            if not exist_ok:
                raise TenancyError(f"tenant {name!r} already exists")
        else:
            row = Tenant(name=name)
            session.add(row)
            session.flush()
        return TenantInfo(id=row.id, name=row.name, created_at=_aware(row.created_at))  # type: ignore[arg-type]


def list_tenants(*, db_url: str | None = None) -> list[TenantInfo]:
    with session_scope(db_url) as session:
        rows = session.scalars(select(Tenant).order_by(Tenant.name)).all()
        return [TenantInfo(id=r.id, name=r.name, created_at=_aware(r.created_at)) for r in rows]  # type: ignore[arg-type]


def create_key(tenant: str, scope: str = "api", *, db_url: str | None = None) -> NewKey:
    """Issue a key for ``tenant`` (created if missing). The raw key is returned once, never stored."""
    if scope not in SCOPES:
        raise TenancyError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    info = create_tenant(tenant, db_url=db_url)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_scope(db_url) as session:
        row = ApiKey(tenant_id=info.id, key_hash=hash_key(key), prefix=key[:PREFIX_CHARS], scope=scope)
        session.add(row)
        session.flush()
        return NewKey(key=key, info=_key_info(row, info.name))


def list_keys(tenant: str | None = None, *, db_url: str | None = None) -> list[KeyInfo]:
    with session_scope(db_url) as session:
        query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.id)
        if tenant is not None:
            query = query.where(Tenant.name == tenant)
        return [_key_info(row, name) for row, name in session.execute(query).all()]


def revoke_key(ref: str, *, db_url: str | None = None) -> KeyInfo:
    """Revoke a key named by the full key, its listed prefix, or its numeric id.

    Raises :class:`TenancyError` when nothing or more than one key matches.
    """
    ref = ref.strip()
    if not ref:
        raise TenancyError("give a key, a key prefix or a key id")
    with session_scope(db_url) as session:
        query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
        if ref.isdigit():
            matches = session.execute(query.where(ApiKey.id == int(ref))).all()
        elif len(ref) > PREFIX_CHARS:
            matches = session.execute(query.where(ApiKey.key_hash == hash_key(ref))).all()
        else:
            matches = session.execute(query.where(ApiKey.prefix.startswith(ref, autoescape=True))).all()
        if not matches:
            raise TenancyError(f"no key matches {ref[:PREFIX_CHARS]!r}")
        if len(matches) > 1:
            raise TenancyError(f"{len(matches)} keys match {ref!r}; give more of the prefix or the key id")
        row, name = matches[0]
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            session.flush()
        return _key_info(row, name)


def authenticate(key: str | None, *, db_url: str | None = None) -> Principal | None:
    """The tenant behind an active key, or None for a missing, unknown or revoked key."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with session_scope(db_url) as session:
        found = session.execute(
            select(ApiKey.id, ApiKey.scope, ApiKey.revoked_at, Tenant.id, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash == hash_key(key))
        ).first()
    if found is None or found[2] is not None:
        return None
    return Principal(tenant_id=found[3], tenant=found[4], key_id=found[0], scope=found[1])


def active_principals(key_hashes: list[str], *, db_url: str | None = None) -> dict[str, Principal]:
    """The principals behind those key hashes that are still active (one query; for cache refreshes)."""
    if not key_hashes:
        return {}
    with session_scope(db_url) as session:
        rows = session.execute(
            select(ApiKey.key_hash, ApiKey.id, ApiKey.scope, Tenant.id, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash.in_(key_hashes), ApiKey.revoked_at.is_(None))
        ).all()
    return {r[0]: Principal(tenant_id=r[3], tenant=r[4], key_id=r[1], scope=r[2]) for r in rows}


_USAGE_INSERTS: dict[str, Any] = {}


def _usage_insert(dialect: str) -> Any:
    """``INSERT INTO usage ... ON CONFLICT (uid) DO NOTHING`` for ``dialect``, built once.

    The tenant id comes from the row when it knows it, else from a sub-select on the tenant's
    name inside the same statement, so a batch costs one statement and no name look-up.
    """
    stmt = _USAGE_INSERTS.get(dialect)
    if stmt is None:
        from sqlalchemy import Integer, bindparam

        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        by_name = select(Tenant.id).where(Tenant.name == bindparam("p_tenant")).scalar_subquery()
        stmt = _USAGE_INSERTS[dialect] = (
            insert(UsageRecord.__table__)
            .values(
                uid=bindparam("p_uid"),
                tenant_id=func.coalesce(bindparam("p_tenant_id", type_=Integer), by_name),
                model=bindparam("p_model"),
                endpoint=bindparam("p_endpoint"),
                prompt_tokens=bindparam("p_prompt"),
                completion_tokens=bindparam("p_completion"),
                latency_ms=bindparam("p_latency"),
                status=bindparam("p_status"),
                created_at=bindparam("p_created", type_=UsageRecord.__table__.c.created_at.type),
            )
            .on_conflict_do_nothing(index_elements=["uid"])
        )
    return stmt


def record_usage(rows: UsageRow | list[UsageRow], *, db_url: str | None = None) -> int:
    """Insert usage rows in one transaction; tenant names with no tenant row are stored as NULL.

    A row whose ``uid`` is already stored is skipped (replays are idempotent); returns the rows
    given, written now or before. One statement over many parameter sets: compiled once, where a
    multi-row VALUES clause would be compiled anew for every batch size.
    """
    batch = [rows] if isinstance(rows, UsageRow) else list(rows)
    if not batch:
        return 0
    now = datetime.now(UTC)
    values = [
        {
            "p_uid": r.uid or uuid.uuid4().hex,
            "p_tenant_id": r.tenant_id,
            "p_tenant": r.tenant,
            "p_model": r.model[:200],
            "p_endpoint": r.endpoint[:50],
            "p_prompt": int(r.prompt_tokens),
            "p_completion": int(r.completion_tokens),
            "p_latency": float(r.latency_ms),
            "p_status": int(r.status),
            "p_created": r.created_at or now,
        }
        for r in batch
    ]
    with session_scope(db_url) as session:
        connection = session.connection()
        connection.execute(_usage_insert(connection.dialect.name), values)
    return len(batch)


def log_request(
    tenant_id: int | None, model: str, request: str, response: str, *, db_url: str | None = None
) -> None:
    """Write one request-log row. Callers redact first (see ``concierge.gateway.redact``)."""
    with session_scope(db_url) as session:
        session.add(RequestLog(tenant_id=tenant_id, model=model[:200], request=request, response=response))


def usage_summary(
    tenant: str | None = None, *, since: datetime | None = None, db_url: str | None = None
) -> list[UsageSummary]:
    """Calls, errors, tokens and mean latency per tenant, model and endpoint."""
    with session_scope(db_url) as session:
        query = (
            select(
                Tenant.name,
                UsageRecord.model,
                UsageRecord.endpoint,
                func.count(UsageRecord.id),
                func.sum(case((UsageRecord.status >= 400, 1), else_=0)),
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
                func.avg(UsageRecord.latency_ms),
            )
            .select_from(UsageRecord)
            .outerjoin(Tenant, Tenant.id == UsageRecord.tenant_id)
            .group_by(Tenant.name, UsageRecord.model, UsageRecord.endpoint)
            .order_by(Tenant.name, UsageRecord.model, UsageRecord.endpoint)
        )
        if tenant is not None:
            query = query.where(Tenant.name == tenant)
        if since is not None:
            query = query.where(UsageRecord.created_at >= since)
        return [
            UsageSummary(
                tenant=name,
                model=model,
                endpoint=endpoint,
                requests=int(count or 0),
                errors=int(errors or 0),
                prompt_tokens=int(p or 0),
                completion_tokens=int(c or 0),
                avg_latency_ms=round(float(lat or 0.0), 2),
            )
            for name, model, endpoint, count, errors, p, c, lat in session.execute(query).all()
        ]


class _Appended:
    """One row waiting for the outbox's next commit (see :meth:`UsageOutbox.append`)."""

    __slots__ = ("row", "done", "error")

    def __init__(self, row: tuple[str, str, str]) -> None:
        self.row = row
        self.done = False
        self.error: sqlite3.Error | None = None


class UsageOutbox:
    """Usage rows on disk until the database has them: a small SQLite file, one row per metered call.

    ``append`` returns only once its row is committed with ``synchronous=FULL`` (fsync), so a row
    survives a SIGKILL or a power cut once the call's response is on its way. Appends that arrive
    while a commit is under way are committed together by the next one (group commit): one fsync
    for all of them instead of one each, so the disk's flush time bounds the batch, not the request
    rate. Processes that share a home and a database share the file; the rows' ``uid`` makes a row
    written twice count once.
    """

    def __init__(self, path: Path, *, power_safe: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # FULL: every commit is fsync'd (survives a power cut). NORMAL in WAL mode: the commit is in
        # the OS's page cache when append returns, which survives the process dying (SIGKILL) but
        # not the machine; it saves the disk's flush time (5-10 ms here under load) on every call.
        self.power_safe = power_safe
        self._lock = threading.Lock()  # the connection
        self._group = threading.Condition()  # the rows waiting to be committed, and who commits them
        self._waiting: list[_Appended] = []
        self._committing = False
        self.commits = 0  # transactions that appended rows (for tests and the operator)
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=" + ("FULL" if power_safe else "NORMAL"))
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
            "uid TEXT NOT NULL UNIQUE, body TEXT NOT NULL)"
        )

    @classmethod
    def for_database(cls, db_url: str | None, *, power_safe: bool = True) -> UsageOutbox:
        from concierge import config

        url = db_url or config.database_url()
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(config.home() / "outbox" / f"usage-{digest}.sqlite", power_safe=power_safe)

    def append(self, kind: str, uid: str, body: str) -> None:
        """Put one row on disk; returns once it is committed (fsync'd), raises ``sqlite3.Error`` if not.

        The first caller to find no commit under way commits every row waiting (its own and those
        that queued behind the previous commit) in one transaction; the others wait for it.
        """
        mine = _Appended((kind, uid, body))
        with self._group:
            self._waiting.append(mine)
            while not mine.done:
                if self._committing:
                    self._group.wait()
                    continue
                batch, self._waiting = self._waiting, []
                self._committing = True
                self._group.release()
                error: sqlite3.Error | None = None
                try:
                    self._commit([entry.row for entry in batch])
                except sqlite3.Error as exc:
                    error = exc
                except BaseException:  # interrupted: the others must not take their rows as written
                    error = sqlite3.OperationalError("the outbox commit was interrupted")
                    raise
                finally:
                    self._group.acquire()
                    self._committing = False
                    for entry in batch:
                        entry.done, entry.error = True, error
                    self._group.notify_all()
        if mine.error is not None:
            raise mine.error

    def _commit(self, rows: list[tuple[str, str, str]]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO outbox (kind, uid, body) VALUES (?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self.commits += 1

    def head(self, limit: int, after: int = 0) -> list[tuple[int, str, str, str]]:
        with self._lock:
            return self._conn.execute(
                "SELECT seq, kind, uid, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:  # one transaction: one fsync for the batch, not one per row
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("DELETE FROM outbox WHERE seq = ?", [(n,) for n in seqs])
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def pending(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def last_seq(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class UsageWriter:
    """Meters through a durable outbox: each row is on disk first, then moved to the database.

    ``submit`` appends the row to the :class:`UsageOutbox` (fsync'd) and wakes a background thread
    that writes the outbox to the database in batches and removes what was written. When the
    database fails, rows stay on disk and are retried with backoff (up to ``max_backoff_s``) until
    it takes them; rows left by an earlier process (a crash, a shutdown during an outage) are
    replayed when the next writer starts. Nothing is dropped: a batch that fails is retried row by
    row, so one bad row cannot hold up the rest (it stays in the outbox and is retried; a log line
    says so). ``flush`` waits until everything submitted so far is in the database; ``close``
    tries once more and stops the thread (what is left waits on disk for the next start).
    """

    def __init__(
        self,
        *,
        db_url: str | None = None,
        batch_size: int = 200,
        outbox: UsageOutbox | None = None,
        power_safe: bool = True,
        max_backoff_s: float = 2.0,
        interval_s: float = 0.1,
    ) -> None:
        self.db_url = db_url
        self.batch_size = batch_size
        self.max_backoff_s = max_backoff_s
        # Rows are safe on disk, so the database gets them in batches at most this often (a flush
        # or a close does not wait): one transaction per interval instead of one per call.
        self.interval_s = interval_s
        self._urgent = threading.Event()
        self.outbox = outbox or UsageOutbox.for_database(db_url, power_safe=power_safe)
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._done_seq = 0  # every outbox row up to this seq was tried and written
        self._closed = False
        self._stop = False
        self.written = 0
        self.dropped = 0  # kept for callers: nothing is dropped any more
        self.failures = 0  # database errors met (each retried)
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="concierge-usage-writer", daemon=True)
        self._thread.start()

    def submit(self, row: UsageRow) -> None:
        if row.uid is None or row.created_at is None:
            row = dataclasses.replace(row, uid=row.uid or uuid.uuid4().hex, created_at=row.created_at or datetime.now(UTC))
        try:
            self.outbox.append("usage", row.uid or "", row.to_json())
        except sqlite3.Error as exc:  # the outbox's disk failed (full?): straight to the database
            log.error("usage outbox unavailable (%s); writing the row directly", type(exc).__name__)
            record_usage(row, db_url=self.db_url)  # raises (and the row is lost) only if both fail
            self.written += 1
            return
        if self._closed:
            self._drain_once()  # late rows after shutdown: written now if the database takes them
        else:
            self._wake.set()

    def submit_log(self, tenant_id: int | None, model: str, request: str, response: str) -> None:
        body = json.dumps({"tenant_id": tenant_id, "model": model, "request": request, "response": response})
        self.outbox.append("log", uuid.uuid4().hex, body)
        self._wake.set()

    def pending(self) -> int:
        """Rows on disk not yet in the database."""
        return self.outbox.pending()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until rows submitted before this call are in the database; False on timeout."""
        target = self.outbox.last_seq()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._urgent.set()
        self._wake.set()
        with self._cond:
            while self._done_seq < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._urgent.set()
                self._wake.set()
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._urgent.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                self._wake.wait(backoff)
            else:
                self._wake.wait(1.0)
            self._wake.clear()
            ok = self._drain_once()
            if self._stop:
                return
            backoff = 0.0 if ok else min(self.max_backoff_s, max(0.05, backoff * 2))
            if ok and self.interval_s > 0:
                self._urgent.wait(self.interval_s)  # let the next batch gather (a flush ends the wait)
            self._urgent.clear()

    def _drain_once(self) -> bool:
        """Move the outbox into the database; False when a row could not be written (kept for later)."""
        after = 0
        clean = True
        try:
            start_last = self.outbox.last_seq()
        except sqlite3.Error:
            log.exception("reading the usage outbox failed")
            return False
        while True:
            try:
                batch = self.outbox.head(self.batch_size, after)
            except sqlite3.Error:
                log.exception("reading the usage outbox failed")
                return False
            if not batch:
                break
            written = self._write(batch)
            self.outbox.remove(written)
            if len(written) < len(batch):
                clean = False
                if not written:
                    break  # the database refuses everything: back off
            after = batch[-1][0]
        if clean:
            with self._cond:
                self._done_seq = max(self._done_seq, start_last, after)
                self._cond.notify_all()
        return clean

    def _write(self, batch: list[tuple[int, str, str, str]]) -> list[int]:
        usage = [(seq, UsageRow.from_json(body)) for seq, kind, _uid, body in batch if kind == "usage"]
        logs = [(seq, json.loads(body)) for seq, kind, _uid, body in batch if kind == "log"]
        done: list[int] = []
        if usage:
            try:
                record_usage([row for _, row in usage], db_url=self.db_url)
                done.extend(seq for seq, _ in usage)
                self.written += len(usage)
                if self._failing:
                    log.warning("usage rows written again after %d failed attempts", self.failures)
                self._failing = False
            except Exception as exc:  # noqa: BLE001  (kept in the outbox: tried again)
                self.failures += 1
                if not self._failing:  # one line per outage, not one per retry
                    log.warning("usage rows kept in the outbox (%d): %s", len(usage), type(exc).__name__)
                self._failing = True
                if len(usage) > 1:
                    # Row by row, so one bad row cannot hold up the rest; two failures before any
                    # success mean the database itself is down: stop and back off.
                    failed = 0
                    for seq, row in usage:
                        try:
                            record_usage(row, db_url=self.db_url)
                        except Exception:  # noqa: BLE001
                            failed += 1
                            if failed >= 2 and len(done) == 0:
                                break
                            continue
                        done.append(seq)
                        self.written += 1
        for seq, entry in logs:
            try:
                log_request(entry["tenant_id"], entry["model"], entry["request"], entry["response"], db_url=self.db_url)
            except Exception as exc:  # noqa: BLE001
                self.failures += 1
                log.warning("request log rows kept in the outbox: %s", type(exc).__name__)
                break
            done.append(seq)
        return done


# ---- budgets (enforced by the gateway: concierge.gateway.limits) ----------------------------------


@dataclass(frozen=True)
class BudgetInfo:
    """A tenant's limits; None means no limit."""

    tenant: str
    requests_per_minute: int | None
    tokens_per_day: int | None


def _tenant_row(session: Any, tenant: str) -> Tenant:
    row = session.scalar(select(Tenant).where(Tenant.name == tenant))
    if row is None:
        raise TenancyError(f"no tenant named {tenant!r}")
    return row


def set_budget(
    tenant: str, rpm: int | None = None, tokens_per_day: int | None = None, *, db_url: str | None = None
) -> BudgetInfo:
    """Set a tenant's budget: None leaves a limit as it is, 0 removes it."""
    from concierge.store.tables import TenantBudget

    for name, value in (("rpm", rpm), ("tokens_per_day", tokens_per_day)):
        if value is not None and value < 0:
            raise TenancyError(f"{name} must be 0 (no limit) or positive, not {value}")
    with session_scope(db_url) as session:
        owner = _tenant_row(session, tenant.strip())
        row = session.get(TenantBudget, owner.id)
        if row is None:
            row = TenantBudget(tenant_id=owner.id)
            session.add(row)
        if rpm is not None:
            row.requests_per_minute = rpm or None
        if tokens_per_day is not None:
            row.tokens_per_day = tokens_per_day or None
        session.flush()
        return BudgetInfo(owner.name, row.requests_per_minute, row.tokens_per_day)


def get_budget(tenant: str, *, db_url: str | None = None) -> BudgetInfo:
    """A tenant's budget (both None when none was set)."""
    from concierge.store.tables import TenantBudget

    with session_scope(db_url) as session:
        owner = _tenant_row(session, tenant.strip())
        row = session.get(TenantBudget, owner.id)
        if row is None:
            return BudgetInfo(owner.name, None, None)
        return BudgetInfo(owner.name, row.requests_per_minute, row.tokens_per_day)


def tokens_used(tenant: str, since: datetime, *, db_url: str | None = None) -> int:
    """Prompt plus completion tokens metered for ``tenant`` since ``since`` (written rows only)."""
    with session_scope(db_url) as session:
        total = session.scalar(
            select(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens))
            .join(Tenant, Tenant.id == UsageRecord.tenant_id)
            .where(Tenant.name == tenant, UsageRecord.created_at >= since)
        )
    return int(total or 0)


# ---- shared counters (limits across gateway replicas: concierge.gateway.limits) -------------------


@dataclass(frozen=True)
class Claim:
    """Take ``amount`` from the counter ``bucket`` if it is still under ``limit`` (``used < limit``)."""

    bucket: str
    amount: int
    limit: int
    expires_at: int  # epoch seconds after which the row may be deleted
    seed_since: datetime | None = None  # a missing row starts from the tokens metered since then


@dataclass(frozen=True)
class ClaimResult:
    refused: str | None  # the bucket that refused (nothing was taken), or None: all claims taken
    used: dict[str, int]  # each claimed bucket's count after the claim (the refusing one: as it is)


def _counters() -> Any:
    """The ``tenant_counters`` table (Core: the counter statements skip the ORM's bulk-update
    bookkeeping, most of a claim's CPU when they went through it)."""
    from concierge.store.tables import TenantCounter

    return TenantCounter.__table__


def _counter_insert(conn: Any):  # noqa: ANN202 - the dialect's INSERT (both have ON CONFLICT)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_counters())


def _add_to_counter(conn: Any, tenant: str, bucket: str, delta: int, expires_at: int) -> None:
    t = _counters()
    stmt = _counter_insert(conn).values(tenant=tenant, bucket=bucket, used=max(0, delta), expires_at=expires_at)
    conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.tenant, t.c.bucket], set_={"used": t.c.used + delta}))


def _claim_one(conn: Any, tenant: str, claim: Claim) -> int | None:
    """The bucket's count after taking ``claim``, or None when it is at its limit (nothing taken)."""
    from sqlalchemy import update

    t = _counters()
    key = (t.c.tenant == tenant) & (t.c.bucket == claim.bucket)
    taken = conn.execute(
        update(t).where(key, t.c.used < claim.limit).values(used=t.c.used + claim.amount).returning(t.c.used)
    ).scalar()
    if taken is not None:
        return int(taken)
    if conn.scalar(select(t.c.used).where(key)) is not None:
        return None  # the row is there and at its limit
    # First claim in this window: start from what is already metered (usage written before).
    seed = 0
    if claim.seed_since is not None:
        seed = int(
            conn.scalar(
                select(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens))
                .join(Tenant, Tenant.id == UsageRecord.tenant_id)
                .where(Tenant.name == tenant, UsageRecord.created_at >= claim.seed_since)
            )
            or 0
        )
    fits = seed < claim.limit
    stmt = _counter_insert(conn).values(
        tenant=tenant, bucket=claim.bucket, used=seed + (claim.amount if fits else 0), expires_at=claim.expires_at
    )
    taken = conn.execute(
        stmt.on_conflict_do_update(  # another replica made the row meanwhile: claim on it
            index_elements=[t.c.tenant, t.c.bucket],
            set_={"used": t.c.used + claim.amount},
            where=t.c.used < claim.limit,
        ).returning(t.c.used)
    ).scalar()
    if taken is None or (not fits and int(taken) == seed):
        return None
    return int(taken)


def claim_counters(
    tenant: str,
    claims: list[Claim],
    *,
    settle: dict[str, tuple[int, int]] | None = None,
    db_url: str | None = None,
) -> ClaimResult:
    """Take every claim or none, in one transaction; first add ``settle`` ({bucket: (delta, expires)}).

    Each claim is one conditional ``UPDATE ... SET used = used + n WHERE used < limit`` (row lock
    on PostgreSQL, the write lock on SQLite), so replicas claiming together cannot both take the
    last unit. Rows are touched in bucket order, so two transactions never wait on each other in a
    cycle. When a claim is refused, the ones taken before it are given back in the same transaction.
    """
    settle = settle or {}
    by_bucket = {c.bucket: c for c in claims}
    used: dict[str, int] = {}
    taken: list[Claim] = []
    refused: str | None = None
    t = _counters()
    with session_scope(db_url) as session:
        conn = session.connection()
        for bucket in sorted(set(settle) | set(by_bucket)):
            if bucket in settle and settle[bucket][0]:
                _add_to_counter(conn, tenant, bucket, *settle[bucket])
            claim = by_bucket.get(bucket)
            if claim is None or refused is not None:
                continue
            after = _claim_one(conn, tenant, claim)
            if after is None:
                refused = bucket
                current = conn.scalar(select(t.c.used).where(t.c.tenant == tenant, t.c.bucket == bucket))
                used[bucket] = int(current or 0)
            else:
                used[bucket] = after
                taken.append(claim)
        if refused is not None:
            for claim in taken:
                _add_to_counter(conn, tenant, claim.bucket, -claim.amount, claim.expires_at)
    return ClaimResult(refused, used)


def settle_counters(deltas: dict[tuple[str, str], tuple[int, int]], *, db_url: str | None = None) -> None:
    """Add ``{(tenant, bucket): (delta, expires_at)}`` to the counters in one transaction (sorted)."""
    if not deltas:
        return
    with session_scope(db_url) as session:
        conn = session.connection()
        for (tenant, bucket), (delta, expires_at) in sorted(deltas.items()):
            if delta:
                _add_to_counter(conn, tenant, bucket, delta, expires_at)


def counter_value(tenant: str, bucket: str, *, db_url: str | None = None) -> int:
    from concierge.store.tables import TenantCounter

    with session_scope(db_url) as session:
        value = session.scalar(
            select(TenantCounter.used).where(TenantCounter.tenant == tenant, TenantCounter.bucket == bucket)
        )
    return int(value or 0)


def expire_counters(now: float, *, db_url: str | None = None) -> int:
    """Delete counter rows whose window ended before ``now`` (epoch seconds)."""
    from sqlalchemy import delete

    from concierge.store.tables import TenantCounter

    with session_scope(db_url) as session:
        result = session.execute(delete(TenantCounter).where(TenantCounter.expires_at < int(now)))
        return int(result.rowcount or 0)
