"""Route of the chat completions family."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.chat import handler
from concierge.gateway.http import direct

router = APIRouter()


@router.post("/v1/chat/completions")
@direct
async def chat_completions(request: Request) -> Response:
    return await handler.chat_completions(request)
