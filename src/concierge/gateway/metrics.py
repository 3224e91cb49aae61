"""Prometheus metrics for one gateway app (its own registry, so several apps never collide).

``concierge_requests_total`` counts HTTP answers by status; tokens, time to first token and
latency come from the hub observer's :class:`~concierge.models.hub.CallRecord` per model call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from concierge.models.hub import CallRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_TENANT = "-"  # label for calls made without a tenant (unauthenticated, or in-process callers)

# Token streams on CPU are slow: buckets reach well past a minute.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "concierge_requests",
            "HTTP requests answered by the gateway",
            ["model", "tenant", "endpoint", "status"],
            registry=self.registry,
        )
        self.engine_restarts = Counter(
            "concierge_engine_restarts",
            "Engines retired after a fatal error (a new one starts on the next request)",
            ["model"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "concierge_tokens",
            "Tokens processed (in = prompt, out = completion)",
            ["model", "tenant", "direction"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "concierge_time_to_first_token_seconds",
            "Time from request to first generated token",
            ["model", "tenant"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "concierge_request_latency_seconds",
            "Model call latency, end to end",
            ["model", "tenant"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def count_request(self, model: str, tenant: str | None, endpoint: str, status: int) -> None:
        self.requests.labels(model, tenant or NO_TENANT, endpoint, str(status)).inc()

    def observe_call(self, record: CallRecord) -> None:
        tenant = record.tenant or NO_TENANT
        if getattr(record, "engine_restarted", False):
            self.engine_restarts.labels(record.alias).inc()
        if record.prompt_tokens:
            self.tokens.labels(record.alias, tenant, "in").inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels(record.alias, tenant, "out").inc(record.completion_tokens)
        if record.ttft_s is not None and record.status < 400:
            self.ttft.labels(record.alias, tenant).observe(record.ttft_s)
        self.latency.labels(record.alias, tenant).observe(record.latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
