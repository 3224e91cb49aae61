"""``/v1/messages``: the Anthropic Messages API over the chat engines.

The request is translated to a chat request (system, text, ``tool_use`` -> assistant
``tool_calls``, ``tool_result`` -> ``tool`` messages, tools, tool choice), run through the same
path as chat (queue, metering, ceilings) and translated back: a ``message`` object, or
Anthropic's SSE events (``message_start``, ``content_block_start``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``). Errors use Anthropic's shape
``{"type": "error", "error": {"type", "message"}}``. The key may come as ``x-api-key``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.auth import unauthorized
from concierge.gateway.chat.handler import chat_events, chat_once, check_chat, with_limit
from concierge.gateway.chat.protocol import ChatCompletionRequest
from concierge.gateway.errors import GatewayError, from_exception
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
    renamed,
    text_length,
    unsupported_value,
)
from concierge.gateway.messages.protocol import ContentBlock, CountTokensRequest, MessagesRequest
from concierge.gateway.state import gateway

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
    529: "overloaded_error",
}
# Chat's names for the fields of a translated request -> the names the caller sent.
_CHAT_NAMES = [(r"^tools\.(\d+)\.function\.parameters", r"tools.\1.input_schema")]
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


def anthropic_error(status: int, openai_body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's error body; it has no ``param``, so the message names the field instead."""
    error = openai_body.get("error") or {}
    message = str(error.get("message") or "error")
    param = error.get("param")
    if param and param not in message:
        message = f"{param}: {message}"
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def _failure(request: Request, exc: BaseException, call: Call) -> Response:
    response = failure(request, exc, call)
    body = json.loads(bytes(response.body))
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    return JSONBody(anthropic_error(response.status_code, body), status_code=response.status_code, headers=headers)


async def _authenticate(request: Request, call: Call) -> None:
    """``x-api-key`` (Anthropic's header) or ``Authorization: Bearer`` (the gateway's)."""
    key = request.headers.get("x-api-key")
    if key and not request.headers.get("authorization"):
        principal = await request.app.state.authenticator.principal(key.strip())
        if principal is None:
            raise unauthorized("Incorrect API key provided (unknown or revoked).")
        request.state.principal = principal
        call.tenant, call.tenant_id = principal.tenant, principal.tenant_id
        return
    await authenticate(request, call)


