"""``/tokenize`` and ``/detokenize``: the model's own tokenizer (vLLM's request and answer shapes).

``hub.tokenize(alias, text, add_special)`` / ``hub.detokenize(alias, tokens)`` where the hub has
them; otherwise the engine's HTTP API (llama-server's ``/tokenize``, ``/detokenize`` and
``/apply-template``; vLLM's ``/tokenize`` and ``/detokenize``), see :mod:`concierge.gateway.engine_http`.
Not metered as usage (no generation), but counted in the request metrics.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from concierge.gateway import engine_http
from concierge.gateway.errors import GatewayError
from concierge.gateway.http import Call, JSONBody, authenticate, count, failure, in_thread, parse, read_json
from concierge.gateway.state import Gateway, gateway
from concierge.gateway.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)


def _card(gw: Gateway, alias: str, call: Call) -> Any:
    card = gw.hub.card(alias)
    call.model = card.alias
    return card


async def tokenize(request: Request) -> Response:
    gw = gateway(request)
    call = Call("tokenize")
    try:
        await authenticate(request, call)
        req: TokenizeRequest = parse(TokenizeRequest, await read_json(request))
        card = _card(gw, req.model, call)
        tokens = await in_thread(lambda: _tokenize(gw, card.alias, req), limiter=gw.limiter)
        count(request, call, 200)
        answer = TokenizeResponse(count=len(tokens), max_model_len=card.context_length, tokens=tokens)
        return JSONBody(answer.model_dump())
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


def _tokenize(gw: Gateway, alias: str, req: TokenizeRequest) -> list[int]:
    hub = gw.hub
    messages = [m.model_dump(exclude_none=True) for m in req.messages] if req.messages is not None else None
    if messages is None and hasattr(hub, "tokenize"):
        return list(hub.tokenize(alias, req.prompt, req.add_special_tokens))
    ep = engine_http.endpoint_for(hub, alias)
    if ep.kind == "openai-upstream":
        body: dict[str, Any] = {"model": alias, "add_special_tokens": req.add_special_tokens}
        if messages is None:
            body["prompt"] = req.prompt
        else:
            body.update(messages=messages, add_generation_prompt=req.add_generation_prompt)
        return list(engine_http.post(ep, "/tokenize", body, timeout=30)["tokens"])
    text = req.prompt
    add_special = req.add_special_tokens
    if messages is not None:
        if not req.add_generation_prompt:
            raise GatewayError(400, "add_generation_prompt=false is not supported by this engine.",
                               param="add_generation_prompt")
        text = engine_http.post(ep, "/apply-template", {"messages": messages}, timeout=30)["prompt"]
        add_special = False  # the template writes the special tokens itself
    answer = engine_http.post(ep, "/tokenize", {"content": text, "add_special": add_special, "parse_special": True},
                              timeout=30)
    return [t if isinstance(t, int) else t["id"] for t in answer["tokens"]]


async def detokenize(request: Request) -> Response:
    gw = gateway(request)
    call = Call("detokenize")
    try:
        await authenticate(request, call)
        req: DetokenizeRequest = parse(DetokenizeRequest, await read_json(request))
        card = _card(gw, req.model, call)
        text = await in_thread(lambda: _detokenize(gw, card.alias, req.tokens), limiter=gw.limiter)
        count(request, call, 200)
        return JSONBody(DetokenizeResponse(prompt=text).model_dump())
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


def _detokenize(gw: Gateway, alias: str, tokens: list[int]) -> str:
    hub = gw.hub
    if hasattr(hub, "detokenize"):
        return str(hub.detokenize(alias, tokens))
    ep = engine_http.endpoint_for(hub, alias)
    if ep.kind == "openai-upstream":
        return str(engine_http.post(ep, "/detokenize", {"model": alias, "tokens": tokens}, timeout=30)["prompt"])
    return str(engine_http.post(ep, "/detokenize", {"tokens": tokens}, timeout=30)["content"])


def count_chat_tokens(gw: Gateway, alias: str, messages: list[dict[str, Any]], tools: list[Any] | None) -> int:
    """Prompt tokens of a chat conversation (the template's own tokens included where the engine
    can apply it; a hub with only ``tokenize`` counts the message text) plus the tool schemas'."""
    hub = gw.hub
    if hasattr(hub, "tokenize"):
        count = sum(len(hub.tokenize(alias, str(m.get("content") or ""), False)) for m in messages)
    else:
        req = TokenizeRequest(model=alias, messages=messages)
        count = len(_tokenize(gw, alias, req))
    if tools:
        count += len(_tokenize(gw, alias, TokenizeRequest(model=alias, prompt=json.dumps(tools),
                                                            add_special_tokens=False)))
    return count
