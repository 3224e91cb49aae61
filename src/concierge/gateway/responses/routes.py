"""Routes of the Responses family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.http import direct
from concierge.gateway.responses import handler

router = APIRouter()


@router.post("/v1/responses")
@direct
async def create(request: Request) -> Response:
    return await handler.create(request)


@router.get("/v1/responses/{response_id}")
async def retrieve(request: Request, response_id: str) -> Response:
    return await handler.retrieve(request, response_id)
