"""Route of the text completions family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.completions import handler
from concierge.gateway.http import direct

router = APIRouter()


@router.post("/v1/completions")
@direct
async def completions(request: Request) -> Response:
    return await handler.completions(request)
