"""The shop API over a :class:`~concierge.shop.session.ShopSession`, for every tenant's catalogues.

Same rules as the rest of ``/v1``: a tenant API key, OpenAI-style error bodies (the session's
errors carry their status), blocking work in worker threads. A chat continues by
``conversation_id``; conversations, catalogues and shoppers are scoped to the key's tenant, so
another tenant's ids answer 404.

``POST /v1/shop/chat`` body::

    {"message": "...", "conversation_id": null, "catalog": "demo", "shopper_id": null, "stream": false,
     "query": null}

or, for a stateless client, ``{"messages": [{"role": "user", "content": "..."}, ...], ...}`` instead of
``message`` and ``conversation_id`` (see :mod:`concierge.gateway.client_messages`); the answer is the
same, its ``conversation_id`` a new stored conversation holding the client's history.

answers ``{"object": "shop.answer", "conversation_id", "message", "query", "products", "alternatives",
"clarifying"}``: ``query`` is what was understood, as filters; send it back edited (a filter removed, a
price changed) as ``query`` with the same ``conversation_id`` and the search runs again with exactly
those filters. ``products`` are exact matches; ``alternatives`` are near ones, each with ``unmet``.
Every card has ``meets``: the stated constraints it meets, in words.
with ``stream: true`` it sends SSE events ``{"type": "products", "products"}`` (the cards, early),
``{"type": "delta", "content"}`` (the answer text), ``{"type": "answer", ...}`` (as the JSON answer),
then ``[DONE]``; request errors (404 unknown shopper ...) come as ordinary error responses first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from concierge.gateway.client_messages import conversation_of
from concierge.gateway.errors import from_exception, is_expected, sse_error
from concierge.gateway.http import (
    SSE_DONE,
    SSE_HEADERS,
    Call,
    JSONBody,
    admit,
    authenticate,
    count,
    failure,
    in_thread,
    log_unexpected,
    parse,
    read_json,
    sse,
)
from concierge.gateway.limits import Slot
from concierge.gateway.shop.protocol import ShopChatRequest, ShopItemRequest, ShopItems
from concierge.shop.assistant import ShopAnswer, ShopProducts
from concierge.shop.session import ShopSession

_END = object()


async def chat(request: Request, shop: ShopSession, model_alias: str) -> Response:
    call = Call("shop", model_alias)
    try:
        principal = await authenticate(request, call)
        tenant = principal.tenant
        req: ShopChatRequest = parse(ShopChatRequest, await read_json(request))
        if req.query is not None and req.message is None and req.messages is None:
            convo, message = None, ""  # the edited filters alone: search with exactly those
        else:
            convo, message = conversation_of(req.message, req.messages, req.conversation_id), req.message
        turn = await in_thread(
            lambda: shop.prepare(tenant, message, catalog=req.catalog, conversation_id=req.conversation_id,
                                 shopper_id=req.shopper_id, messages=convo, query=req.query)
        )
        # A turn calls the model: it queues on the model's alias like /v1/chat/completions does
        # (429 with Retry-After when the queue is full, tenant budgets checked).
        slot = await admit(request, tenant, model_alias)
        try:
            if req.stream:
                source = await in_thread(shop.stream, turn)  # request errors raise here, as 4xx
                return _stream(request, source, call, slot)
            answer = await in_thread(shop.answer, turn)
        finally:
            slot.release_unless_handed_over()
        count(request, call, 200)
        return JSONBody(answer.to_public())
    except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI-style error body)
        return failure(request, exc, call)


async def items(request: Request, shop: ShopSession, model_alias: str, kind: str) -> Response:
    call = Call("shop", model_alias)
    try:
        principal = await authenticate(request, call)
        req: ShopItemRequest = parse(ShopItemRequest, await read_json(request))
        find = shop.similar if kind == "similar" else shop.complete_the_look
        found = await in_thread(find, principal.tenant, req.catalog, req.product_id, req.k)
        count(request, call, 200)
        return JSONBody(ShopItems(product_id=req.product_id, data=found).model_dump())
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


def event(item: ShopProducts | str | ShopAnswer) -> dict[str, Any]:
    """The SSE event for one item of a session's stream."""
    if isinstance(item, str):
        return {"type": "delta", "content": item}
    if isinstance(item, ShopProducts):
        return {"type": "products", "products": item.products, "alternatives": item.alternatives,
                "query": item.query}
    return {"type": "answer", **item.to_public()}


def _stream(request: Request, source: Iterator[Any], call: Call, slot: Slot) -> Response:
    release = slot.hand_over()  # the model's place in its queue is held until the stream ends

    async def events() -> AsyncIterator[str]:
        status = 499  # stays so when the client leaves before the end
        try:
            while True:
                item = await in_thread(next, source, _END)
                if item is _END:
                    break
                yield sse(event(item))
            status = 200
            yield SSE_DONE
        except Exception as exc:  # noqa: BLE001  (in-band: the 200 header is already sent)
            status = from_exception(exc)[0]
            if not is_expected(exc):
                log_unexpected(exc, "a shop stream")
            yield sse_error(exc)
            yield SSE_DONE
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)
            release()
            count(request, call, status)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
