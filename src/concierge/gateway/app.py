"""The OpenAI-compatible HTTP gateway over a :class:`~concierge.models.hub.ModelHub`.

Routes mirror vLLM's OpenAI server: ``/v1/chat/completions`` (JSON or SSE), ``/v1/embeddings``,
``/v1/models``, plus ``/healthz`` and ``/metrics``. Every ``/v1`` call needs a tenant key. Hub
calls block (llama.cpp runs in C), so they run in worker threads and the event loop stays free.
Metering: the hub reports each model call to this app's observer, which feeds Prometheus and
queues a usage row for a background writer; nothing here opens outbound connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.gateway.auth import KeyAuthenticator
from concierge.gateway.errors import (
    GatewayError,
    error_body,
    error_response,
    from_exception,
    is_expected,
    sse_error,
)
from concierge.gateway.limits import Limits, Slot
from concierge.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from concierge.gateway.redact import redact_json
from concierge.gateway.schemas import (
    ChatCompletionRequest,
    EmbeddingRequest,
    check_chat,
    embedding_inputs,
    parse,
)
from concierge.gateway.settings import GatewaySettings
from concierge.models.engine import PENDING, ContextLengthError
from concierge.models.hub import CallRecord, ModelCard
from concierge.tenancy import Principal, UsageRow, UsageWriter

log = logging.getLogger("concierge.gateway")

_END = object()  # end-of-stream marker (StopIteration cannot cross a thread boundary)
_NO_LABEL = "-"
_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/v1/models": "models"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class _Call:
    """What one request has established so far (for metrics and error handling)."""

    endpoint: str
    model: str = _NO_LABEL
    tenant: str | None = None
    tenant_id: int | None = None


class _BodyLimit:
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


class _ClosingStream(StreamingResponse):
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


def _attach_observer(hub: Any, observer: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Hook ``observer`` into the hub; returns the undo. Chains any observer already there."""
    if hasattr(hub, "add_observer"):
        hub.add_observer(observer)
        return lambda: hub.remove_observer(observer) if hasattr(hub, "remove_observer") else None
    previous = getattr(hub, "observer", None)

    def chained(record: CallRecord) -> None:
        if previous is not None:
            previous(record)
        observer(record)

    hub.observer = chained
    return lambda: setattr(hub, "observer", previous)


class _ChunkInbox:
    """Where a stream's chunks reach the event loop from another thread (the pumps below)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._done = threading.Event()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, item)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            self._loop_closed()

    def _loop_closed(self) -> None:
        raise NotImplementedError

    async def next_batch(self) -> list[Any]:
        """Every chunk that is ready (at least one; waits for it)."""
        batch = [await self._inbox.get()]
        while not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return batch

    @property
    def done(self) -> bool:
        return self._done.is_set()


class _StreamPump(_ChunkInbox):
    """Drains an engine's chunk iterator in one thread and hands chunks to the event loop.

    One thread per stream instead of a thread hop per token: on two cores the per-token hop cost
    several percent of generation speed. The iterator is only ever advanced and closed by the pump
    thread (a generator cannot be closed from another thread while it runs).
    """

    def __init__(self, stream: Iterator[dict[str, Any]]) -> None:
        super().__init__()
        self._stream = stream
        self._stopping = threading.Event()
        threading.Thread(target=self._run, name="sse-pump", daemon=True).start()

    def _loop_closed(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        last: Any = _END
        try:
            for chunk in self._stream:
                self._put(chunk)
                if self._stopping.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001  (delivered to the event loop, raised there)
            last = exc
        finally:
            try:
                _close_iterator(self._stream)
            except Exception:  # noqa: BLE001  (closing a failed engine stream must not mask its error)
                log.debug("closing an engine stream failed", exc_info=True)
            self._done.set()
        self._put(last)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the pump to stop after the chunk in flight and wait until it has closed the stream."""
        self._stopping.set()
        self._done.wait(timeout)


