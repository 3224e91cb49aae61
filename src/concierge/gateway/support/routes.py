"""Route of the support family (mount with ``app.include_router(support_router(session))``).

The handler reads the raw body (every problem is an OpenAI-style 400), so the request model is
declared with ``openapi_extra``: the app's OpenAPI document describes the body all the same.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.http import direct
from concierge.gateway.support import handler
from concierge.gateway.support.protocol import SupportChatRequest, SupportTurnBody
from concierge.support.session import SupportSession


def support_router(support: SupportSession, *, model_alias: str | None = None) -> APIRouter:
    """The support API over ``support``; ``model_alias`` labels metrics and queues (default: the session's)."""
    alias = model_alias or support.alias
    router = APIRouter()
    body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": SupportChatRequest.model_json_schema()}}}}

    @router.post("/v1/support/chat", openapi_extra=body,
                 responses={200: {"model": SupportTurnBody, "description": "The agent's turn."}})
    @direct
    async def support_chat(request: Request) -> Response:
        return await handler.chat(request, support, alias)

    return router
