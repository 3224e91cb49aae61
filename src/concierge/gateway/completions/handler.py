"""``/v1/completions``: text continuation of a prompt (or a list of prompts), JSON or SSE.

The hub's ``complete`` / ``stream_complete`` are used where the hub has them; otherwise the
engine's own ``/v1/completions`` (see :mod:`concierge.gateway.engine_http`). Each prompt and
each of its ``n`` choices is one engine call, run in parallel; choice ``i * n + j`` is prompt
``i``'s choice ``j`` (as OpenAI indexes them) and usage is summed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import Response

from concierge.gateway import engine_http
from concierge.gateway.chat.handler import ChatRenderer, stream_chat, with_limit
from concierge.gateway.completions.protocol import CompletionRequest
from concierge.gateway.errors import GatewayError
from concierge.gateway.http import (
    Call,
    JSONBody,
    authenticate,
    ceilings,
    count,
    failure,
    in_thread,
    parse,
    read_json,
    unsupported_value,
)
from concierge.gateway.state import Gateway, gateway

_SAMPLING = (
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_k", "min_p",
)


async def completions(request: Request) -> Response:
    gw = gateway(request)
    call = Call("completions")
    try:
        await authenticate(request, call)
        body = await read_json(request)
        req: CompletionRequest = parse(CompletionRequest, body)
        prompts = check_completion(req, gw.settings.max_n)
        card = gw.card_for(req.model, "chat", call)
        max_tokens = ceilings(gw.settings, req.max_tokens, sum(len(p) for p in prompts), prompt_param="prompt")
        payload: dict[str, Any] = {"model": card.alias}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        for name in _SAMPLING:
            value = getattr(req, name)
            if value is not None:
                payload[name] = value
        n = req.n or 1
        if req.stream:
            payload["prompt"] = prompts[0]
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            slot = await gw.limits.admit(call.tenant, card.alias)
            try:
                return await stream_chat(
                    request, gw, call, body, payload, slot, ChatRenderer(include_usage),
                    opener=lambda: open_completion_stream(gw, call, payload),
                )
            finally:
                slot.release_unless_handed_over()
        result = await complete_all(gw, call, payload, prompts, n)
        count(request, call, 200)
        gw.log_exchange(call, body, result)
        return JSONBody(result)
    except Exception as exc:  # noqa: BLE001
        return failure(request, with_limit(exc, gw.hub, call.model), call)


def check_completion(req: CompletionRequest, max_n: int) -> list[str]:
    """The prompts (strings only), and the options we cannot honour refused by name."""
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not prompts:
        raise GatewayError(400, "prompt must not be empty.", param="prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise GatewayError(400, "Token-id prompts are not supported; send strings.", param="prompt",
                           code="unsupported_input")
    n = req.n or 1
    if n * len(prompts) > max_n:
        raise GatewayError(400, f"{len(prompts)} prompts x n={n} is over this deployment's limit "
                           f"(max_n) of {max_n} choices.", param="n")
    if req.stream and (n > 1 or len(prompts) > 1):
        raise GatewayError(400, "stream=true takes one prompt and n=1.", param="n" if n > 1 else "prompt")
    if req.echo:
        raise unsupported_value("echo", req.echo, "the prompt is not echoed; omit echo")
    if req.suffix is not None:
        raise unsupported_value("suffix", req.suffix, "no insertion mode; omit suffix")
    if req.best_of is not None and req.best_of != n:
        raise unsupported_value("best_of", req.best_of, "best_of must equal n")
    return prompts  # type: ignore[return-value]


def _complete_one(gw: Gateway, call: Call, payload: dict[str, Any]) -> dict[str, Any]:
    hub = gw.hub
    if hasattr(hub, "complete"):
        return hub.complete(call.model, payload, tenant=call.tenant)
    ep = engine_http.endpoint_for(hub, call.model)
    return engine_http.metered(
        gw.on_call, call.model, "completions", call.tenant,
        lambda: engine_http.post(ep, "/v1/completions", {**payload, "stream": False}),
    )


def open_completion_stream(gw: Gateway, call: Call, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    hub = gw.hub
    if hasattr(hub, "stream_complete"):
        return hub.stream_complete(call.model, payload, tenant=call.tenant)
    ep = engine_http.endpoint_for(hub, call.model)
    chunks = engine_http.stream(ep, "/v1/completions", payload)
    return engine_http.metered_stream(gw.on_call, call.model, "completions", call.tenant, chunks)


async def complete_all(
    gw: Gateway, call: Call, payload: dict[str, Any], prompts: list[str], n: int
) -> dict[str, Any]:
    results: list[dict[str, Any] | None] = [None] * (len(prompts) * n)

    async def one(i: int) -> None:
        single = {**payload, "prompt": prompts[i // n], "stream": False}
        if "seed" in single:
            single["seed"] = int(single["seed"]) + i % n
        slot = await gw.limits.admit(call.tenant, call.model)
        try:
            results[i] = await in_thread(lambda: _complete_one(gw, call, single), limiter=gw.limiter)
        finally:
            slot.release()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(results)):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    done = [r for r in results if r is not None]
    choices = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for result in done:
        for choice in (result.get("choices") or [])[:1]:
            choices.append({
                "index": len(choices), "text": choice.get("text") or "",
                "logprobs": choice.get("logprobs"), "finish_reason": choice.get("finish_reason") or "stop",
            })
        for key in usage:
            usage[key] += int((result.get("usage") or {}).get(key) or 0)
    first_result = done[0]
    return {
        "id": first_result.get("id") or "cmpl-concierge", "object": "text_completion",
        "created": first_result.get("created") or 0, "model": call.model, "choices": choices, "usage": usage,
    }
