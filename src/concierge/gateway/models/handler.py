"""``/v1/models``: what the deployment serves (operators also see where each model comes from)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.http import Call, JSONBody, authenticate, count, failure
from concierge.gateway.models.protocol import ModelList, ModelObject
from concierge.gateway.state import gateway
from concierge.models.hub import ModelCard


def model_object(card: ModelCard, created: int, *, operator: bool) -> ModelObject:
    fields: dict[str, Any] = {
        "id": card.alias,
        "object": "model",
        "created": created,
        "owned_by": card.owned_by,
        "kind": card.kind,
        "engine": card.engine,
        "context_length": card.context_length,
        "max_model_len": card.context_length,
        "catalogue_id": card.catalogue_id,
        "in_house": card.in_house,
    }
    if operator:
        fields["source"] = card.source
    return ModelObject.model_construct(_fields_set=set(fields), **fields)


def _dump(model: ModelObject) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


async def list_models(request: Request) -> Response:
    gw = gateway(request)
    call = Call("models")
    try:
        principal = await authenticate(request, call)
        operator = principal.scope == "operator"
        listing = ModelList.model_construct(
            data=[model_object(c, gw.started, operator=operator) for c in gw.hub.models()]
        )
        count(request, call, 200)
        return JSONBody({"object": listing.object, "data": [_dump(m) for m in listing.data]})
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


async def get_model(request: Request, model: str) -> Response:
    gw = gateway(request)
    call = Call("models")
    try:
        principal = await authenticate(request, call)
        card = gw.hub.card(model)
        call.model = card.alias
        count(request, call, 200)
        return JSONBody(_dump(model_object(card, gw.started, operator=principal.scope == "operator")))
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)