class _PushPump(_ChunkInbox):
    """Advances a pushed stream in the engine's own thread and hands chunks to the event loop.

    The engine calls ``ready`` whenever a chunk has arrived; the stream is advanced there until it
    yields ``PENDING``. Compared with ``_StreamPump`` this saves a thread and one thread hand-off
    per token. One lock makes sure only one thread advances (or closes) the stream at a time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()  # re-entered when a failed hand-off stops the stream
        self._stream: Iterator[dict[str, Any]] | None = None

    def _loop_closed(self) -> None:
        self.stop()

    def attach(self, stream: Iterator[dict[str, Any]]) -> None:
        """Start delivering ``stream`` (chunks that arrived before this are waiting in it)."""
        with self._lock:
            self._stream = stream
        self.ready()

    def ready(self) -> None:
        if not self._lock.acquire(timeout=30):  # pragma: no cover - a consumer stuck for 30 s
            log.error("a pushed stream stayed locked for 30 s")
            return
        try:
            stream = self._stream
            if stream is None or self._done.is_set():
                return
            while True:
                try:
                    chunk = next(stream)
                except StopIteration:
                    last: Any = _END
                    break
                except BaseException as exc:  # noqa: BLE001  (delivered to the event loop, raised there)
                    last = exc
                    break
                if chunk is PENDING:
                    return
                self._put(chunk)
            self._done.set()
            _close_iterator(stream)
        finally:
            self._lock.release()
        self._put(last)

    @property
    def attached(self) -> bool:
        return self._stream is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Close the stream (stops generation) unless it has ended; waits for a delivery in progress."""
        if not self._lock.acquire(timeout=timeout):  # pragma: no cover
            return
        try:
            if not self._done.is_set():
                self._done.set()
                if self._stream is not None:
                    _close_iterator(self._stream)
        finally:
            self._lock.release()


def _iterator(stream: Any) -> Iterator[dict[str, Any]]:
    return stream if hasattr(stream, "__next__") else iter(stream)


