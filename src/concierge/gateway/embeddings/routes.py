"""Route of the embeddings family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.embeddings import handler

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await handler.embeddings(request)
