"""``/v1/embeddings``: vectors for strings, as floats or OpenAI's base64 (little-endian float32)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.embeddings.protocol import (
    EmbeddingObject,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from concierge.gateway.errors import GatewayError
from concierge.gateway.http import Call, JSONBody, authenticate, count, failure, in_thread, parse, read_json
from concierge.gateway.state import gateway


async def embeddings(request: Request) -> Response:
    gw = gateway(request)
    call = Call("embeddings")
    try:
        await authenticate(request, call)
        body = await read_json(request)
        req: EmbeddingRequest = parse(EmbeddingRequest, body)
        texts = embedding_inputs(req)
        card = gw.card_for(req.model, "embeddings", call)
        slot = await gw.limits.admit(call.tenant, card.alias)
        try:
            vectors, tokens = await in_thread(
                lambda: gw.hub.embed(card.alias, texts, tenant=call.tenant), limiter=gw.limiter
            )
        finally:
            slot.release()
        dim = len(vectors[0]) if vectors else 0
        if req.dimensions is not None and req.dimensions != dim:
            raise GatewayError(
                400,
                f"Model {card.alias!r} produces {dim} dimensions; it cannot give {req.dimensions}.",
                param="dimensions",
            )
        result = EmbeddingResponse.model_construct(
            object="list",
            data=[
                EmbeddingObject.model_construct(object="embedding", index=i, embedding=_encode(vec, req.encoding_format))
                for i, vec in enumerate(vectors)
            ],
            model=card.alias,
            usage=EmbeddingUsage.model_construct(prompt_tokens=tokens, total_tokens=tokens),
        )
        count(request, call, 200)
        gw.log_exchange(call, body, {"data": f"{len(vectors)} vectors of {dim}", "usage": result.usage.model_dump()})
        return JSONBody(result.model_dump())
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


def _encode(vector: list[float], encoding: str | None) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64 form: little-endian float32 bytes (what the official client decodes).
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def embedding_inputs(req: EmbeddingRequest) -> list[str]:
    """The texts to embed; token-id arrays are not supported (400)."""
    items = [req.input] if isinstance(req.input, str) else req.input
    if not items:
        raise GatewayError(400, "input must not be empty.", param="input")
    if not all(isinstance(item, str) for item in items):
        raise GatewayError(
            400,
            "Token-id arrays are not supported as input; send strings.",
            param="input",
            code="unsupported_input",
        )
    return items
