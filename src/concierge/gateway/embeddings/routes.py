"""Route of the embeddings family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.embeddings import handler
from concierge.gateway.http import direct

router = APIRouter()


@router.post("/v1/embeddings")
@direct
async def embeddings(request: Request) -> Response:
    return await handler.embeddings(request)
