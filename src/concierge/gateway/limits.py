"""Backpressure per model alias and budgets per tenant, enforced before a model call starts.

Per alias, at most ``max_concurrent`` calls run (default: the llama.cpp engine's ``n_parallel``
slots, since more only wait inside the engine) and ``max_queued`` wait, first come first served;
beyond that the caller gets a 429 ``model_overloaded`` with ``Retry-After`` at once, so a burst
cannot pile up threads and memory. Per tenant, ``requests per minute`` (sliding window) and
``tokens per day`` (UTC day) come from the ``tenant_budgets`` table, re-read every few seconds.

State is per gateway process: behind several replicas each one enforces the full budget, so
split the limits by the replica count (or put a shared limiter in front). Tokens are counted
after a call ends, so calls admitted together can overshoot the daily budget by what they use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread

from concierge import tenancy
from concierge.gateway.errors import GatewayError
from concierge.gateway.settings import GatewaySettings
from concierge.models.deployment import DEFAULT_N_PARALLEL
from concierge.models.hub import CallRecord

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60


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

    def __init__(self, gate: _AliasQueue | None) -> None:
        self._gate = gate
        self.handed_over = False

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()

    def hand_over(self) -> Callable[[], None]:
        self.handed_over = True
        return self.release

    def release_unless_handed_over(self) -> None:
        if not self.handed_over:
            self.release()


@dataclass
class _TenantState:
    budget: tenancy.BudgetInfo | None = None
    budget_at: float = -math.inf
    minute: deque[float] | None = None
    day: str = ""
    tokens: int = 0
    seeded: bool = False
    refreshing: bool = False


class Limits:
    """The gateway's admission control: alias queues and tenant budgets."""

    def __init__(self, hub: Any, settings: GatewaySettings) -> None:
        self.hub = hub
        self.settings = settings
        self._queues: dict[str, _AliasQueue] = {}
        self._tenants: dict[str, _TenantState] = {}
        self._lock = threading.Lock()  # observe() runs in worker threads
        self._refreshes: set[asyncio.Task[None]] = set()  # background budget reads (kept referenced)

    # -- alias queues ---------------------------------------------------------------------------

    def concurrency(self, alias: str) -> int:
        """Calls that may run at once on ``alias``."""
        if self.settings.max_concurrent:
            return self.settings.max_concurrent
        spec_of = getattr(self.hub, "spec", None)
        if callable(spec_of):
            try:
                spec = spec_of(alias)
            except Exception:  # noqa: BLE001  (unknown to the deployment: use the general default)
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
        """Drop cached budgets (they are re-read on the next call)."""
        with self._lock:
            for state in self._tenants.values():
                state.budget_at = -math.inf

    def _state(self, tenant: str) -> _TenantState:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is None:
                state = self._tenants[tenant] = _TenantState(minute=deque())
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

    async def check_budget(self, tenant: str | None) -> None:
        """Raise a 429 when ``tenant`` is over a budget; else count this request against it."""
        if not tenant:
            return
        state = self._state(tenant)
        budget = await self._budget(tenant, state)
        if budget is None:
            return
        if budget.tokens_per_day:
            now = datetime.now(UTC)
            today = now.strftime("%Y-%m-%d")
            if state.day != today or not state.seeded:
                midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
                db_url = self.settings.database_url
                used = await anyio.to_thread.run_sync(
                    lambda: tenancy.tokens_used(tenant, midnight, db_url=db_url)
                )
                with self._lock:
                    state.day, state.tokens, state.seeded = today, used, True
            if state.tokens >= budget.tokens_per_day:
                tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                raise _rate_limited(
                    f"Tenant {tenant!r} has used its {budget.tokens_per_day} tokens for today (UTC).",
                    "tokens_per_day_exceeded",
                    (tomorrow - now).total_seconds(),
                )
        if budget.requests_per_minute:
            with self._lock:
                window = state.minute
                assert window is not None
                now_s = time.monotonic()
                while window and now_s - window[0] >= 60.0:
                    window.popleft()
                if len(window) >= budget.requests_per_minute:
                    raise _rate_limited(
                        f"Tenant {tenant!r} is over its {budget.requests_per_minute} requests per minute.",
                        "requests_per_minute_exceeded",
                        60.0 - (now_s - window[0]),
                    )
                window.append(now_s)

    def _uncount(self, tenant: str | None) -> None:
        """Undo the request counted by ``check_budget`` (the call was refused afterwards)."""
        if not tenant:
            return
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None and state.minute:
                state.minute.pop()

    # -- the hook -------------------------------------------------------------------------------

    async def admit(self, tenant: str | None, alias: str) -> Slot:
        """Check ``tenant``'s budgets, then wait for a place on ``alias``; raises a 429 GatewayError."""
        await self.check_budget(tenant)
        gate = self._queue(alias)
        try:
            await gate.acquire(self.settings.max_queue_wait_s)
        except BaseException:
            self._uncount(tenant)
            raise
        return Slot(gate)

    def observe(self, record: CallRecord) -> None:
        """Count a finished call's tokens and time (the hub's observer calls this)."""
        gate = self._queues.get(record.alias)
        if gate is not None and record.status < 400:
            gate.latency_s = 0.8 * gate.latency_s + 0.2 * max(0.0, record.latency_s)
        if record.tenant:
            with self._lock:
                state = self._tenants.get(record.tenant)
                # Only once seeded from the database: before that the row will be read from there.
                if state is not None and state.seeded and state.day == datetime.now(UTC).strftime("%Y-%m-%d"):
                    state.tokens += int(record.prompt_tokens) + int(record.completion_tokens)
