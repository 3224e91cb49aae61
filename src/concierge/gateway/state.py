"""What one gateway app holds: the hub, its settings, metering, limits and the warm-up.

The hub reports each model call to :meth:`Gateway.on_call`, which settles the call's shared limit
counters, feeds Prometheus and appends a usage row to the durable outbox (on disk before the
response goes out), from which a background writer (started in :meth:`Gateway.lifespan`) moves it
to the database; nothing here opens outbound connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request

from concierge.gateway.auth import KeyAuthenticator
from concierge.gateway.errors import GatewayError
from concierge.gateway.http import Call, Workers
from concierge.gateway.limits import Limits
from concierge.gateway.metrics import GatewayMetrics
from concierge.gateway.redact import redact_json
from concierge.gateway.settings import GatewaySettings
from concierge.models.engine import Hub, ServingHub
from concierge.models.hub import CallRecord, ModelCard, as_hub
from concierge.tenancy import UsageRow, UsageWriter

log = logging.getLogger("concierge.gateway")


class Gateway:
    """The parts of one gateway app the handlers share (``request.app.state.gateway``)."""

    def __init__(self, hub: ServingHub, settings: GatewaySettings) -> None:
        # A full Hub whatever was passed: a ModelHub as it is, anything else through the adapter,
        # so nothing below asks the hub what it can do.
        self.hub: Hub = as_hub(hub)
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.authn = KeyAuthenticator(ttl_s=settings.key_cache_ttl_s, db_url=settings.database_url)
        self.started = int(time.time())
        self.limiter = Workers(settings.max_concurrent_calls, "concierge-model")  # threads for hub calls
        self.limits = Limits(self.hub, settings)  # per-alias queues and tenant budgets (429 when full)
        self.writer: UsageWriter | None = None
        self.warm_up_status = "off"
        self._warming = threading.local()  # marks warm-up calls so they are not metered as tenant usage

    def card_for(self, alias: str, kind: str, call: Call) -> ModelCard:
        """The card for ``alias`` (404 unknown, 400 when it serves another kind); noted on ``call``."""
        card = self.hub.card(alias)  # ModelNotFoundError -> 404
        call.model = card.alias
        if card.kind != kind:
            raise GatewayError(
                400,
                f"Model {alias!r} serves {card.kind}, not {kind}.",
                param="model",
                code="model_not_supported",
            )
        return card

    # ---- metering --------------------------------------------------------------------------

    def on_call(self, record: CallRecord) -> None:
        if getattr(self._warming, "active", False):
            return
        self.limits.observe(record)
        self.metrics.observe_call(record)
        row = UsageRow(
            tenant=record.tenant,
            model=record.alias,
            endpoint=record.endpoint,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            latency_ms=record.latency_s * 1000.0,
            status=record.status,
        )
        if self.writer is not None:
            self.writer.submit(row)
        else:  # app used without its lifespan: write directly rather than lose the row
            from concierge.tenancy import record_usage

            record_usage(row, db_url=self.settings.database_url)

    def log_exchange(self, call: Call, request_body: Any, response_body: Any) -> None:
        if self.settings.log_requests and self.writer is not None:
            self.writer.submit_log(
                call.tenant_id, call.model, redact_json(request_body), redact_json(response_body)
            )

    # ---- start and stop --------------------------------------------------------------------

    def warm_up(self) -> None:
        hub = self.hub
        self.warm_up_status = "running"
        self._warming.active = True
        failed = False
        for card in hub.models():
            if card.engine == "openai-upstream":
                continue  # nothing to load here; a test call would cost the upstream a request
            try:
                hub.warm_up(card.alias)  # the adapter's warm-up is a one-token call for a plain hub
                log.info("warmed up %s", card.alias)
            except Exception as exc:  # noqa: BLE001  (a broken alias must not stop the server)
                failed = True
                log.warning("warm-up of %s failed: %s", card.alias, type(exc).__name__)
        self.warm_up_status = "failed" if failed else "done"

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.writer = app.state.usage_writer = UsageWriter(
            db_url=self.settings.database_url, power_safe=self.settings.metering_power_safe
        )
        detach = _attach_observer(self.hub, self.on_call)
        warmer = None
        if self.settings.warm_up:
            self.warm_up_status = "pending"
            warmer = threading.Thread(target=self.warm_up, name="concierge-warm-up", daemon=True)
            warmer.start()
        refresher = asyncio.get_running_loop().create_task(self.authn.refresh_forever())
        counters = asyncio.get_running_loop().create_task(self.limits.flush_forever())
        try:
            yield
        finally:
            refresher.cancel()
            counters.cancel()
            if warmer is not None:
                # Let a model load finish: closing the hub under a running llama.cpp call aborts.
                await anyio.to_thread.run_sync(warmer.join, 60.0)
            detach()
            self.limiter.close()
            self.writer.close()  # flushes queued usage rows before the process exits
            try:
                await anyio.to_thread.run_sync(self.limits.flush)  # settle the shared counters
            except Exception:  # noqa: BLE001  (reservations stay charged: conservative)
                log.warning("settling the shared limit counters at shutdown failed", exc_info=True)


def gateway(request: Request) -> Gateway:
    """The gateway behind a request."""
    return request.app.state.gateway


def _attach_observer(hub: Hub, observer: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Hook ``observer`` into the hub; returns the undo."""
    hub.add_observer(observer)
    return lambda: hub.remove_observer(observer)
