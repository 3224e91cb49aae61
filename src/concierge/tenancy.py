"""Tenants, API keys and usage metering (core: no web or CLI imports).

A key is ``ck-`` + ``secrets.token_urlsafe(32)``. Only its SHA-256 hash and a short prefix are
stored, so a leaked database does not leak working keys; the prefix lets people tell keys apart.
Usage rows are written per model call; :class:`UsageWriter` batches them on a background thread so
the request path never waits on a database commit.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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


def _tenant_ids(session: Any, names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = session.execute(select(Tenant.name, Tenant.id).where(Tenant.name.in_(names))).all()
    return {name: tid for name, tid in rows}


def record_usage(rows: UsageRow | list[UsageRow], *, db_url: str | None = None) -> int:
    """Insert usage rows in one transaction; tenant names with no tenant row are stored as NULL."""
    batch = [rows] if isinstance(rows, UsageRow) else list(rows)
    if not batch:
        return 0
    with session_scope(db_url) as session:
        ids = _tenant_ids(session, {r.tenant for r in batch if r.tenant and r.tenant_id is None})
        session.add_all(
            UsageRecord(
                tenant_id=r.tenant_id if r.tenant_id is not None else ids.get(r.tenant or ""),
                model=r.model[:200],
                endpoint=r.endpoint[:50],
                prompt_tokens=int(r.prompt_tokens),
                completion_tokens=int(r.completion_tokens),
                latency_ms=float(r.latency_ms),
                status=int(r.status),
            )
            for r in batch
        )
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


@dataclass(frozen=True)
class _LogEntry:
    tenant_id: int | None
    model: str
    request: str
    response: str


class UsageWriter:
    """Writes usage rows (and request-log rows) from a background thread, in batches.

    ``submit`` never blocks on the database. ``flush`` waits until everything queued so far is
    written; ``close`` flushes and stops the thread (call it on shutdown so nothing is lost).
    A failing batch is retried row by row, then dropped with a log line, so one bad row cannot
    wedge metering.
    """

    def __init__(self, *, db_url: str | None = None, batch_size: int = 200) -> None:
        self.db_url = db_url
        self.batch_size = batch_size
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="concierge-usage-writer", daemon=True)
        self._closed = False
        self.written = 0
        self.dropped = 0
        self._thread.start()

    def submit(self, row: UsageRow) -> None:
        if self._closed:
            record_usage(row, db_url=self.db_url)  # late rows after shutdown still count
            return
        self._queue.put(row)

    def submit_log(self, tenant_id: int | None, model: str, request: str, response: str) -> None:
        self._queue.put(_LogEntry(tenant_id, model, request, response))

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until rows queued before this call are written; False on timeout."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            # Drain what is already waiting so one commit covers a burst of calls.
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            pending: list[Any] = []
            for entry in batch:
                if entry is None:
                    stop = True
                elif isinstance(entry, threading.Event):
                    self._write(pending)
                    pending = []
                    entry.set()
                else:
                    pending.append(entry)
            self._write(pending)
            if stop:
                return

    def _write(self, entries: list[Any]) -> None:
        usage = [e for e in entries if isinstance(e, UsageRow)]
        logs = [e for e in entries if isinstance(e, _LogEntry)]
        if usage:
            try:
                self.written += record_usage(usage, db_url=self.db_url)
            except Exception:  # noqa: BLE001  (metering must survive a bad batch)
                for row in usage:
                    try:
                        self.written += record_usage(row, db_url=self.db_url)
                    except Exception as exc:  # noqa: BLE001
                        self.dropped += 1
                        log.error("usage row dropped: %s", type(exc).__name__)
        for entry in logs:
            try:
                log_request(entry.tenant_id, entry.model, entry.request, entry.response, db_url=self.db_url)
            except Exception as exc:  # noqa: BLE001
                log.error("request log row dropped: %s", type(exc).__name__)


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


def _counter_insert(session: Any):  # noqa: ANN202 - the dialect's INSERT (both have ON CONFLICT)
    from concierge.store.tables import TenantCounter

    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(TenantCounter)


def _add_to_counter(session: Any, tenant: str, bucket: str, delta: int, expires_at: int) -> None:
    from concierge.store.tables import TenantCounter

    stmt = _counter_insert(session).values(tenant=tenant, bucket=bucket, used=max(0, delta), expires_at=expires_at)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[TenantCounter.tenant, TenantCounter.bucket],
            set_={"used": TenantCounter.used + delta},
        )
    )


def _claim_one(session: Any, tenant: str, claim: Claim) -> int | None:
    """The bucket's count after taking ``claim``, or None when it is at its limit (nothing taken)."""
    from sqlalchemy import update

    from concierge.store.tables import TenantCounter

    key = (TenantCounter.tenant == tenant) & (TenantCounter.bucket == claim.bucket)
    taken = session.execute(
        update(TenantCounter)
        .where(key, TenantCounter.used < claim.limit)
        .values(used=TenantCounter.used + claim.amount)
        .returning(TenantCounter.used)
    ).scalar()
    if taken is not None:
        return int(taken)
    if session.scalar(select(TenantCounter.used).where(key)) is not None:
        return None  # the row is there and at its limit
    # First claim in this window: start from what is already metered (usage written before).
    seed = 0
    if claim.seed_since is not None:
        seed = int(
            session.scalar(
                select(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens))
                .join(Tenant, Tenant.id == UsageRecord.tenant_id)
                .where(Tenant.name == tenant, UsageRecord.created_at >= claim.seed_since)
            )
            or 0
        )
    fits = seed < claim.limit
    stmt = _counter_insert(session).values(
        tenant=tenant, bucket=claim.bucket, used=seed + (claim.amount if fits else 0), expires_at=claim.expires_at
    )
    taken = session.execute(
        stmt.on_conflict_do_update(  # another replica made the row meanwhile: claim on it
            index_elements=[TenantCounter.tenant, TenantCounter.bucket],
            set_={"used": TenantCounter.used + claim.amount},
            where=TenantCounter.used < claim.limit,
        ).returning(TenantCounter.used)
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
    with session_scope(db_url) as session:
        for bucket in sorted(set(settle) | set(by_bucket)):
            if bucket in settle and settle[bucket][0]:
                _add_to_counter(session, tenant, bucket, *settle[bucket])
            claim = by_bucket.get(bucket)
            if claim is None or refused is not None:
                continue
            after = _claim_one(session, tenant, claim)
            if after is None:
                refused = bucket
                from concierge.store.tables import TenantCounter

                current = session.scalar(
                    select(TenantCounter.used).where(TenantCounter.tenant == tenant, TenantCounter.bucket == bucket)
                )
                used[bucket] = int(current or 0)
            else:
                used[bucket] = after
                taken.append(claim)
        if refused is not None:
            for claim in taken:
                _add_to_counter(session, tenant, claim.bucket, -claim.amount, claim.expires_at)
    return ClaimResult(refused, used)


def settle_counters(deltas: dict[tuple[str, str], tuple[int, int]], *, db_url: str | None = None) -> None:
    """Add ``{(tenant, bucket): (delta, expires_at)}`` to the counters in one transaction (sorted)."""
    if not deltas:
        return
    with session_scope(db_url) as session:
        for (tenant, bucket), (delta, expires_at) in sorted(deltas.items()):
            if delta:
                _add_to_counter(session, tenant, bucket, delta, expires_at)


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
