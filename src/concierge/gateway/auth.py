"""Bearer-key authentication with a short cache.

A key look-up is one indexed SQLite query (about 0.5 ms), run in a worker thread so the event
loop never waits on the database. Successful look-ups are cached for ``ttl_s`` (default 1 s),
which bounds how long a revoked key keeps working; failures are never cached.
"""

from __future__ import annotations

import threading
import time

import anyio.to_thread
from starlette.requests import Request

from concierge import tenancy
from concierge.gateway.errors import GatewayError
from concierge.tenancy import Principal

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401, message, error_type="invalid_request_error", code="invalid_api_key", headers=_CHALLENGE
    )


class KeyAuthenticator:
    def __init__(self, *, ttl_s: float = 1.0, db_url: str | None = None, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.db_url = db_url
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def _cached(self, key_hash: str) -> Principal | None:
        with self._lock:
            hit = self._cache.get(key_hash)
            if hit is None:
                return None
            if time.monotonic() - hit[0] > self.ttl_s:
                del self._cache[key_hash]
                return None
            return hit[1]

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    async def principal(self, key: str) -> Principal | None:
        # Cache by hash so raw keys are not kept in memory longer than the request.
        key_hash = tenancy.hash_key(key)
        found = self._cached(key_hash)
        if found is not None:
            return found
        found = await anyio.to_thread.run_sync(lambda: tenancy.authenticate(key, db_url=self.db_url))
        if found is not None and self.ttl_s > 0:
            with self._lock:
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
                self._cache[key_hash] = (time.monotonic(), found)
        return found

    async def require(self, request: Request, *, scope: str = "api") -> Principal:
        """The caller's principal, or a 401 (403 when an api key asks for an operator route)."""
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if not header:
            raise unauthorized("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        if kind.lower() != "bearer" or not key.strip():
            raise unauthorized("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
        principal = await self.principal(key.strip())
        if principal is None:
            raise unauthorized("Incorrect API key provided (unknown or revoked).")
        if scope == "operator" and principal.scope != "operator":
            raise GatewayError(403, "This route needs an operator key.", error_type="permission_error")
        request.state.principal = principal
        return principal
