"""Backpressure per model alias and budgets per tenant, enforced before a model call starts.

Per alias, at most ``max_concurrent`` calls run (default: the llama.cpp engine's ``n_parallel``
slots, since more only wait inside the engine) and ``max_queued`` wait, first come first served;
beyond that the caller gets a 429 ``model_overloaded`` with ``Retry-After`` at once, so a burst
cannot pile up threads and memory. These queues are per process: they guard the local engine.

Per tenant, ``requests per minute`` (UTC minute) and ``tokens per day`` (UTC day) come from the
``tenant_budgets`` table (re-read every few seconds) and are counted in ``tenant_counters``, which
every replica shares. Admitting a request is one transaction of conditional increments
(:func:`concierge.tenancy.claim_counters`): one request on the minute's counter, and an estimate
of its tokens (the largest of the tenant's recent calls on that alias, else the alias's context
length) on the day's counter, each only while that counter is under its limit. When the call
ends, the difference between its real tokens and the reservation is settled (written in the
background, or with the tenant's next claim). So N replicas together admit at most the tenant's
requests per minute, and its tokens per day are exceeded by at most one request's tokens plus
what calls in flight use beyond their reservations. See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio.to_thread

from concierge import tenancy
from concierge.gateway.errors import GatewayError
from concierge.gateway.settings import GatewaySettings
from concierge.models.deployment import DEFAULT_N_PARALLEL
from concierge.models.engine import Hub, ModelNotFoundError
from concierge.models.hub import CallRecord

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60
DEFAULT_RESERVATION = 1024  # tokens reserved for a call when neither its alias nor past calls say more
RECENT_CALLS = 16  # a reservation is the largest of this many recent calls (per tenant and alias)
TOKEN_REFUSAL_HOLD_S = 1.0  # a token-budget refusal is repeated locally this long, without the database


def _rate_limited(message: str, code: str, retry_after: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_after))
    return GatewayError(
        429,
        f"{message} Retry after {seconds} s.",
        error_type="rate_limit_error",
        code=code,
        headers={"Retry-After": str(seconds)},
    )


class _AliasQueue:
    """A FIFO gate: ``concurrent`` holders, ``queued`` waiters. Used from the event loop only."""

    def __init__(self, alias: str, concurrent: int, queued: int) -> None:
        self.alias = alias
        self.concurrent = max(1, concurrent)
        self.queued = max(0, queued)
        self.running = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.latency_s = 1.0  # moving average of call time, for Retry-After

    def retry_after(self) -> float:
        # Time for the calls ahead to drain, one "round" of slots per latency.
        rounds = (len(self.waiters) + self.running) / self.concurrent
        return min(MAX_RETRY_AFTER_S, max(1.0, self.latency_s * rounds))

    async def acquire(self, wait_s: float) -> None:
        if self.running < self.concurrent and not self.waiters:
            self.running += 1
            return
        if len(self.waiters) >= self.queued:
            raise _rate_limited(
                f"Model {self.alias!r} is overloaded: {self.running} calls running and "
                f"{len(self.waiters)} waiting.",
                "model_overloaded",
                self.retry_after(),
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            async with asyncio.timeout(wait_s):
                await asyncio.shield(future)
        except BaseException as exc:
            if future.done():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                future.cancel()
                try:
                    self.waiters.remove(future)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise _rate_limited(
                    f"Model {self.alias!r} is overloaded: waited {wait_s:g} s for a free slot.",
                    "model_overloaded",
                    self.retry_after(),
                ) from None
            raise

    def release(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes to the next waiter; running stays
                return
        self.running = max(0, self.running - 1)


class Slot:
    """A held place in an alias queue; ``release`` is idempotent.

    A streaming response takes the slot over (``hand_over``) and releases it when the stream
    closes, so the request handler's own ``finally`` leaves it alone.
    """

    def __init__(self, gate: _AliasQueue | None, on_release: Callable[[], None] | None = None) -> None:
        self._gate = gate
        self._on_release = on_release
        self.handed_over = False

    def release(self) -> None:
        gate, self._gate = self._gate, None
        on_release, self._on_release = self._on_release, None
        if gate is not None:
            gate.release()
        if on_release is not None:
            on_release()

    def hand_over(self) -> Callable[[], None]:
        self.handed_over = True
        return self.release

    def release_unless_handed_over(self) -> None:
        if not self.handed_over:
            self.release()


@dataclass
class Reservation:
    """What one admitted request took from its tenant's shared counters (settled when it ends)."""

    tenant: str
    alias: str | None
    day_bucket: str | None  # the tokens-per-day counter it reserved on (None: no token budget)
    tokens: int  # tokens reserved there (0 where the database could not be reached)
    day_expires: int
    minute_bucket: str | None  # the requests-per-minute counter it counted on
    minute_expires: int
    done: bool = False


