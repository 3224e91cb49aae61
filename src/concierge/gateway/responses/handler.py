"""``/v1/responses``: the OpenAI Responses API over the chat engines.

``input`` (a string or items: messages, ``function_call``, ``function_call_output``) and
``instructions`` become a chat request that runs the same path as chat (allow-list, ceilings,
queue, metering); the answer becomes ``output`` items (``message`` with ``output_text``,
``function_call``). Streams send the Responses events (``response.created``,
``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, ..., ``response.completed``).

With ``store`` (OpenAI's default) the response and its conversation are kept per tenant
(:mod:`concierge.gateway.responses.store`); ``previous_response_id`` continues it. A response of
another tenant is a 404.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

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
from concierge.gateway.responses import store
from concierge.gateway.responses.protocol import ResponsesRequest
from concierge.gateway.state import Gateway, gateway

# Chat's names for the fields of a translated request -> the names the caller sent.
_CHAT_NAMES = [
    (r"^tools\.(\d+)\.function\.parameters", r"tools.\1.parameters"),
    (r"^response_format\.json_schema\.schema", "text.format.schema"),
    (r"^messages", "input"),
]
_TEXT_PARTS = {"input_text", "output_text", "text"}


def _part_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise GatewayError(400, f"{where}: content must be a string or a list of parts.", param=where)
    texts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text") or ""))
        elif kind != "refusal":
            raise GatewayError(400, f"{where}.{k}: content parts of type {kind!r} are not supported (text only).",
                               param=f"{where}.{k}.type", code="unsupported_value")
    return "".join(texts)


def input_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``input`` as chat messages (consecutive function calls join one assistant message)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input.{i}"
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise GatewayError(400, f"{where}.role: {role!r} is not a message role.", param=f"{where}.role")
            out.append({"role": role, "content": _part_text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            if not item.get("call_id") or not item.get("name"):
                raise GatewayError(400, f"{where}: a function_call needs call_id and name.", param=where)
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": str(item.get("arguments") or "{}")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise GatewayError(400, f"{where}: a function_call_output needs call_id.", param=f"{where}.call_id")
            output = item.get("output")
            text = output if isinstance(output, str) else _part_text(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # our models' reasoning is not replayed
        else:
            raise GatewayError(400, f"{where}: input items of type {kind!r} are not supported.",
                               param=f"{where}.type", code="unsupported_value")
    return out


def check_request(req: ResponsesRequest) -> None:
    if req.include:
        raise unsupported_value("include", req.include, "nothing extra to include; send [] or omit it")
    if req.reasoning and any(v is not None for v in req.reasoning.values()):
        raise unsupported_value("reasoning", req.reasoning, "the open models here take no reasoning settings")
    if req.background:
        raise unsupported_value("background", req.background, "no background mode")
    if req.service_tier not in (None, "auto", "default"):
        raise unsupported_value("service_tier", req.service_tier, "one tier: 'auto' or 'default'")


def chat_fields(req: ResponsesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if req.tools:
        fields["tools"] = [{"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                           for t in req.tools]
    if req.tool_choice is not None:
        fields["tool_choice"] = (req.tool_choice if isinstance(req.tool_choice, str)
                                 else {"type": "function", "function": {"name": req.tool_choice.name}})
    if req.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = req.parallel_tool_calls
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise GatewayError(400, "text.format of type json_schema needs schema.", param="text.format.schema")
        fields["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": fmt.schema_, **({"strict": fmt.strict} if fmt.strict else {})}}
    elif fmt is not None and fmt.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    for name in ("temperature", "top_p"):
        if getattr(req, name) is not None:
            fields[name] = getattr(req, name)
    return fields


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if message.get("content"):
        items.append({"type": "message", "id": _new_id("msg"), "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": message["content"], "annotations": [],
                                   "logprobs": []}]})
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        items.append({"type": "function_call", "id": _new_id("fc"), "call_id": tc.get("id") or _new_id("call"),
                      "name": fn.get("name"), "arguments": fn.get("arguments") or "{}", "status": "completed"})
    return items


def history_of(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output items as chat messages (to continue the conversation from)."""
    return input_messages([{k: v for k, v in item.items() if k != "id"} for item in output])


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def response_object(req: ResponsesRequest, rid: str, alias: str, max_tokens: int | None, status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None,
                    incomplete: str | None = None) -> dict[str, Any]:
    text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text is not None else {"format": {"type": "text"}}
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": alias,
        "output": output, "usage": _usage(usage) if usage is not None else None, "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": req.instructions, "metadata": req.metadata or {},
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "tool_choice": (req.tool_choice if isinstance(req.tool_choice, str) or req.tool_choice is None
                        else req.tool_choice.model_dump()) or "auto",
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "text": text, "temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": max_tokens,
        "previous_response_id": req.previous_response_id, "store": bool(req.store), "truncation": "disabled",
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "user": req.user,
    }


