"""Routes of the Anthropic Messages family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.http import direct
from concierge.gateway.messages import handler

router = APIRouter()


@router.post("/v1/messages")
@direct
async def messages(request: Request) -> Response:
    return await handler.messages(request)


@router.post("/v1/messages/count_tokens")
@direct
async def count_tokens(request: Request) -> Response:
    return await handler.count_tokens(request)
