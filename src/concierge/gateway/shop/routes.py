"""Routes of the shop family (mount with ``app.include_router(shop_router(session))``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from concierge.gateway.shop import handler
from concierge.shop.session import ShopSession


def shop_router(shop: ShopSession, *, model_alias: str | None = None) -> APIRouter:
    """The shop API over ``shop``; ``model_alias`` labels metrics and queues (default: the session's)."""
    alias = model_alias or shop.model_alias
    router = APIRouter()

    @router.post("/v1/shop/chat")
    async def shop_chat(request: Request) -> Response:
        return await handler.chat(request, shop, alias)

    @router.post("/v1/shop/similar")
    async def shop_similar(request: Request) -> Response:
        return await handler.items(request, shop, alias, "similar")

    @router.post("/v1/shop/complete-the-look")
    async def shop_complete_the_look(request: Request) -> Response:
        return await handler.items(request, shop, alias, "complete")

    return router
