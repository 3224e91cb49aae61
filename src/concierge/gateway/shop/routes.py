"""Routes of the shop family (mount with ``app.include_router(shop_router(session))``).

The handlers read the raw body (so every problem is an OpenAI-style 400), so the request models are
declared with ``openapi_extra``: the app's OpenAPI document describes the bodies all the same.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from concierge.gateway.http import direct
from concierge.gateway.shop import handler
from concierge.gateway.shop.protocol import ShopAnswerBody, ShopChatRequest, ShopItemRequest, ShopItems
from concierge.shop.session import ShopSession


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required JSON request body (a flat model: no ``$defs``)."""
    schema = model.model_json_schema()
    if "$defs" in schema:
        raise ValueError(f"{model.__name__} nests models: declare them as OpenAPI components")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def shop_router(shop: ShopSession, *, model_alias: str | None = None) -> APIRouter:
    """The shop API over ``shop``; ``model_alias`` labels metrics and queues (default: the session's)."""
    alias = model_alias or shop.model_alias
    router = APIRouter()
    answer = {200: {"model": ShopAnswerBody, "content": {"text/event-stream": {}},
                    "description": "The answer (JSON), or its SSE stream with `stream: true`."}}
    listed = {200: {"model": ShopItems, "description": "The products."}}

    @router.post("/v1/shop/chat", openapi_extra=json_body(ShopChatRequest), responses=answer)
    @direct
    async def shop_chat(request: Request) -> Response:
        return await handler.chat(request, shop, alias)

    @router.post("/v1/shop/similar", openapi_extra=json_body(ShopItemRequest), responses=listed)
    @direct
    async def shop_similar(request: Request) -> Response:
        return await handler.items(request, shop, alias, "similar")

    @router.post("/v1/shop/complete-the-look", openapi_extra=json_body(ShopItemRequest), responses=listed)
    @direct
    async def shop_complete_the_look(request: Request) -> Response:
        return await handler.items(request, shop, alias, "complete")

    return router