def _close_iterator(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _card_dict(card: ModelCard, created: int, *, operator: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": card.alias,
        "object": "model",
        "created": created,
        "owned_by": card.owned_by,
        "kind": card.kind,
        "engine": card.engine,
        "context_length": card.context_length,
        "max_model_len": card.context_length,  # vLLM's name for the same figure
        "catalogue_id": card.catalogue_id,
        "in_house": card.in_house,
    }
    if operator:
        data["source"] = card.source  # paths and upstream URLs are for operators only
    return data


def create_app(hub: Any, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway app over ``hub`` (the caller owns the hub and closes it)."""
    settings = settings or GatewaySettings()
    metrics = GatewayMetrics()
    authn = KeyAuthenticator(ttl_s=settings.key_cache_ttl_s, db_url=settings.database_url)
    started = int(time.time())
    limiter = anyio.CapacityLimiter(settings.max_concurrent_calls)
    limits = Limits(hub, settings)  # per-alias queues and tenant budgets (429 when full)
    warming = threading.local()  # marks warm-up calls so they are not metered as tenant usage
    state: dict[str, Any] = {"writer": None, "warm_up": "off"}

    def on_call(record: CallRecord) -> None:
        if getattr(warming, "active", False):
            return
        limits.observe(record)
        metrics.observe_call(record)
        row = UsageRow(
            tenant=record.tenant,
            model=record.alias,
            endpoint=record.endpoint,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            latency_ms=record.latency_s * 1000.0,
            status=record.status,
        )
        writer: UsageWriter | None = state["writer"]
        if writer is not None:
            writer.submit(row)
        else:  # app used without its lifespan: write directly rather than lose the row
            from concierge.tenancy import record_usage

            record_usage(row, db_url=settings.database_url)

    def warm_up() -> None:
        state["warm_up"] = "running"
        warming.active = True
        failed = False
        for card in hub.models():
            if card.engine == "openai-upstream":
                continue  # nothing to load here; a test call would cost the upstream a request
            try:
                if hasattr(hub, "warm_up"):
                    hub.warm_up(card.alias)
                elif card.kind == "chat":
                    hub.chat(card.alias, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
                else:
                    hub.embed(card.alias, ["warm up"])
                log.info("warmed up %s", card.alias)
            except Exception as exc:  # noqa: BLE001  (a broken alias must not stop the server)
                failed = True
                log.warning("warm-up of %s failed: %s", card.alias, type(exc).__name__)
        state["warm_up"] = "failed" if failed else "done"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["writer"] = _app.state.usage_writer = UsageWriter(db_url=settings.database_url)
        detach = _attach_observer(hub, on_call)
        warmer = None
        if settings.warm_up:
            state["warm_up"] = "pending"
            warmer = threading.Thread(target=warm_up, name="concierge-warm-up", daemon=True)
            warmer.start()
        refresher = asyncio.get_running_loop().create_task(authn.refresh_forever())
        try:
            yield
        finally:
            refresher.cancel()
            if warmer is not None:
                # Let a model load finish: closing the hub under a running llama.cpp call aborts.
                await anyio.to_thread.run_sync(warmer.join, 60.0)
            detach()
            state["writer"].close()  # flushes queued usage rows before the process exits

    app = FastAPI(title="concierge gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.authenticator = authn
    app.state.hub = hub
    app.state.limits = limits

    def rejected_body(path: str) -> None:
        metrics.count_request(_NO_LABEL, None, _ENDPOINTS.get(path, "other"), 413)

    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes, on_reject=rejected_body)

    # ---- helpers -------------------------------------------------------------------------

    def log_unexpected(exc: BaseException, endpoint: str) -> str:
        ref = secrets.token_hex(4)
        # Type and code location only: the message may quote prompts (keys never reach here).
        log.error(
            "unexpected %s in %s (ref %s)\n%s",
            type(exc).__name__,
            endpoint,
            ref,
            # Locations only, no source lines or locals: nothing from the request can leak in.
            "\n".join(
                f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)
            ),
        )
        return ref

    def fail(exc: BaseException, call: _Call) -> JSONResponse:
        if isinstance(exc, ContextLengthError):
            exc = _with_limit(exc, hub, call.model)
        if is_expected(exc):
            response = error_response(exc)
        else:
            ref = log_unexpected(exc, call.endpoint)
            response = JSONResponse(
                error_body(
                    f"The server had an error while processing your request (ref {ref}).", "server_error"
                ),
                status_code=500,
            )
        metrics.count_request(call.model, call.tenant, call.endpoint, response.status_code)
        return response

    def principal_into(call: _Call, principal: Principal) -> None:
        call.tenant = principal.tenant
        call.tenant_id = principal.tenant_id

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise GatewayError(400, "The request body is empty; send a JSON object.")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "body is not UTF-8"
            raise GatewayError(400, f"Malformed JSON body: {detail}.") from None

    def card_for(alias: str, kind: str, call: _Call) -> ModelCard:
        card = hub.card(alias)  # ModelNotFoundError -> 404
        call.model = card.alias
        if card.kind != kind:
            raise GatewayError(
                400,
                f"Model {alias!r} serves {card.kind}, not {kind}.",
                param="model",
                code="model_not_supported",
            )
        return card

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def log_exchange(call: _Call, request_body: Any, response_body: Any) -> None:
        writer: UsageWriter | None = state["writer"]
        if settings.log_requests and writer is not None:
            writer.submit_log(
                call.tenant_id, call.model, redact_json(request_body), redact_json(response_body)
            )

    # ---- routes --------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        call = _Call("chat")
        try:
            principal_into(call, await authn.require(request))
            body = await json_body(request)
            req: ChatCompletionRequest = parse(ChatCompletionRequest, body)
            check_chat(req)
            card = card_for(req.model, "chat", call)
            payload = dict(body)
            payload["model"] = card.alias
            if req.max_tokens is None and req.max_completion_tokens is not None:
                payload["max_tokens"] = req.max_completion_tokens
            slot = await limits.admit(call.tenant, card.alias)
            try:
                if req.stream:
                    return await stream_chat(call, body, payload, req, slot)
                payload["stream"] = False
                result = await in_thread(lambda: hub.chat(card.alias, payload, tenant=call.tenant))
            finally:
                slot.release_unless_handed_over()
            metrics.count_request(call.model, call.tenant, call.endpoint, 200)
            log_exchange(call, body, result)
            return JSONResponse(result)
        except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI error body)
            return fail(exc, call)

    async def stream_chat(
        call: _Call, body: dict[str, Any], payload: dict[str, Any], req: ChatCompletionRequest, slot: Slot
    ) -> Response:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        payload["stream"] = True
        # Always ask for usage (metering needs it); it is dropped below if the client did not ask.
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        # Open the stream in a worker thread (the engine may load on first use), then start the pump
        # at once: its thread starts while the engine reads the prompt, not after the first token.
        # The first chunk is awaited before answering, so errors found up front (context length,
        # engine down) get their real HTTP status.
        opened: list[Iterator[dict[str, Any]]] = []
        pushed = _PushPump() if hasattr(hub, "open_stream") else None

        def open_stream() -> None:
            if pushed is None:
                opened.append(_iterator(hub.stream_chat(call.model, payload, tenant=call.tenant)))
                return
            stream, is_pushed = hub.open_stream(call.model, payload, tenant=call.tenant, on_ready=pushed.ready)
            opened.append(_iterator(stream))
            if is_pushed:
                pushed.attach(opened[0])

        try:
            await in_thread(open_stream)
        except BaseException:
            if opened:  # cancelled after the engine started: free its slot
                close = pushed.stop if pushed is not None and pushed.attached else partial(_close_iterator, opened[0])
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)
            raise
        # Engines that cannot push get a thread of their own that pulls their chunks.
        pump: _PushPump | _StreamPump = (
            pushed if pushed is not None and pushed.attached else _StreamPump(opened[0])
        )
        try:
            pending = await pump.next_batch()
            if pending and isinstance(pending[0], BaseException):
                raise pending[0]
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pump.stop)
            raise

        async def events() -> AsyncIterator[str]:
            status = 499  # stays so if the client goes away before the end
            collected: list[dict[str, Any]] = []
            batch = pending
            try:
                while True:
                    parts: list[str] = []
                    ended = False
                    failure: BaseException | None = None
                    for chunk in batch:
                        if chunk is _END:
                            ended = True
                            break
                        if isinstance(chunk, BaseException):
                            failure = chunk
                            break
                        out = _client_chunk(chunk, include_usage)
                        if out is not None:
                            if settings.log_requests:
                                collected.append(out)
                            parts.append(f"data: {json.dumps(out, ensure_ascii=False)}\n\n")
                    if ended:
                        parts.append("data: [DONE]\n\n")
                    if parts:
                        # Chunks that arrived together go out in one write (fewer syscalls per token).
                        yield "".join(parts)
                    if failure is not None:
                        raise failure
                    if ended:
                        break
                    batch = await pump.next_batch()
                status = 200
            except Exception as exc:  # noqa: BLE001  (reported in-band: the 200 header is already sent)
                status = from_exception(exc)[0]
                if not is_expected(exc):
                    log_unexpected(exc, call.endpoint)
                yield sse_error(exc)
                yield "data: [DONE]\n\n"
            finally:
                if not pump.done:  # a finished pump has closed the stream already
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(pump.stop)
                metrics.count_request(call.model, call.tenant, call.endpoint, status)
                if settings.log_requests:
                    log_exchange(call, body, {"stream": _merge_stream(collected), "status": status})

        response = _ClosingStream(events(), media_type="text/event-stream", headers=_SSE_HEADERS)
        response.on_close = slot.hand_over()  # the slot is held until the stream closes
        return response

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        call = _Call("embeddings")
        try:
            principal_into(call, await authn.require(request))
            body = await json_body(request)
            req: EmbeddingRequest = parse(EmbeddingRequest, body)
            texts = embedding_inputs(req)
            card = card_for(req.model, "embeddings", call)
            slot = await limits.admit(call.tenant, card.alias)
            try:
                vectors, tokens = await in_thread(lambda: hub.embed(card.alias, texts, tenant=call.tenant))
            finally:
                slot.release()
            dim = len(vectors[0]) if vectors else 0
            if req.dimensions is not None and req.dimensions != dim:
                raise GatewayError(
                    400,
                    f"Model {card.alias!r} produces {dim} dimensions; it cannot give {req.dimensions}.",
                    param="dimensions",
                )
            data = [
                {"object": "embedding", "index": i, "embedding": _encode(vec, req.encoding_format)}
                for i, vec in enumerate(vectors)
            ]
            result = {
                "object": "list",
                "data": data,
                "model": card.alias,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            metrics.count_request(call.model, call.tenant, call.endpoint, 200)
            log_exchange(call, body, {"data": f"{len(vectors)} vectors of {dim}", "usage": result["usage"]})
            return JSONResponse(result)
        except Exception as exc:  # noqa: BLE001
            return fail(exc, call)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        call = _Call("models")
        try:
            principal = await authn.require(request)
            principal_into(call, principal)
            operator = principal.scope == "operator"
            data = [_card_dict(c, started, operator=operator) for c in hub.models()]
            metrics.count_request(call.model, call.tenant, call.endpoint, 200)
            return JSONResponse({"object": "list", "data": data})
        except Exception as exc:  # noqa: BLE001
            return fail(exc, call)

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request) -> Response:
        call = _Call("models")
        try:
            principal = await authn.require(request)
            principal_into(call, principal)
            card = hub.card(model)
            call.model = card.alias
            metrics.count_request(call.model, call.tenant, call.endpoint, 200)
            return JSONResponse(_card_dict(card, started, operator=principal.scope == "operator"))
        except Exception as exc:  # noqa: BLE001
            return fail(exc, call)

    @app.get("/healthz")
    async def healthz() -> Response:
        # ModelHub.loaded() lists aliases whose engine is built; other hubs may not say.
        loaded = getattr(hub, "loaded", None)
        loaded_set = set(loaded()) if callable(loaded) else None
        models = [
            {
                "alias": c.alias,
                "kind": c.kind,
                "engine": c.engine,
                "loaded": (c.alias in loaded_set) if loaded_set is not None else None,
            }
            for c in hub.models()
        ]
        return JSONResponse({"status": "ok", "warm_up": state["warm_up"], "models": models})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        try:
            if not settings.metrics_public:
                await authn.require(request, scope="operator")
            return Response(metrics.render(), media_type=CONTENT_TYPE)
        except Exception as exc:  # noqa: BLE001
            return error_response(exc)

    # ---- errors raised outside the routes ------------------------------------------------

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(str(exc.detail), error_type), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(error_body(first["msg"], "invalid_request_error", param), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        return fail(exc, _Call("other"))

    return app


def _with_limit(exc: ContextLengthError, hub: Any, alias: str) -> ContextLengthError:
    """Make sure the 400 names the context limit, whatever the engine's wording."""
    try:
        limit = hub.card(alias).context_length
    except Exception:  # noqa: BLE001
        limit = None
    if limit is None or str(limit) in exc.message:
        return exc
    return ContextLengthError(
        f"{exc.message} (model {alias!r} has a context of {limit} tokens)", param=exc.param
    )


def _client_chunk(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any] | None:
    """The chunk as the client asked for it: without usage unless ``include_usage``."""
    if include_usage:
        return chunk
    if not chunk.get("choices") and chunk.get("usage") is not None:
        return None  # the trailing usage-only chunk
    if "usage" in chunk:
        return {k: v for k, v in chunk.items() if k != "usage"}
    return chunk


def _merge_stream(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Content, tool calls and usage of a stream, for the request log."""
    text: list[str] = []
    tools: list[Any] = []
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(delta["content"])
            if delta.get("tool_calls"):
                tools.extend(delta["tool_calls"])
    return {"content": "".join(text), "tool_calls": tools, "usage": usage}


def _encode(vector: list[float], encoding: str | None) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64 form: little-endian float32 bytes (what the official client decodes).
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
