"""The support API over a :class:`~concierge.support.session.SupportSession`: ``POST /v1/support/chat``.

Body: ``{"message": "...", "conversation_id": null, "domain": "homestay", "mode": "guided"}``.
Without ``conversation_id`` a conversation is opened (``domain`` and ``mode`` default to the
session's support desk); with one, the conversation continues, whatever process served it
before. The answer is ``{"object": "support.turn", "conversation_id", "message", "actions",
"status", "confirm"}``: ``status`` is ``open``, ``handoff`` (queued for a person), ``human`` or
``closed``; ``confirm`` is true when the agent waits for a yes/no before changing a booking.
Conversations belong to the key's tenant: another tenant's id answers 404.

A stateless client sends ``messages`` (the whole conversation, OpenAI-style) instead of
``message`` and ``conversation_id``; the answer has the same shape. The client's assistant
messages are not trusted: the agent re-derives its state from the customer's messages, and a yes
counts only for a proposal it made itself and the client showed unchanged
(:meth:`~concierge.support.session.SupportSession.turn_messages`).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.client_messages import conversation_of
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
        convo = conversation_of(req.message, req.messages, req.conversation_id)
        final = convo[-1]["content"] if convo is not None else req.message
        support.check(final, conversation_id=req.conversation_id, domain=req.domain)
        slot = await admit(request, tenant, model_alias)  # queues on the model like chat completions
        try:
            if convo is not None:
                turn = await in_thread(
                    lambda: support.turn_messages(convo, domain=req.domain, mode=req.mode, tenant=tenant)
                )
            else:
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
