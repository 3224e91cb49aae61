"""Engine calls the hub has no method for yet (text completions, tokenize), made the least
invasive way: through the engine the hub serves the alias with, over that engine's own HTTP API.

* llama.cpp (in-process): its embedded llama-server, ``engine.http_address`` with
  ``engine.http_api_key`` (``/v1/completions``, ``/tokenize``, ``/detokenize``).
* OpenAI-compatible upstreams (vLLM): ``{base_url}/completions``; vLLM's ``/tokenize`` and
  ``/detokenize`` at the server root.

Handlers prefer the hub's own methods (``complete``, ``stream_complete``, ``tokenize``,
``detokenize``) where a hub has them; this module is the stop-gap until ``ModelHub`` does, and
meters its calls itself (the hub cannot see them).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from concierge.gateway.errors import GatewayError
from concierge.models.engine import (
    BadRequestError,
    ContextLengthError,
    EngineUnavailableError,
    ModelError,
)
from concierge.models.hub import CallRecord


@dataclass
class EngineEndpoint:
    base: str  # where /v1/completions lives, without the trailing /v1
    headers: dict[str, str]
    model: str | None  # the upstream's model name (None: llama.cpp, which serves one)
    kind: str


def endpoint_for(hub: Any, alias: str) -> EngineEndpoint:
    """The HTTP endpoint of ``alias``'s engine; a 400 ``model_not_supported`` for engines without one."""
    engine = hub.engine(alias) if hasattr(hub, "engine") else None
    address = getattr(engine, "http_address", None)
    if engine is not None and address:
        return EngineEndpoint(
            str(address).rstrip("/"), {"Authorization": f"Bearer {engine.http_api_key}"}, None, "llama.cpp"
        )
    base_url = getattr(engine, "base_url", None)
    if engine is not None and base_url:
        client = getattr(engine, "_client", None)
        auth = client.headers.get("Authorization") if client is not None else None
        root = str(base_url).rstrip("/").removesuffix("/v1")
        return EngineEndpoint(root, {"Authorization": auth} if auth else {}, engine.model, "openai-upstream")
    # As OpenAI answers a model that does not serve an endpoint (and as card_for does for kinds).
    raise GatewayError(
        400,
        f"Model {alias!r} is not supported on this endpoint (its engine has no such call).",
        param="model",
        code="model_not_supported",
    )


def _error(status: int, content: bytes, where: str) -> ModelError:
    try:
        payload = json.loads(content)
        err = payload.get("error", payload) if isinstance(payload, dict) else {"message": str(payload)}
        message = str(err.get("message") or err.get("detail") or "engine error") if isinstance(err, dict) else str(err)
        kind = err.get("type") if isinstance(err, dict) else None
    except ValueError:
        message, kind = content.decode("utf-8", "replace")[:500], None
    if kind == "exceed_context_size_error" or "context" in message.lower() and status == 400:
        return ContextLengthError(f"the prompt does not fit the model's context: {message}", param="prompt")
    if status >= 500 or status == 429:
        return EngineUnavailableError(f"{where} returned HTTP {status}")
    return BadRequestError(message)


# One client for every engine call: a client per call built its own SSL context and connection
# pool, which cost about 20 ms of a 1-token /tokenize (docs/benchmarks.md). No keep-alive: llama.cpp's
# listener drops idle connections, which a pool would then reuse and fail on; a new loopback
# connection per call costs a fraction of a millisecond.
@functools.cache
def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def post(ep: EngineEndpoint, path: str, body: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    if ep.model is not None and "model" in body:
        body = {**body, "model": ep.model}
    try:
        response = _client().post(ep.base + path, json=body, headers=ep.headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise EngineUnavailableError(f"{ep.kind} engine is unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        raise _error(response.status_code, response.content, f"{ep.kind} engine")
    return response.json()


def stream(ep: EngineEndpoint, path: str, body: dict[str, Any], timeout: float = 600.0) -> Iterator[dict[str, Any]]:
    """The engine's SSE chunks as dicts (closing the generator closes the connection)."""
    if ep.model is not None:
        body = {**body, "model": ep.model}
    try:
        with _client().stream("POST", ep.base + path, json=body, headers=ep.headers, timeout=timeout) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, response.read(), f"{ep.kind} engine")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if isinstance(chunk, dict) and "error" in chunk:
                    raise _error(500, data.encode(), f"{ep.kind} engine")
                yield chunk
    except httpx.HTTPError as exc:
        raise EngineUnavailableError(f"{ep.kind} engine is unreachable: {type(exc).__name__}") from exc


def metered(
    record: Callable[[CallRecord], None], alias: str, endpoint: str, tenant: str | None,
    fn: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``fn`` and report its usage (or failure) as the hub would."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:
        record(CallRecord(alias, endpoint, tenant, 0, 0, None, time.perf_counter() - start,
                          getattr(exc, "status_code", 500), type(exc).__name__, False))
        raise
    usage = result.get("usage") or {}
    record(CallRecord(alias, endpoint, tenant, int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0), None, time.perf_counter() - start, 200, None, False))
    return result


def metered_stream(
    record: Callable[[CallRecord], None], alias: str, endpoint: str, tenant: str | None,
    chunks: Iterator[dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    start = time.perf_counter()
    status, ttft, usage = 200, None, {}
    try:
        for chunk in chunks:
            if ttft is None:
                ttft = time.perf_counter() - start
            usage = chunk.get("usage") or usage
            yield chunk
    except GeneratorExit:
        status = 499
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", 500)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        record(CallRecord(alias, endpoint, tenant, int(usage.get("prompt_tokens") or 0),
                          int(usage.get("completion_tokens") or 0), ttft, time.perf_counter() - start,
                          status, None, True))
