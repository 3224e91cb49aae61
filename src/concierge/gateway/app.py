"""The OpenAI-compatible HTTP gateway over a :class:`~concierge.models.hub.ModelHub`.

Laid out like vLLM's OpenAI server: one package per endpoint family (``chat``, ``embeddings``,
``models``, ``health``, ``shop``, ``support``), each with its ``protocol`` (request and response
models), ``handler`` (the logic) and ``routes`` (the router). Every ``/v1`` call needs a tenant key.
:func:`create_app` wires the shared parts (:class:`~concierge.gateway.state.Gateway`) and the
model routers; the shop and support routers are added by :mod:`concierge.server`.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from concierge.gateway.chat.routes import router as chat_router
from concierge.gateway.completions.routes import router as completions_router
from concierge.gateway.embeddings.routes import router as embeddings_router
from concierge.gateway.errors import error_body
from concierge.gateway.health.routes import router as health_router
from concierge.gateway.http import NO_LABEL, BodyLimit, Call, DirectRoutes, failure
from concierge.gateway.messages.routes import router as messages_router
from concierge.gateway.models.routes import router as models_router
from concierge.gateway.responses.routes import router as responses_router
from concierge.gateway.settings import GatewaySettings
from concierge.gateway.state import Gateway
from concierge.gateway.tokenize.routes import router as tokenize_router
from concierge.models.engine import ServingHub

_ENDPOINTS = {
    "/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses",
    "/v1/messages": "messages", "/tokenize": "tokenize", "/detokenize": "detokenize",
    "/v1/embeddings": "embeddings", "/v1/models": "models",
}


def create_app(hub: ServingHub, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway app over ``hub`` (the caller owns the hub and closes it)."""
    gw = Gateway(hub, settings or GatewaySettings())
    app = FastAPI(title="concierge gateway", lifespan=gw.lifespan, docs_url=None, redoc_url=None,
                  **_telemetry(gw.settings.opentelemetry))
    app.state.gateway = gw
    app.state.metrics = gw.metrics
    app.state.settings = gw.settings
    app.state.authenticator = gw.authn
    app.state.hub = hub
    app.state.limits = gw.limits

    def rejected_body(path: str) -> None:
        gw.metrics.count_request(NO_LABEL, None, _ENDPOINTS.get(path, "other"), 413)

    # Inner first: the API's plain routes are served from a table (DirectRoutes), inside the body limit.
    app.add_middleware(DirectRoutes, routes=lambda: app.router.routes)
    app.add_middleware(BodyLimit, max_bytes=gw.settings.max_body_bytes, on_reject=rejected_body)
    for router in (chat_router, completions_router, responses_router, messages_router, embeddings_router, models_router, tokenize_router,
                   health_router):
        app.include_router(router)
    install_error_handlers(app)
    return app


def _telemetry(enabled: bool) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry switch (FastAPI versions that have one).

    Off unless ``GatewaySettings.opentelemetry``: even with no OpenTelemetry provider configured,
    FastAPI checks for one on every request (environment look-ups), a tenth of a canned chat
    completion's CPU here (docs/benchmarks.md).
    """
    if enabled or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI-style bodies for errors raised outside the handlers (unknown path, bad method ...)."""

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
    async def unexpected(request: Request, exc: Exception) -> Response:
        return failure(request, exc, Call("other"))
