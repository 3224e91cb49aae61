"""The booking system behind both demo services: the home-stay tools over the service's own database,
with idempotency keys honoured for every write.

A write that comes with a key is applied once: a second request with the same key and the same
request gets the first answer again (``replayed``), whatever happened to the first answer on its way
back; the same key with a different request is refused. This is what lets concierge retry a write
after a timeout or a crash without applying it twice.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from concierge.support.domains.homestay import TOOLS, load
from concierge.support.toolkit import Domain, ToolError, ToolSpec

SERVICE_TOOLS = [fn for fn in TOOLS if fn.__name__ not in ("calculate", "transfer_to_human_agents")]


class KeyReused(Exception):
    """An idempotency key sent again with a different request."""


@dataclass
class Faults:
    """What the service does wrong on purpose (tests and demos of failure handling)."""

    latency_s: float = 0.0  # sleep this long AFTER handling each request (the work is done, the answer late)
    fail_writes: int = 0  # answer writes with this HTTP status (500, 503) without applying them
    tools: list[str] = field(default_factory=list)  # only these tools (empty: all)

    def applies(self, tool: str) -> bool:
        return not self.tools or tool in self.tools


class Backend:
    """The service's state: a home-stay domain of its own, the idempotency records and counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults = Faults()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.domain: Domain = load()
            self.keys: dict[str, tuple[str, Any]] = {}  # key -> (request fingerprint, answer)
            self.applied = 0
            self.replayed = 0
            self.attempts = 0  # write requests received, whatever became of them

    @property
    def specs(self) -> dict[str, ToolSpec]:
        return self.domain.tools

    def is_write(self, tool: str) -> bool:
        return self.domain.is_write(tool)

    def run(self, tool: str, arguments: dict[str, Any], idempotency_key: str | None = None) -> tuple[Any, bool]:
        """(result, replayed). Raises ToolError (the request is refused) or KeyReused."""
        if not self.is_write(tool):
            return self.domain.call(tool, arguments), False
        fingerprint = json.dumps([tool, arguments], sort_keys=True, default=str)
        with self.lock:
            if idempotency_key:
                seen = self.keys.get(idempotency_key)
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise KeyReused(f"Idempotency-Key {idempotency_key} was already used for a different request")
                    self.replayed += 1
                    return seen[1], True
            result = self.domain.call(tool, arguments)
            self.applied += 1
            if idempotency_key:
                self.keys[idempotency_key] = (fingerprint, result)
            return result, False

    def late(self) -> None:
        if self.faults.latency_s > 0:
            time.sleep(self.faults.latency_s)

    def stats(self) -> dict[str, Any]:
        return {"writes_applied": self.applied, "writes_replayed": self.replayed, "write_requests": self.attempts,
                "keys": len(self.keys)}


def status_of(error: ToolError) -> int:
    """404 for an unknown record, 409 for a request the booking rules refuse."""
    return 404 if "not found" in error.message.lower() else 409