async def create(request: Request) -> Response:
    gw = gateway(request)
    call = Call("responses")
    try:
        await authenticate(request, call)
        body = await read_json(request)
        req: ResponsesRequest = parse(ResponsesRequest, body)
        check_request(req)
        card = gw.card_for(req.model, "chat", call)
        history: list[dict[str, Any]] = []
        if req.previous_response_id:
            tenant = call.tenant or ""
            row = await in_thread(lambda: store.load(gw.settings.database_url, tenant, req.previous_response_id))
            history = list(row.history)
        conversation = history + input_messages(req.input)
        system = [{"role": "system", "content": req.instructions}] if req.instructions else []
        fields = chat_fields(req)
        max_tokens = ceilings(gw.settings, req.max_output_tokens,
                              text_length([m.get("content") for m in system + conversation]) + text_length(fields.get("tools")),
                              param="max_output_tokens", prompt_param="input")
        payload: dict[str, Any] = {"model": card.alias, "messages": system + conversation, **fields}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        try:
            check_chat(parse(ChatCompletionRequest, payload))
        except GatewayError as exc:
            raise renamed(exc, _CHAT_NAMES) from None
        rid = _new_id("resp")

        def keep(response: dict[str, Any]) -> None:
            if req.store and call.tenant is not None:
                store.save(gw.settings.database_url, call.tenant, response, conversation + history_of(response["output"]))

        if req.stream:
            renderer = ResponsesRenderer(lambda status, output, usage, incomplete: response_object(
                req, rid, card.alias, max_tokens, status, output, usage, incomplete), keep)
            return await chat_events(request, gw, call, body, payload, renderer)
        result = await chat_once(gw, call, payload)
        choice = (result.get("choices") or [{}])[0]
        incomplete = "max_output_tokens" if choice.get("finish_reason") == "length" else None
        answer = response_object(req, rid, card.alias, max_tokens, "incomplete" if incomplete else "completed",
                                 output_items(choice.get("message") or {}), result.get("usage") or {}, incomplete)
        await in_thread(keep, answer)
        count(request, call, 200)
        gw.log_exchange(call, body, answer)
        return JSONBody(answer)
    except Exception as exc:  # noqa: BLE001
        return failure(request, with_limit(exc, gw.hub, call.model), call)


async def retrieve(request: Request, response_id: str) -> Response:
    gw: Gateway = gateway(request)
    call = Call("responses")
    try:
        await authenticate(request, call)
        tenant = call.tenant or ""
        row = await in_thread(lambda: store.load(gw.settings.database_url, tenant, response_id, param="response_id"))
        count(request, call, 200)
        return JSONBody(row.response)
    except Exception as exc:  # noqa: BLE001
        return failure(request, exc, call)


class ResponsesRenderer:
    """Chat chunks -> the Responses stream events, each with its ``sequence_number``."""

    def __init__(self, build: Callable[..., dict[str, Any]], keep: Callable[[dict[str, Any]], None]) -> None:
        self.build = build
        self.keep = keep
        self.seq = 0
        self.items: list[dict[str, Any]] = []  # output items, finished or open
        self.open: str | None = None  # "text" or "tool:N"
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}

    def _event(self, kind: str, **data: Any) -> str:
        event = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"

    def start(self) -> list[str]:
        response = self.build("in_progress", [], None, None)
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        index = len(self.items) - 1
        item = self.items[index]
        item["status"] = "completed"
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            out += [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                content_index=0, text=part["text"], logprobs=[]),
                    self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                content_index=0, part=part)]
        else:
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   name=item["name"], arguments=item["arguments"]))
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        self.open = None
        return out

    def chunk(self, chunk: dict[str, Any]) -> list[str]:
        out: list[str] = []
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open != "text":
                    out += self._close()
                    item = {"type": "message", "id": _new_id("msg"), "status": "in_progress", "role": "assistant",
                            "content": []}
                    self.items.append(item)
                    self.open = "text"
                    index = len(self.items) - 1
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    out.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
                    item["content"].append(part)
                    out.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                           content_index=0, part=dict(part)))
                index = len(self.items) - 1
                item = self.items[index]
                item["content"][0]["text"] += delta["content"]
                out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=index,
                                       content_index=0, delta=delta["content"], logprobs=[]))
            for tc in delta.get("tool_calls") or []:
                key = f"tool:{tc.get('index', 0)}"
                fn = tc.get("function") or {}
                if self.open != key:
                    out += self._close()
                    item = {"type": "function_call", "id": _new_id("fc"), "call_id": tc.get("id") or _new_id("call"),
                            "name": fn.get("name") or "", "arguments": "", "status": "in_progress"}
                    self.items.append(item)
                    self.open = key
                    out.append(self._event("response.output_item.added", output_index=len(self.items) - 1,
                                           item=dict(item)))
                if fn.get("arguments"):
                    index = len(self.items) - 1
                    item = self.items[index]
                    item["arguments"] += fn["arguments"]
                    out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                           output_index=index, delta=fn["arguments"]))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> list[str]:
        out = self._close()
        incomplete = "max_output_tokens" if self.finish == "length" else None
        response = self.build("incomplete" if incomplete else "completed", self.items, self.usage, incomplete)
        try:
            self.keep(response)
        except Exception as exc:  # noqa: BLE001  (the answer is out; the store failed)
            return [*out, *self.error(exc)]
        kind = "response.incomplete" if incomplete else "response.completed"
        return [*out, self._event(kind, response=response)]

    def error(self, exc: BaseException) -> list[str]:
        _, body, _ = from_exception(exc)
        error = body["error"]
        response = self.build("failed", self.items, self.usage or None, None)
        response["error"] = {"code": error.get("code") or error.get("type"), "message": error["message"]}
        return [self._event("response.failed", response=response)]

    def summary(self) -> dict[str, Any]:
        return {"output": self.items, "usage": self.usage}
