"""JSON API of the shopping assistant: ``/v1/shop/chat``, ``/v1/shop/similar``, ``/v1/shop/complete-the-look``.

Same rules as the rest of ``/v1``: a tenant API key (``Authorization: Bearer``), OpenAI-style error
bodies, blocking work in worker threads. A chat continues by ``conversation_id``; conversations,
catalogues and shoppers are scoped to the key's tenant, so another tenant's ids answer 404.

``POST /v1/shop/chat`` body::

    {"message": "...", "conversation_id": null, "catalog": "demo", "shopper_id": null, "stream": false}

answers ``{"object": "shop.answer", "conversation_id", "message", "query", "products", "clarifying"}``;
with ``stream: true`` it sends SSE events ``{"type": "products", "products"}`` (the cards, early),
``{"type": "delta", "content"}`` (the answer text), ``{"type": "answer", ...}`` (as the JSON answer),
then ``[DONE]``; request errors (404 unknown shopper ...) come as ordinary error responses first.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from concierge.gateway.errors import (
    GatewayError,
    error_body,
    error_response,
    from_exception,
    is_expected,
    sse_error,
)
from concierge.gateway.limits import Slot
from concierge.gateway.schemas import parse
from concierge.tenancy import Principal
from concierge.web.services import ShopChat, ShopWarming, WebServices, role_alias
from concierge.web.store import ConversationBusy, ConversationNotFound

log = logging.getLogger("concierge.gateway")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_END = object()
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --------------------------------------------------------------------------------------------------
# Helpers shared with routes_support


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise GatewayError(400, "The request body is empty; send a JSON object.")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "body is not UTF-8"
        raise GatewayError(400, f"Malformed JSON body: {detail}.") from None


async def authenticate(request: Request) -> Principal:
    """The caller's tenant, by the gateway's own authenticator (401 without a valid key)."""
    return await request.app.state.authenticator.require(request)


def not_found(message: str, code: str) -> GatewayError:
    return GatewayError(404, message, error_type="not_found_error", code=code)


def failure(request: Request, exc: BaseException, endpoint: str, model: str, tenant: str | None) -> JSONResponse:
    """An OpenAI-style error response; unexpected errors are logged by type and place, with a ref."""
    if is_expected(exc):  # ours, and model errors with a known cause (unknown alias, context length ...)
        response = error_response(exc)
    else:
        ref = secrets.token_hex(4)
        # Locations only: the message may quote what the customer wrote.
        log.error(
            "unexpected %s in %s (ref %s)\n%s", type(exc).__name__, endpoint, ref,
            "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)),
        )
        response = JSONResponse(
            error_body(f"The server had an error while processing your request (ref {ref}).", "server_error"),
            status_code=500,
        )
    count(request, model, tenant, endpoint, response.status_code)
    return response


def count(request: Request, model: str, tenant: str | None, endpoint: str, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_request(model, tenant, endpoint, status)


async def admit(request: Request, tenant: str | None, alias: str) -> Slot:
    """A place in ``alias``'s queue from the gateway's limits (a no-op slot where none are mounted)."""
    limits = getattr(request.app.state, "limits", None)
    return await limits.admit(tenant, alias) if limits is not None else Slot(None)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


# --------------------------------------------------------------------------------------------------
# Request bodies


class _Strict(BaseModel):
    # Unknown fields are refused: a typo such as "conversation" must not silently start a new chat.
    model_config = ConfigDict(extra="forbid")


class ShopChatRequest(_Strict):
    message: str = Field(min_length=1, max_length=4000)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    catalog: str | None = Field(default=None, pattern=NAME_PATTERN)
    shopper_id: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False


class ShopItemRequest(_Strict):
    product_id: str = Field(min_length=1, max_length=200)
    catalog: str | None = Field(default=None, pattern=NAME_PATTERN)
    k: int = Field(default=6, ge=1, le=50)


def _shop_error(exc: BaseException) -> BaseException:
    """Domain errors as HTTP errors; anything else is left as it is (a 500)."""
    from concierge.shop.catalog import CatalogError
    from concierge.shop.query import ShopError

    if isinstance(exc, ShopError):  # the assistant's caller-facing errors carry their status and code
        return GatewayError(exc.status_code, exc.message, error_type=exc.error_type, param=exc.param,
                            code=exc.code)
    if isinstance(exc, CatalogError):
        return not_found(str(exc), "catalog_not_found")
    if isinstance(exc, ConversationNotFound):
        return GatewayError(404, str(exc), error_type="not_found_error", param="conversation_id",
                            code="conversation_not_found")
    if isinstance(exc, ConversationBusy):
        return GatewayError(409, f"{exc}; send the message again.", code="conversation_busy")
    if isinstance(exc, ShopWarming):
        return GatewayError(503, f"{exc}; retry shortly.", error_type="service_unavailable", code="warming_up",
                            headers={"Retry-After": "15"})
    return exc


def _public(answer: dict[str, Any], conversation_id: str) -> dict[str, Any]:
    # The assistant's internal state stays on the server: the conversation id is the handle.
    return {"object": "shop.answer", "conversation_id": conversation_id,
            **{k: v for k, v in answer.items() if k != "state"}}


# --------------------------------------------------------------------------------------------------
# Routes


def shop_router(services: WebServices, *, model_alias: str | None = None) -> APIRouter:
    """The shop API routes over ``services`` (mount with ``app.include_router``).

    ``model_alias`` labels the request metrics (default: the deployment's ``shop`` alias).
    """
    model_alias = model_alias or role_alias(services.hub, "shop", "shop-assistant")
    router = APIRouter()
    chat = ShopChat(services)

    @router.post("/v1/shop/chat")
    async def shop_chat(request: Request) -> Response:
        tenant: str | None = None
        try:
            principal = await authenticate(request)
            tenant = principal.tenant
            req: ShopChatRequest = parse(ShopChatRequest, await read_json(request))
            turn = await in_thread(
                lambda: chat.prepare(tenant, req.message, catalog=req.catalog,
                                     conversation_id=req.conversation_id, shopper_id=req.shopper_id)
            )
            # A turn calls the model: it queues on the model's alias like /v1/chat/completions does
            # (429 with Retry-After when the queue is full, tenant budgets checked).
            slot = await admit(request, tenant, model_alias)
            try:
                if req.stream:
                    source = await in_thread(chat.start_stream, turn)  # request errors raise here, as 4xx
                    return _stream(request, source, turn.conversation_id, tenant, model_alias, slot)
                answer = await in_thread(chat.answer, turn)
            finally:
                slot.release_unless_handed_over()
            count(request, model_alias, tenant, "shop", 200)
            return JSONResponse(_public(answer, turn.conversation_id))
        except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI-style error body)
            return failure(request, _shop_error(exc), "shop", model_alias, tenant)

    async def items(request: Request, kind: str) -> Response:
        tenant: str | None = None
        try:
            principal = await authenticate(request)
            tenant = principal.tenant
            req: ShopItemRequest = parse(ShopItemRequest, await read_json(request))
            catalog = req.catalog or services.catalog
            if kind == "similar":
                found = await in_thread(chat.similar, tenant, catalog, req.product_id, req.k)
            else:
                found = await in_thread(chat.complete_the_look, tenant, catalog, req.product_id, req.k)
            count(request, model_alias, tenant, "shop", 200)
            return JSONResponse({"object": "list", "product_id": req.product_id, "data": found})
        except Exception as exc:  # noqa: BLE001
            return failure(request, _shop_error(exc), "shop", model_alias, tenant)

    @router.post("/v1/shop/similar")
    async def shop_similar(request: Request) -> Response:
        return await items(request, "similar")

    @router.post("/v1/shop/complete-the-look")
    async def shop_complete_the_look(request: Request) -> Response:
        return await items(request, "complete")

    return router


def _stream(
    request: Request,
    source: Iterator[tuple[str, Any]],
    conversation_id: str,
    tenant: str,
    model: str,
    slot: Slot,
) -> Response:
    release = slot.hand_over()  # the model's place in its queue is held until the stream ends

    async def events() -> AsyncIterator[str]:
        status = 499  # stays so when the client leaves before the end
        try:
            while True:
                item = await in_thread(next, source, _END)
                if item is _END:
                    break
                kind, value = item
                if kind == "delta":
                    event = {"type": "delta", "content": value}
                elif kind == "products":
                    event = {"type": "products", "products": value}
                else:
                    event = {"type": "answer", **_public(value, conversation_id)}
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            status = 200
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001  (in-band: the 200 header is already sent)
            exc2 = _shop_error(exc)
            status = from_exception(exc2)[0]
            if not is_expected(exc2):
                log.error("unexpected %s in a shop stream", type(exc).__name__)
            yield sse_error(exc2)
            yield "data: [DONE]\n\n"
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)
            release()
            count(request, model, tenant, "shop", status)

    return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)
