"""Route of the text completions family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.completions import handler

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await handler.completions(request)
