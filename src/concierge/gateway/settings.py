"""Gateway settings: limits, logging, warm-up and access to /metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GatewaySettings:
    # Request bodies above this are refused with 413 (Content-Length and streamed bytes both count).
    max_body_bytes: int = 1024 * 1024
    # Opt-in request/response log (redacted) in the request_log table.
    log_requests: bool = False
    # Load chat engines (and run one token) at startup so the first user does not pay the load.
    warm_up: bool = False
    # /metrics open to anyone who can reach the port (Prometheus default) or operator keys only.
    metrics_public: bool = False
    # Successful key look-ups are cached this long; a revoked key stops working within this time.
    key_cache_ttl_s: float = 1.0
    # Database for keys, usage and the request log (None: CONCIERGE_DATABASE_URL or the home SQLite).
    database_url: str | None = None
    # Upper bound on one blocking hub call's thread pool (requests beyond it queue).
    max_concurrent_calls: int = 64
    # Per model alias: calls running at once (None: the engine's n_parallel for llama.cpp aliases,
    # ``max_concurrent_other`` for upstreams and ONNX) and calls waiting beyond that; a full queue is a 429.
    max_concurrent: int | None = None
    max_queued: int = 32
    max_concurrent_other: int = 16
    # A queued call that waits longer than this gives up with a 429 rather than hang the client.
    max_queue_wait_s: float = 60.0
    # Tenant budgets (requests per minute, tokens per day) are re-read from the database this often.
    budget_cache_ttl_s: float = 5.0
    # Ceilings per request, whatever the tenant: completion tokens (also the default when a
    # request names none) and prompt text in characters (None: no ceiling beyond the context).
    max_tokens_ceiling: int | None = None
    max_prompt_chars: int | None = None
    # Metering's outbox fsyncs every commit (a metered call survives a power cut); False keeps it
    # SIGKILL-safe only (the commit reaches the OS, not the disk) and saves the disk's flush time on
    # every call's latency (docs/reliability.md).
    metering_power_safe: bool = True
    # FastAPI's native OpenTelemetry instrumentation (traces, metrics, logs to the providers that
    # OpenTelemetry is configured with). Off by default: with no provider it only costs CPU on
    # every request; the gateway's own metrics are on /metrics.
    opentelemetry: bool = False
    # The most choices one request may ask for (``n``): each is one engine call.
    max_n: int = 8