@dataclass
class _TenantState:
    budget: tenancy.BudgetInfo | None = None
    budget_at: float = -math.inf
    refreshing: bool = False
    # bucket -> (monotonic time the refusal holds until, the limit it was refused under)
    refused: dict[str, tuple[float, int]] = field(default_factory=dict)


def _minute_bucket(now: datetime) -> tuple[str, int, float]:
    """The requests-per-minute counter for ``now``: its name, expiry (epoch) and seconds left."""
    start = now.replace(second=0, microsecond=0)
    end = start + timedelta(minutes=1)
    return f"rpm:{start:%Y-%m-%dT%H:%M}", int(end.timestamp()) + 60, (end - now).total_seconds()


def _day_bucket(now: datetime) -> tuple[str, int, float, datetime]:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight + timedelta(days=1)
    return f"tpd:{midnight:%Y-%m-%d}", int(end.timestamp()) + 3600, (end - now).total_seconds(), midnight


class Limits:
    """The gateway's admission control: alias queues (per process) and tenant budgets (shared)."""

    def __init__(self, hub: Hub, settings: GatewaySettings) -> None:
        self.hub = hub
        self.settings = settings
        self._queues: dict[str, _AliasQueue] = {}
        self._tenants: dict[str, _TenantState] = {}
        self._lock = threading.Lock()  # observe() runs in worker threads
        self._refreshes: set[asyncio.Task[None]] = set()  # background budget reads (kept referenced)
        # Reservations not yet settled, oldest first, per (tenant, alias); and recent call sizes.
        self._pending: dict[tuple[str, str | None], deque[Reservation]] = {}
        self._sizes: dict[tuple[str, str | None], deque[int]] = {}
        # Counter changes not yet written: {(tenant, bucket): [delta, expires_at]}.
        self._deltas: dict[tuple[str, str], list[int]] = {}
        self.db_checks = 0  # claims sent to the database (for tests and the operator)

    # -- alias queues ---------------------------------------------------------------------------

    def concurrency(self, alias: str) -> int:
        """Calls that may run at once on ``alias``."""
        if self.settings.max_concurrent:
            return self.settings.max_concurrent
        try:
            spec = self.hub.spec(alias)
        except ModelNotFoundError:  # unknown to the deployment (or a hub without specs): the general default
            spec = None
        if spec is not None and spec.engine_kind == "llama.cpp":
            return spec.n_parallel or DEFAULT_N_PARALLEL
        return self.settings.max_concurrent_other

    def _queue(self, alias: str) -> _AliasQueue:
        gate = self._queues.get(alias)
        if gate is None:
            gate = self._queues[alias] = _AliasQueue(alias, self.concurrency(alias), self.settings.max_queued)
        return gate

    def stats(self) -> dict[str, dict[str, int]]:
        """Running and waiting calls per alias (for tests and the operator)."""
        return {
            a: {"running": q.running, "waiting": len(q.waiters), "concurrent": q.concurrent}
            for a, q in self._queues.items()
        }

    # -- tenant budgets -------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop cached budgets and refusals (they are re-read on the next call)."""
        with self._lock:
            for state in self._tenants.values():
                state.budget_at = -math.inf
                state.refused.clear()

    def _state(self, tenant: str) -> _TenantState:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is None:
                state = self._tenants[tenant] = _TenantState()
            return state

    async def _budget(self, tenant: str, state: _TenantState) -> tenancy.BudgetInfo | None:
        if time.monotonic() - state.budget_at <= self.settings.budget_cache_ttl_s:
            return state.budget
        if state.budget_at == -math.inf or self.settings.budget_cache_ttl_s <= 0:
            # Never read (or forgotten), or caching is off: wait for the database.
            await self._read_budget(tenant, state)
        elif not state.refreshing:
            # Stale: this call goes on under the budget read last time while a background read
            # refreshes it, so steady traffic never waits on the database for its budget.
            state.refreshing = True
            task = asyncio.get_running_loop().create_task(self._read_budget(tenant, state))
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)
        return state.budget

    async def _read_budget(self, tenant: str, state: _TenantState) -> None:
        db_url = self.settings.database_url
        try:
            budget = await anyio.to_thread.run_sync(lambda: tenancy.get_budget(tenant, db_url=db_url))
        except tenancy.TenancyError:
            budget = None
        except Exception:  # noqa: BLE001  (keep the last known budget; the next call tries again)
            state.refreshing = False
            if state.budget_at == -math.inf:
                raise
            log.warning("reading the budget of tenant %r failed", tenant, exc_info=True)
            return
        state.budget, state.budget_at, state.refreshing = budget, time.monotonic(), False

    def estimate(self, tenant: str, alias: str | None) -> int:
        """Tokens to reserve for a call: the largest of the tenant's recent calls on ``alias``, else
        the alias's context length (prompt and completion fit in it), else ``DEFAULT_RESERVATION``."""
        with self._lock:
            sizes = self._sizes.get((tenant, alias))
            if sizes:
                return max(1, max(sizes))
        if alias is not None:
            try:
                context = int(getattr(self.hub.card(alias), "context_length", 0) or 0)
            except Exception:  # noqa: BLE001  (unknown alias: the default)
                context = 0
            if context > 0:
                return context
        return DEFAULT_RESERVATION

    def _local_refusal(self, tenant: str, state: _TenantState, bucket: str, limit: int) -> float | None:
        with self._lock:
            held = state.refused.get(bucket)
            if held is None:
                return None
            until, refused_limit = held
            if refused_limit != limit or time.monotonic() >= until:
                del state.refused[bucket]
                return None
            return until - time.monotonic()

    def _in_flight(self, tenant: str) -> int:
        with self._lock:
            return sum(len(q) for (t, _a), q in self._pending.items() if t == tenant)

    def _refuse_tokens(self, tenant: str, budget: int, until_midnight: float) -> GatewayError:
        if self._in_flight(tenant):
            # What is left is reserved by calls still running here: it comes back when they end.
            return _rate_limited(
                f"Tenant {tenant!r} has its {budget} tokens for today (UTC) used or reserved by "
                "calls in flight.",
                "tokens_per_day_exceeded",
                1.0,
            )
        return _rate_limited(
            f"Tenant {tenant!r} has used its {budget} tokens for today (UTC).",
            "tokens_per_day_exceeded",
            until_midnight,
        )

    async def reserve(self, tenant: str | None, alias: str | None = None) -> Reservation | None:
        """Claim one request (and its estimated tokens) from ``tenant``'s shared counters, or raise a 429.

        One database transaction per admitted request of a tenant with a budget; none for tenants
        without one (the budget is cached), and none for a refusal the database gave in the last
        second (requests per minute: until the minute ends).
        """
        if not tenant:
            return None
        state = self._state(tenant)
        budget = await self._budget(tenant, state)
        if budget is None or not (budget.tokens_per_day or budget.requests_per_minute):
            return None
        now = datetime.now(UTC)
        minute, minute_expires, minute_left = _minute_bucket(now)
        day, day_expires, day_left, midnight = _day_bucket(now)
        claims: list[tenancy.Claim] = []
        tokens = 0
        if budget.tokens_per_day:
            if self._local_refusal(tenant, state, day, budget.tokens_per_day) is not None:
                raise self._refuse_tokens(tenant, budget.tokens_per_day, day_left)
            tokens = self.estimate(tenant, alias)
            claims.append(tenancy.Claim(day, tokens, budget.tokens_per_day, day_expires, seed_since=midnight))
        if budget.requests_per_minute:
            left = self._local_refusal(tenant, state, minute, budget.requests_per_minute)
            if left is not None:
                raise self._refuse_minute(tenant, budget.requests_per_minute, left)
            claims.append(tenancy.Claim(minute, 1, budget.requests_per_minute, minute_expires))
        settle = self._take_deltas(tenant)
        db_url = self.settings.database_url
        try:
            result = await anyio.to_thread.run_sync(
                lambda: tenancy.claim_counters(tenant, claims, settle=settle, db_url=db_url)
            )
        except Exception:  # noqa: BLE001  (the database is down: admit, and count the call when it ends)
            self._put_back(tenant, settle)
            log.warning("shared limits unavailable for tenant %r: admitted unchecked", tenant, exc_info=True)
            return self._pending_add(
                Reservation(tenant, alias, day if budget.tokens_per_day else None, 0, day_expires, None, 0)
            )
        self.db_checks += 1
        if result.refused == day:
            with self._lock:
                state.refused[day] = (time.monotonic() + TOKEN_REFUSAL_HOLD_S, budget.tokens_per_day or 0)
            raise self._refuse_tokens(tenant, budget.tokens_per_day or 0, day_left)
        if result.refused == minute:
            with self._lock:
                state.refused[minute] = (time.monotonic() + minute_left, budget.requests_per_minute or 0)
            raise self._refuse_minute(tenant, budget.requests_per_minute or 0, minute_left)
        return self._pending_add(
            Reservation(
                tenant,
                alias,
                day if budget.tokens_per_day else None,
                tokens,
                day_expires,
                minute if budget.requests_per_minute else None,
                minute_expires,
            )
        )

    @staticmethod
    def _refuse_minute(tenant: str, rpm: int, left: float) -> GatewayError:
        return _rate_limited(
            f"Tenant {tenant!r} is over its {rpm} requests per minute.", "requests_per_minute_exceeded", left
        )

    async def check_budget(self, tenant: str | None) -> Reservation | None:
        """Raise a 429 when ``tenant`` is over a budget; else count this request against it."""
        return await self.reserve(tenant, None)

    # -- settling -------------------------------------------------------------------------------

    def _pending_add(self, res: Reservation) -> Reservation:
        with self._lock:
            self._pending.setdefault((res.tenant, res.alias), deque()).append(res)
        return res

    def _add_delta(self, tenant: str, bucket: str, delta: int, expires: int) -> None:
        # Called with self._lock held.
        if not delta:
            return
        entry = self._deltas.setdefault((tenant, bucket), [0, expires])
        entry[0] += delta

    def _take_deltas(self, tenant: str | None = None) -> dict:
        with self._lock:
            if tenant is None:
                taken = {k: (v[0], v[1]) for k, v in self._deltas.items()}
                self._deltas.clear()
                return taken
            keys = [k for k in self._deltas if k[0] == tenant]
            return {k[1]: tuple(self._deltas.pop(k)) for k in keys}

    def _put_back(self, tenant: str | None, deltas: dict) -> None:
        with self._lock:
            for key, (delta, expires) in deltas.items():
                self._add_delta(*((tenant, key) if tenant is not None else key), delta, expires)

    def release(self, res: Reservation | None, *, refused: bool = False) -> None:
        """The request ended (or was refused after its claim): give back what was not settled."""
        if res is None:
            return
        with self._lock:
            if not res.done:
                res.done = True
                queue = self._pending.get((res.tenant, res.alias))
                if queue is not None:
                    try:
                        queue.remove(res)
                    except ValueError:
                        pass
                if res.day_bucket is not None:
                    self._add_delta(res.tenant, res.day_bucket, -res.tokens, res.day_expires)
            if refused and res.minute_bucket is not None:
                self._add_delta(res.tenant, res.minute_bucket, -1, res.minute_expires)

    def flush(self) -> None:
        """Write the settled counter changes (blocking; the gateway runs it in a worker thread)."""
        deltas = self._take_deltas()
        if not deltas:
            return
        try:
            tenancy.settle_counters(deltas, db_url=self.settings.database_url)
        except Exception:
            self._put_back(None, deltas)
            raise

    def expire(self) -> int:
        """Delete counter rows whose window has passed (blocking)."""
        return tenancy.expire_counters(time.time(), db_url=self.settings.database_url)

    async def flush_forever(self, interval_s: float = 0.25) -> None:
        """Write counter changes every ``interval_s`` and delete expired counters now and then."""
        last_expiry = 0.0
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self._deltas:
                    await anyio.to_thread.run_sync(self.flush)
                if time.monotonic() - last_expiry > 300:
                    last_expiry = time.monotonic()
                    await anyio.to_thread.run_sync(self.expire)
            except Exception:  # noqa: BLE001  (kept in memory; the next round tries again)
                log.warning("writing the shared limit counters failed", exc_info=True)

    # -- the hook -------------------------------------------------------------------------------

    async def admit(self, tenant: str | None, alias: str) -> Slot:
        """Check ``tenant``'s budgets, then wait for a place on ``alias``; raises a 429 GatewayError."""
        res = await self.reserve(tenant, alias)
        gate = self._queue(alias)
        try:
            await gate.acquire(self.settings.max_queue_wait_s)
        except BaseException:
            self.release(res, refused=True)
            raise
        return Slot(gate, (lambda: self.release(res)) if res is not None else None)

    def observe(self, record: CallRecord) -> None:
        """Count a finished call's tokens and time (the hub's observer calls this)."""
        gate = self._queues.get(record.alias)
        if gate is not None and record.status < 400:
            gate.latency_s = 0.8 * gate.latency_s + 0.2 * max(0.0, record.latency_s)
        if not record.tenant:
            return
        tenant, alias = record.tenant, record.alias
        actual = max(0, int(record.prompt_tokens) + int(record.completion_tokens))
        with self._lock:
            if record.status < 400 or actual:
                self._sizes.setdefault((tenant, alias), deque(maxlen=RECENT_CALLS)).append(actual)
            queue = self._pending.get((tenant, alias))
            res = None
            while queue:
                res = queue.popleft()
                if not res.done:
                    break
                res = None
            if res is not None:
                res.done = True
                if res.day_bucket is not None:
                    self._add_delta(tenant, res.day_bucket, actual - res.tokens, res.day_expires)
                return
            state = self._tenants.get(tenant)
            budget = state.budget if state is not None else None
        if budget is not None and budget.tokens_per_day and actual:
            # No reservation left to settle (it was given back first): count the call as it is.
            day, expires, _, _ = _day_bucket(datetime.now(UTC))
            with self._lock:
                self._add_delta(tenant, day, actual, expires)
