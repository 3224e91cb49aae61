"""Routes of the health and metrics family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.health import handler

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    return await handler.healthz(request)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    return await handler.prometheus(request)
