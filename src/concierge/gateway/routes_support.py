"""JSON API of the support agent: ``POST /v1/support/chat``.

Body: ``{"message": "...", "conversation_id": null, "domain": "homestay", "mode": "guided"}``.
Without ``conversation_id`` a conversation is opened (``domain`` and ``mode`` default to the
deployment's support desk); with one, the conversation continues, whatever process served it
before. The answer is ``{"object": "support.turn", "conversation_id", "message", "actions",
"status", "confirm"}``: ``status`` is ``open``, ``handoff`` (queued for a person), ``human`` or
``closed``; ``confirm`` is true when the agent waits for a yes/no before changing a booking.
Conversations belong to the key's tenant: another tenant's id answers 404.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from concierge.gateway.errors import GatewayError
from concierge.gateway.routes_shop import admit, authenticate, count, failure, in_thread, read_json
from concierge.gateway.schemas import parse
from concierge.web.services import WebServices, role_alias, support_turn


class SupportChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=4000)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    domain: str | None = Field(default=None, min_length=1, max_length=50)
    mode: Literal["agent", "guided"] | None = None


def _support_error(exc: BaseException) -> BaseException:
    from concierge.support.session import ConversationConflict, ConversationNotFound

    if isinstance(exc, ConversationNotFound):
        return GatewayError(404, str(exc), error_type="not_found_error", param="conversation_id",
                            code="conversation_not_found")
    if isinstance(exc, ConversationConflict):
        return GatewayError(409, f"{exc}; send the message again.", code="conversation_busy")
    if isinstance(exc, FileNotFoundError):
        # A τ² domain whose data folder was not configured (CONCIERGE_SUPPORT_DATA).
        return GatewayError(400, "That support domain has no data on this server.", param="domain",
                            code="domain_unavailable")
    return exc


def support_router(services: WebServices, *, model_alias: str | None = None) -> APIRouter:
    """The support API route over ``services`` (mount with ``app.include_router``).

    ``model_alias`` labels the request metrics (default: the deployment's ``support`` alias).
    """
    from concierge.support.domain import domain_names

    model_alias = model_alias or role_alias(services.hub, "support", "support-agent")
    router = APIRouter()

    @router.post("/v1/support/chat")
    async def support_chat(request: Request) -> Response:
        tenant: str | None = None
        try:
            principal = await authenticate(request)
            tenant = principal.tenant
            req: SupportChatRequest = parse(SupportChatRequest, await read_json(request))
            if not req.message.strip():
                raise GatewayError(400, "message: must not be blank", param="message")
            if req.conversation_id is None and req.domain is not None and req.domain not in domain_names():
                raise GatewayError(400, f"unknown domain {req.domain!r}; known: {', '.join(domain_names())}",
                                   param="domain", code="domain_not_found")
            slot = await admit(request, tenant, model_alias)  # queues on the model like chat completions
            try:
                result = await in_thread(
                    lambda: support_turn(services, tenant, req.message, conversation_id=req.conversation_id,
                                         domain=req.domain, mode=req.mode)
                )
            finally:
                slot.release()
            count(request, model_alias, tenant, "support", 200)
            return JSONResponse({"object": "support.turn", **result})
        except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI-style error body)
            return failure(request, _support_error(exc), "support", model_alias, tenant)

    return router
