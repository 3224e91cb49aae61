"""``/healthz`` (no key: what is served and loaded) and ``/metrics`` (Prometheus; operator key unless public)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from concierge.gateway.errors import error_response
from concierge.gateway.health.protocol import Health, ModelHealth
from concierge.gateway.http import authenticate
from concierge.gateway.metrics import CONTENT_TYPE
from concierge.gateway.state import gateway


async def healthz(request: Request) -> Response:
    gw = gateway(request)
    # ModelHub.loaded() lists aliases whose engine is built; other hubs may not say.
    loaded = getattr(gw.hub, "loaded", None)
    loaded_set = set(loaded()) if callable(loaded) else None
    health = Health(
        warm_up=gw.warm_up_status,
        models=[
            ModelHealth(
                alias=c.alias, kind=c.kind, engine=c.engine,
                loaded=(c.alias in loaded_set) if loaded_set is not None else None,
            )
            for c in gw.hub.models()
        ],
    )
    return JSONResponse(health.model_dump())


async def prometheus(request: Request) -> Response:
    gw = gateway(request)
    try:
        if not gw.settings.metrics_public:
            await authenticate(request, scope="operator")
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)
    except Exception as exc:  # noqa: BLE001
        return error_response(exc)
