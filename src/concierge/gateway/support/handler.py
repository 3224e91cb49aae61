"""The support API over a :class:`~concierge.support.session.SupportSession`: ``POST /v1/support/chat``.

Body: ``{"message": "...", "conversation_id": null, "domain": "homestay", "mode": "guided"}``.
Without ``conversation_id`` a conversation is opened (``domain`` and ``mode`` default to the
session's support desk); with one, the conversation continues, whatever process served it
before. The answer is ``{"object": "support.turn", "conversation_id", "message", "actions",
"status", "confirm"}``: ``status`` is ``open``, ``handoff`` (queued for a person), ``human`` or
``closed``; ``confirm`` is true when the agent waits for a yes/no before changing a booking.
Conversations belong to the key's tenant: another tenant's id answers 404.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.http import (
    Call,
    JSONBody,
    admit,
    authenticate,
    count,
    failure,
    in_thread,
    parse,
    read_json,
)
from concierge.gateway.support.protocol import SupportChatRequest
from concierge.support.session import SupportSession


async def chat(request: Request, support: SupportSession, model_alias: str) -> Response:
    call = Call("support", model_alias)
    try:
        principal = await authenticate(request, call)
        tenant = principal.tenant
        req: SupportChatRequest = parse(SupportChatRequest, await read_json(request))
        support.check(req.message, conversation_id=req.conversation_id, domain=req.domain)
        slot = await admit(request, tenant, model_alias)  # queues on the model like chat completions
        try:
            turn = await in_thread(
                lambda: support.turn(req.message, conversation_id=req.conversation_id, domain=req.domain,
                                     mode=req.mode, tenant=tenant)
            )
        finally:
            slot.release()
        count(request, call, 200)
        return JSONBody({"object": "support.turn", **turn.to_dict()})
    except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI-style error body)
        return failure(request, exc, call)
