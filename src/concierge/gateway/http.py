"""HTTP helpers every endpoint family shares: the caller's key, its place in the model's queue, the
JSON body, worker threads, error responses and metrics, SSE writing.

Handlers find the gateway's parts on ``request.app.state`` (set by :func:`concierge.gateway.app.create_app`);
routers mounted on an app without them (a bare FastAPI app in a test) still work: no queue, no metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import secrets
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.gateway.errors import GatewayError, error_body, error_response, is_expected
from concierge.gateway.limits import Slot
from concierge.tenancy import Principal

log = logging.getLogger("concierge.gateway")

NO_LABEL = "-"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DONE = "data: [DONE]\n\n"
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "NamedToolChoice", "TextPart", "ImagePart"}


@dataclass
class Call:
    """What one request has established so far (for metrics and error handling)."""

    endpoint: str
    model: str = NO_LABEL
    tenant: str | None = None
    tenant_id: int | None = None


# ---- request ---------------------------------------------------------------------------------


async def authenticate(request: Request, call: Call | None = None, *, scope: str = "api") -> Principal:
    """The caller's tenant, by the gateway's authenticator (401 without a valid key); noted on ``call``."""
    principal = await request.app.state.authenticator.require(request, scope=scope)
    if call is not None:
        call.tenant = principal.tenant
        call.tenant_id = principal.tenant_id
    return principal


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise GatewayError(400, "The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # orjson's error is a JSONDecodeError
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "body is not UTF-8"
        raise GatewayError(400, f"Malformed JSON body: {detail}.") from None
    except RecursionError:
        raise GatewayError(400, "Malformed JSON body: nested too deeply.") from None


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data``; the first problem becomes a 400 naming the field (``param``)."""
    if not isinstance(data, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A field off the allow-list is the clearest problem to report: name it first.
        # Otherwise the deepest: of a union's failed branches, the one that got furthest says most.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), None) or max(
            errors, key=lambda e: len(e["loc"])
        )
        # Drop pydantic's union branch names ("str", "list[...]") so param is the JSON path.
        loc = [str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES))]
        param = ".".join(loc) or None
        if first["type"] == "extra_forbidden":
            raise GatewayError(
                400,
                f"Unrecognized request field {param!r}: this endpoint does not accept it "
                "(see docs/api.md for the accepted fields).",
                param=param,
                code="unsupported_parameter",
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        raise GatewayError(400, f"{param}: {message}" if param else message, param=param) from None


def renamed(exc: GatewayError, renames: list[tuple[str, str]]) -> GatewayError:
    """``exc`` with its ``param`` (and message) in another family's names: a translated request's
    checks speak chat (``tools.0.function.parameters``), the caller sent ``tools.0.input_schema``."""
    param = exc.param
    if param is None:
        return exc
    for pattern, replacement in renames:
        param = re.sub(pattern, replacement, param)
    if param == exc.param:
        return exc
    message = exc.message.replace(exc.param, param)
    return GatewayError(exc.status, message, error_type=exc.error_type, param=param, code=exc.code)


def unsupported_value(param: str, value: Any, accepted: str) -> GatewayError:
    """The 400 for an OpenAI field we accept only with the values we can honour."""
    return GatewayError(
        400,
        f"{param}={value!r} is not supported by this server ({accepted}).",
        param=param,
        code="unsupported_value",
    )


def check_openai_options(
    *, store: bool | None = None, service_tier: str | None = None, modalities: list[str] | None = None,
    reasoning_effort: Any = None, store_param: str = "store",
) -> None:
    """OpenAI options accepted only where they change nothing we cannot honour (docs/api.md)."""
    if store:
        raise unsupported_value(store_param, store, "nothing is stored: send store=false or omit it")
    if service_tier not in (None, "auto", "default"):
        raise unsupported_value("service_tier", service_tier, "one tier: 'auto' or 'default'")
    if modalities is not None and any(m != "text" for m in modalities):
        raise unsupported_value("modalities", modalities, "text output only")
    if reasoning_effort is not None:
        raise unsupported_value(
            "reasoning_effort", reasoning_effort, "the open models here take no reasoning budget; omit it"
        )


def text_length(value: Any) -> int:
    """Characters of prompt text in a message content, tool list or any JSON value."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_length(v) for v in value)
    if isinstance(value, dict):
        return sum(text_length(v) for v in value.values())
    return len(str(value))


def ceilings(
    settings: Any, max_tokens: int | None, prompt_chars: int, *, param: str = "max_tokens",
    prompt_param: str = "messages",
) -> int | None:
    """The deployment's ceilings: 400 over ``max_prompt_chars`` or ``max_tokens_ceiling``.

    Returns the ``max_tokens`` to send: the client's, or the ceiling where the client sent none
    (so "no limit" never means "up to the context").
    """
    limit = getattr(settings, "max_prompt_chars", None)
    if limit is not None and prompt_chars > limit:
        raise GatewayError(
            400,
            f"The prompt has {prompt_chars} characters; this deployment's limit (max_prompt_chars) "
            f"is {limit}.",
            param=prompt_param,
            code="prompt_too_long",
        )
    ceiling = getattr(settings, "max_tokens_ceiling", None)
    if ceiling is None:
        return max_tokens
    if max_tokens is not None and max_tokens > ceiling:
        raise GatewayError(
            400,
            f"{param}={max_tokens} is over this deployment's limit (max_tokens_ceiling) of {ceiling}.",
            param=param,
            code="max_tokens_too_large",
        )
    return ceiling if max_tokens is None else max_tokens


async def admit(request: Request, tenant: str | None, alias: str) -> Slot:
    """A place in ``alias``'s queue from the gateway's limits (a no-op slot where none are mounted)."""
    limits = getattr(request.app.state, "limits", None)
    return await limits.admit(tenant, alias) if limits is not None else Slot(None)


class Workers:
    """Worker threads for blocking calls: at most ``size`` run at once, the rest wait their turn (FIFO).

    A ``concurrent.futures`` pool rather than ``anyio.to_thread``: the hand-off is a C queue and
    one wake-up instead of a capacity limiter, a condition variable and cancellation checkpoints
    (15 instead of 40 µs of CPU per call at 16 concurrent here; docs/benchmarks.md).
    Like ``anyio.to_thread.run_sync``: the call sees the caller's context variables, and a caller
    cancelled while its call runs waits for the call to end (it may hold a model slot) before the
    cancellation goes on; a call still queued is dropped.
    """

    def __init__(self, size: int, name: str = "concierge-worker") -> None:
        self.size = max(1, size)
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
        return pool

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        context = contextvars.copy_context()
        future = self._executor().submit(context.run, fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():  # running: let it finish first
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([asyncio.wrap_future(future)])
            raise

    def close(self) -> None:
        """Let the threads go once idle (a later call starts a new pool); running calls finish."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


_DEFAULT_WORKERS = Workers(40, "concierge-io")  # as many as anyio's default limiter


async def in_thread(fn: Callable[..., Any], *args: Any, limiter: Workers | None = None) -> Any:
    """Run blocking work (model calls, database) in a worker thread; the event loop stays free.

    ``limiter``: the pool to run it in (the gateway's, for model calls); else a shared one of 40.
    """
    return await (limiter or _DEFAULT_WORKERS).run(fn, *args)


# ---- response --------------------------------------------------------------------------------


def count(request: Request, call: Call, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_request(call.model, call.tenant, call.endpoint, status)


def log_unexpected(exc: BaseException, endpoint: str) -> str:
    """Log an unexpected error by type and code location (never its text); returns the ref shown to the caller."""
    ref = secrets.token_hex(4)
    # Locations only, no source lines or locals: the message may quote prompts (keys never reach here).
    log.error(
        "unexpected %s in %s (ref %s)\n%s",
        type(exc).__name__,
        endpoint,
        ref,
        "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)),
    )
    return ref


def failure(request: Request, exc: BaseException, call: Call) -> JSONResponse:
    """The OpenAI-style error response for any exception (counted in the metrics)."""
    if is_expected(exc):  # errors that carry their status: ours, the core's, models' with a known cause
        response = error_response(exc)
    else:
        ref = log_unexpected(exc, call.endpoint)
        response = JSONResponse(
            error_body(f"The server had an error while processing your request (ref {ref}).", "server_error"),
            status_code=500,
        )
    count(request, call, response.status_code)
    return response


def dumps(value: Any) -> str:
    """Compact JSON text (orjson: several times faster than ``json.dumps``, which remains the
    fallback for what orjson refuses, such as integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JSONBody(JSONResponse):
    """A JSON response rendered by orjson (see :func:`dumps`)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=_ORJSON_OPTIONS)
        except TypeError:
            return super().render(content)


def sse(event: Any) -> str:
    """One server-sent event carrying ``event`` as JSON."""
    return f"data: {dumps(event)}\n\n"


class ClosingStream(StreamingResponse):
    """A StreamingResponse that always closes its body iterator (client gone or not)."""

    on_close: Callable[[], None] | None = None  # e.g. frees the model slot the stream holds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if self.on_close is not None:
                self.on_close()


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length and by counting what arrives.

    The (small) body is buffered here and replayed to the app, so the limit holds for chunked
    uploads too. An oversized body is drained (up to a cap) before answering, so the client reads
    a clean 413 instead of a reset connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject
        self.drain_cap = max(8 * 1024 * 1024, 4 * max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            more = message.get("more_body", False)
            if total > self.max_bytes:
                too_big = True
            if too_big:
                if total > self.drain_cap:
                    break
                continue
            chunks.append(body)
        if too_big:
            self.on_reject(scope.get("path", ""))
            response = JSONResponse(
                error_body(
                    f"Request body too large: the limit is {self.max_bytes} bytes.",
                    "invalid_request_error",
                    code="request_too_large",
                ),
                status_code=413,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        payload = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()  # later calls wait for http.disconnect, as streaming needs

        await self.app(scope, replay, send)


def direct(endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """Mark a route's endpoint as plain: it takes the ``Request`` alone (no dependencies, no
    parameters for FastAPI to solve) and turns every error into a response itself, so
    :class:`DirectRoutes` may call it without FastAPI's routing machinery. Put it under the
    ``@router.post(...)`` line; do not include its router with dependencies."""
    endpoint.__concierge_direct__ = True  # type: ignore[attr-defined]
    return endpoint


class DirectRoutes:
    """Serve requests for :func:`direct` endpoints straight from a table, past FastAPI's routing.

    For the gateway's endpoints the router, the per-route exception middleware, the exit stacks
    and the dependency solver do nothing but cost CPU: about a quarter of a canned chat
    completion's (docs/benchmarks.md). The table is learnt from the router itself: after a
    request went through the app, the endpoint the router chose (``scope["endpoint"]``) is
    recorded for that method and path when it is marked :func:`direct` and the path has no
    parameters; later requests for that method and path await it directly. So the table never
    changes which endpoint serves a request, and everything else (other paths, other methods and
    their 405, a ``root_path``) goes through the app as before. The routes stay registered, so
    the OpenAPI document is unchanged. Routes added to the app empty the table.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self.routes = routes
        self._table: dict[tuple[str, str], Callable[[Request], Any]] = {}
        self._routes_seen = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        routes = len(self.routes())
        if routes != self._routes_seen:
            self._table.clear()
            self._routes_seen = routes
        key = (scope["method"], scope["path"])
        endpoint = self._table.get(key)
        if endpoint is not None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
        chosen = scope.get("endpoint")
        if getattr(chosen, "__concierge_direct__", False) and not scope.get("path_params"):
            self._table[key] = chosen
