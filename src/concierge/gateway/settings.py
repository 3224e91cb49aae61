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
