"""Routes of the models family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.http import direct
from concierge.gateway.models import handler

router = APIRouter()


@router.get("/v1/models")
@direct
async def list_models(request: Request) -> Response:
    return await handler.list_models(request)


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request) -> Response:
    return await handler.get_model(request, model)