def _text(content: str | list[ContentBlock] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(b.text or "" for b in content if b.type == "text")


def chat_messages(req: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    """The conversation as chat messages."""
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": _text(req.system)})
    for i, message in enumerate(req.messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(message.content):
            where = f"messages.{i}.content.{j}"
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use":
                if message.role != "assistant" or not block.id or not block.name:
                    raise GatewayError(400, f"{where}: tool_use needs an assistant message, id and name.", param=where)
                calls.append({"id": block.id, "type": "function",
                              "function": {"name": block.name, "arguments": json.dumps(block.input or {})}})
            else:  # tool_result
                if message.role != "user" or not block.tool_use_id:
                    raise GatewayError(400, f"{where}: tool_result needs a user message and tool_use_id.", param=where)
                result = _text(block.content)
                out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": f"Error: {result}" if block.is_error else result})
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        elif texts:
            out.append({"role": "user", "content": "".join(texts)})
    return out


def chat_tools(req: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if req.tools:
        fields["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description or "", "parameters": t.input_schema}} for t in req.tools]
    choice = req.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise GatewayError(400, "tool_choice of type tool needs a name.", param="tool_choice.name")
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    return fields


async def messages(request: Request) -> Response:
    gw = gateway(request)
    call = Call("messages")
    try:
        await _authenticate(request, call)
        body = await read_json(request)
        req: MessagesRequest = parse(MessagesRequest, body)
        if req.service_tier not in (None, "auto", "standard_only"):
            raise unsupported_value("service_tier", req.service_tier, "one tier: 'auto' or 'standard_only'")
        card = gw.card_for(req.model, "chat", call)
        msgs = chat_messages(req)
        tools = chat_tools(req)
        max_tokens = ceilings(gw.settings, req.max_tokens, text_length([m.get("content") for m in msgs])
                              + text_length(tools.get("tools")))
        payload: dict[str, Any] = {"model": card.alias, "messages": msgs, "max_tokens": max_tokens, **tools}
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                             ("stop_sequences", "stop")):
            if getattr(req, ours) is not None:
                payload[theirs] = getattr(req, ours)
        # The checks chat makes (schemas, the named tool exists), on the translated request.
        try:
            check_chat(parse(ChatCompletionRequest, payload))
        except GatewayError as exc:
            raise renamed(exc, _CHAT_NAMES) from None
        if req.stream:
            return await chat_events(request, gw, call, body, payload, MessagesRenderer(card.alias))
        result = await chat_once(gw, call, payload)
        answer = to_message(result, card.alias)
        count(request, call, 200)
        gw.log_exchange(call, body, answer)
        return JSONBody(answer)
    except Exception as exc:  # noqa: BLE001
        return _failure(request, with_limit(exc, gw.hub, call.model), call)


def to_message(result: dict[str, Any], alias: str) -> dict[str, Any]:
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {"_raw": fn.get("arguments")}
        content.append({"type": "tool_use", "id": tc.get("id") or f"toolu_{secrets.token_hex(8)}",
                        "name": fn.get("name"), "input": args})
    usage = result.get("usage") or {}
    return {
        "id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": alias,
        "content": content, "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": int(usage.get("prompt_tokens") or 0),
                  "output_tokens": int(usage.get("completion_tokens") or 0)},
    }


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"


class MessagesRenderer:
    """Chat chunks -> Anthropic's stream events (one content block per text run or tool call)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.id = f"msg_{secrets.token_hex(12)}"
        self.index = -1
        self.open: str | None = None  # "text" or the chat tool-call index ("tool:N")
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.text: list[str] = []

    def start(self) -> list[str]:
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.alias, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [_event("message_start", {"message": message})]

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", {"index": self.index})]

    def _open(self, key: str, block: dict[str, Any]) -> list[str]:
        out = self._close()
        self.index += 1
        self.open = key
        return [*out, _event("content_block_start", {"index": self.index, "content_block": block})]

    def chunk(self, chunk: dict[str, Any]) -> list[str]:
        out: list[str] = []
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                self.text.append(delta["content"])
                out.append(_event("content_block_delta", {"index": self.index,
                                                          "delta": {"type": "text_delta", "text": delta["content"]}}))
            for tc in delta.get("tool_calls") or []:
                key = f"tool:{tc.get('index', 0)}"
                fn = tc.get("function") or {}
                if self.open != key:
                    out += self._open(key, {"type": "tool_use", "id": tc.get("id") or f"toolu_{secrets.token_hex(8)}",
                                            "name": fn.get("name") or "", "input": {}})
                if fn.get("arguments"):
                    out.append(_event("content_block_delta", {
                        "index": self.index, "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]}}))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> list[str]:
        usage = {"input_tokens": int(self.usage.get("prompt_tokens") or 0),
                 "output_tokens": int(self.usage.get("completion_tokens") or 0)}
        return [*self._close(),
                _event("message_delta", {"delta": {"stop_reason": _STOP.get(self.finish or "stop", "end_turn"),
                                                   "stop_sequence": None}, "usage": usage}),
                _event("message_stop", {})]

    def error(self, exc: BaseException) -> list[str]:
        status, body, _ = from_exception(exc)
        return [f"event: error\ndata: {json.dumps(anthropic_error(status, body))}\n\n"]

    def summary(self) -> dict[str, Any]:
        return {"content": "".join(self.text), "usage": self.usage}


async def count_tokens(request: Request) -> Response:
    from concierge.gateway.tokenize.handler import count_chat_tokens

    gw = gateway(request)
    call = Call("count_tokens")
    try:
        await _authenticate(request, call)
        req: CountTokensRequest = parse(CountTokensRequest, await read_json(request))
        card = gw.card_for(req.model, "chat", call)
        msgs = chat_messages(req)
        tools = chat_tools(req).get("tools")
        tokens = await in_thread(lambda: count_chat_tokens(gw, card.alias, msgs, tools), limiter=gw.limiter)
        count(request, call, 200)
        return JSONBody({"input_tokens": tokens})
    except Exception as exc:  # noqa: BLE001
        return _failure(request, exc, call)
