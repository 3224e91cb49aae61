"""Route of the support family (mount with ``app.include_router(support_router(session))``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.support import handler
from concierge.support.session import SupportSession


def support_router(support: SupportSession, *, model_alias: str | None = None) -> APIRouter:
    """The support API over ``support``; ``model_alias`` labels metrics and queues (default: the session's)."""
    alias = model_alias or support.alias
    router = APIRouter()

    @router.post("/v1/support/chat")
    async def support_chat(request: Request) -> Response:
        return await handler.chat(request, support, alias)

    return router
