"""``/v1/chat/completions``: a JSON answer or an SSE stream of chunks (as vLLM's OpenAI server sends).

Hub calls block (llama.cpp runs in C), so they run in worker threads and the event loop stays
free. A stream's first chunk is awaited before answering, so errors found up front (context
length, engine down) get their real HTTP status; later ones are reported in-band.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import jsonschema
from fastapi import Request
from fastapi.responses import Response

from concierge.gateway.chat.fanin import FanIn
from concierge.gateway.chat.protocol import ChatCompletionRequest, NamedToolChoice
from concierge.gateway.chat.streaming import END, PushPump, StreamPump, as_iterator, close_iterator
from concierge.gateway.errors import GatewayError, from_exception, is_expected, sse_error
from concierge.gateway.http import (
    SSE_DONE,
    SSE_HEADERS,
    Call,
    ClosingStream,
    JSONBody,
    authenticate,
    ceilings,
    check_openai_options,
    count,
    dumps,
    failure,
    in_thread,
    log_unexpected,
    parse,
    read_json,
    text_length,
)
from concierge.gateway.limits import Slot
from concierge.gateway.state import Gateway, gateway
from concierge.models.engine import ContextLengthError, Hub


async def chat_completions(request: Request) -> Response:
    gw = gateway(request)
    call = Call("chat")
    try:
        await authenticate(request, call)
        body = await read_json(request)
        req: ChatCompletionRequest = parse(ChatCompletionRequest, body)
        check_chat(req, gw.settings.max_n)
        card = gw.card_for(req.model, "chat", call)
        payload = engine_payload(req, card.alias, gw.settings)
        n = req.n or 1
        if n > 1 and req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await stream_n(request, gw, call, body, payload, n, ChatRenderer(include_usage))
        if n > 1:
            result = await chat_n(gw, call, payload, n)
        else:
            slot = await gw.limits.admit(call.tenant, card.alias)
            try:
                if req.stream:
                    include_usage = bool(req.stream_options and req.stream_options.include_usage)
                    return await stream_chat(request, gw, call, body, payload, slot, ChatRenderer(include_usage))
                payload["stream"] = False
                result = await in_thread(
                    lambda: gw.hub.chat(card.alias, payload, tenant=call.tenant), limiter=gw.limiter
                )
            finally:
                slot.release_unless_handed_over()
        count(request, call, 200)
        gw.log_exchange(call, body, result)
        return JSONBody(result)
    except Exception as exc:  # noqa: BLE001  (every failure becomes an OpenAI error body)
        return failure(request, with_limit(exc, gw.hub, call.model), call)


async def chat_once(gw: Gateway, call: Call, payload: dict[str, Any]) -> dict[str, Any]:
    """One non-streaming engine chat call, queued like every call (for the families built on chat)."""
    slot = await gw.limits.admit(call.tenant, call.model)
    try:
        single = {**payload, "stream": False}
        return await in_thread(lambda: gw.hub.chat(call.model, single, tenant=call.tenant), limiter=gw.limiter)
    finally:
        slot.release()


async def chat_events(
    request: Request, gw: Gateway, call: Call, body: Any, payload: dict[str, Any], renderer: Any
) -> Response:
    """A streaming engine chat call rendered by ``renderer`` (Responses and Messages events)."""
    slot = await gw.limits.admit(call.tenant, call.model)
    try:
        return await stream_chat(request, gw, call, body, payload, slot, renderer)
    finally:
        slot.release_unless_handed_over()


def with_limit(exc: BaseException, hub: Hub, alias: str) -> BaseException:
    return _with_limit(exc, hub, alias) if isinstance(exc, ContextLengthError) else exc


# The request fields sent on to the engine as they are (after validation); everything else the
# engine sees is built below. Nothing a client sends reaches the engine by any other way.
_SAMPLING = (
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "parallel_tool_calls", "top_k", "min_p",
)


def engine_payload(req: ChatCompletionRequest, alias: str, settings: Any) -> dict[str, Any]:
    """The engine request for ``req``, field by field from the allow-list (docs/api.md)."""
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    prompt_chars = text_length([m.get("content") for m in messages]) + text_length(
        [t.model_dump() for t in req.tools or []]
    )
    max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    param = "max_tokens" if req.max_tokens is not None or req.max_completion_tokens is None else "max_completion_tokens"
    max_tokens = ceilings(settings, max_tokens, prompt_chars, param=param)
    payload: dict[str, Any] = {"model": alias, "messages": messages}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    for name in _SAMPLING:
        value = getattr(req, name)
        if value is not None:
            payload[name] = value
    if req.tools:
        payload["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
    if req.tool_choice is not None:
        payload["tool_choice"] = (
            req.tool_choice if isinstance(req.tool_choice, str) else req.tool_choice.model_dump()
        )
    if req.response_format is not None:
        payload["response_format"] = req.response_format.model_dump(by_alias=True, exclude_none=True)
    return payload


async def chat_n(gw: Gateway, call: Call, payload: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` choices: ``n`` engine calls in parallel (each queued like a call of its own).

    With a seed, choice ``i`` uses ``seed + i`` (the same seed would give ``n`` equal answers).
    Choices are indexed 0..n-1 and usage is summed over the calls.
    """
    results: list[dict[str, Any] | None] = [None] * n

    async def one(i: int) -> None:
        single = {**payload, "stream": False}
        if "seed" in single:
            single["seed"] = int(single["seed"]) + i
        slot = await gw.limits.admit(call.tenant, call.model)
        try:
            results[i] = await in_thread(
                lambda: gw.hub.chat(call.model, single, tenant=call.tenant), limiter=gw.limiter
            )
        finally:
            slot.release()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:  # the first failure is the caller's answer
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return merge_results([r for r in results if r is not None])


class _Slots:
    """Several held slots that a stream takes over together (see :class:`~concierge.gateway.limits.Slot`)."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self.handed_over = False

    def release(self) -> None:
        for slot in self.slots:
            slot.release()

    def hand_over(self) -> Callable[[], None]:
        self.handed_over = True
        return self.release

    def release_unless_handed_over(self) -> None:
        if not self.handed_over:
            self.release()


async def stream_n(
    request: Request, gw: Gateway, call: Call, body: Any, payload: dict[str, Any], n: int, renderer: Any
) -> Response:
    """``n`` streamed choices: ``n`` engine streams (each holding a slot) fanned into one."""
    concurrency = gw.limits.concurrency(call.model)
    if n > concurrency:
        raise GatewayError(
            400,
            f"stream=true with n={n} needs {n} calls at once; model {call.model!r} runs {concurrency}.",
            param="n",
        )
    slots = _Slots()
    try:
        for _ in range(n):
            slots.slots.append(await gw.limits.admit(call.tenant, call.model))
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}

        def opener(i: int) -> Callable[[], Any]:
            single = {**payload, **({"seed": int(payload["seed"]) + i} if "seed" in payload else {})}
            return lambda: gw.hub.stream_chat(call.model, single, tenant=call.tenant)

        return await stream_chat(
            request, gw, call, body, payload, slots, renderer,  # type: ignore[arg-type]
            opener=lambda: FanIn([opener(i) for i in range(n)]),
        )
    finally:
        slots.release_unless_handed_over()


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat completion from several: choices re-indexed, usage summed."""
    merged = dict(results[0])
    choices = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for result in results:
        for choice in result.get("choices") or []:
            choices.append({**choice, "index": len(choices)})
        for key in usage:
            usage[key] += int((result.get("usage") or {}).get(key) or 0)
    merged["choices"] = choices
    merged["usage"] = usage
    return merged


class ChatRenderer:
    """Chat chunks as the client asked for them (SSE ``data:`` lines, ``[DONE]`` at the end).

    Other families (Responses, Messages) pass their own renderer to :func:`stream_chat`: it turns
    the engine's chat chunks into their events, so every family shares one stream machinery.
    """

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.collected: list[dict[str, Any]] = []

    def start(self) -> list[str]:
        return []

    def chunk(self, chunk: dict[str, Any]) -> list[str]:
        out = _client_chunk(chunk, self.include_usage)
        if out is None:
            return []
        self.collected.append(out)
        return [f"data: {dumps(out)}\n\n"]

    def end(self) -> list[str]:
        return [SSE_DONE]

    def error(self, exc: BaseException) -> list[str]:
        return [sse_error(exc), SSE_DONE]

    def summary(self) -> dict[str, Any]:
        return _merge_stream(self.collected)


async def stream_chat(
    request: Request, gw: Gateway, call: Call, body: dict[str, Any], payload: dict[str, Any],
    slot: Slot, renderer: Any, opener: Callable[[], Any] | None = None,
) -> Response:
    """Stream the engine's chat chunks through ``renderer`` (see :class:`ChatRenderer`).

    ``opener`` opens another kind of stream (completions) instead of the hub's chat stream.
    """
    hub = gw.hub
    payload["stream"] = True
    # Always ask for usage (metering needs it); the renderer drops it if the client did not ask.
    payload["stream_options"] = {"include_usage": True}
    # Open the stream in a worker thread (the engine may load on first use), then start the pump
    # at once: its thread starts while the engine reads the prompt, not after the first token.
    opened: list[Iterator[dict[str, Any]]] = []
    pushed = PushPump() if opener is None else None

    def open_stream() -> None:
        if opener is not None:
            opened.append(as_iterator(opener()))
            return
        if pushed is None:
            opened.append(as_iterator(hub.stream_chat(call.model, payload, tenant=call.tenant)))
            return
        stream, is_pushed = hub.open_stream(call.model, payload, tenant=call.tenant, on_ready=pushed.ready)
        opened.append(as_iterator(stream))
        if is_pushed:
            pushed.attach(opened[0])

    try:
        await in_thread(open_stream, limiter=gw.limiter)
    except BaseException:
        if opened:  # cancelled after the engine started: free its slot
            close = pushed.stop if pushed is not None and pushed.attached else partial(close_iterator, opened[0])
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)
        raise
    # Engines that cannot push get a thread of their own that pulls their chunks.
    pump: PushPump | StreamPump = pushed if pushed is not None and pushed.attached else StreamPump(opened[0])
    try:
        pending = await pump.next_batch()
        if pending and isinstance(pending[0], BaseException):
            raise pending[0]
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pump.stop)
        raise
    log_requests = gw.settings.log_requests

    async def events() -> AsyncIterator[str]:
        status = 499  # stays so if the client goes away before the end
        batch = pending
        try:
            started = renderer.start()
            if started:
                yield "".join(started)
            while True:
                parts: list[str] = []
                ended = False
                failed: BaseException | None = None
                for chunk in batch:
                    if chunk is END:
                        ended = True
                        break
                    if isinstance(chunk, BaseException):
                        failed = chunk
                        break
                    parts.extend(renderer.chunk(chunk))
                if ended:
                    parts.extend(renderer.end())
                if parts:
                    # Chunks that arrived together go out in one write (fewer syscalls per token).
                    yield "".join(parts)
                if failed is not None:
                    raise failed
                if ended:
                    break
                batch = await pump.next_batch()
            status = 200
        except Exception as exc:  # noqa: BLE001  (reported in-band: the 200 header is already sent)
            status = from_exception(exc)[0]
            if not is_expected(exc):
                log_unexpected(exc, call.endpoint)
            yield "".join(renderer.error(exc))
        finally:
            if not pump.done:  # a finished pump has closed the stream already
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(pump.stop)
            count(request, call, status)
            if log_requests:
                gw.log_exchange(call, body, {"stream": renderer.summary(), "status": status})

    response = ClosingStream(events(), media_type="text/event-stream", headers=SSE_HEADERS)
    response.on_close = slot.hand_over()  # the slot is held until the stream closes
    return response


def _with_limit(exc: ContextLengthError, hub: Hub, alias: str) -> ContextLengthError:
    """Make sure the 400 names the context limit, whatever the engine's wording."""
    try:
        limit = hub.card(alias).context_length
    except Exception:  # noqa: BLE001
        limit = None
    if limit is None or str(limit) in exc.message:
        return exc
    return ContextLengthError(
        f"{exc.message} (model {alias!r} has a context of {limit} tokens)", param=exc.param
    )


def _client_chunk(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any] | None:
    """The chunk as the client asked for it: without usage unless ``include_usage``."""
    if include_usage:
        return chunk
    if not chunk.get("choices") and chunk.get("usage") is not None:
        return None  # the trailing usage-only chunk
    if "usage" in chunk:
        return {k: v for k, v in chunk.items() if k != "usage"}
    return chunk


def _merge_stream(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Content, tool calls and usage of a stream, for the request log."""
    text: list[str] = []
    tools: list[Any] = []
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text.append(delta["content"])
            if delta.get("tool_calls"):
                tools.extend(delta["tool_calls"])
    return {"content": "".join(text), "tool_calls": tools, "usage": usage}


# ---- checks beyond field types -------------------------------------------------------------------


def _check_schema(schema: dict[str, Any], param: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise GatewayError(400, f"Invalid JSON schema at {where}: {exc.message}", param=param) from None


def check_chat(req: ChatCompletionRequest, max_n: int = 8) -> None:
    """The checks beyond field types: n, honoured options, valid schemas, a named tool that exists."""
    if (req.n or 1) > max_n:
        raise GatewayError(400, f"n={req.n} is over this deployment's limit (max_n) of {max_n}.", param="n")
    check_openai_options(
        store=req.store, service_tier=req.service_tier, modalities=req.modalities,
        reasoning_effort=req.reasoning_effort,
    )
    if req.top_logprobs and not req.logprobs:
        raise GatewayError(400, "top_logprobs needs logprobs=true.", param="top_logprobs")
    if req.response_format is not None and req.response_format.type == "json_schema":
        assert req.response_format.json_schema is not None  # guaranteed by the model validator
        _check_schema(req.response_format.json_schema.schema_ or {}, "response_format.json_schema.schema")
    names = []
    for i, tool in enumerate(req.tools or []):
        names.append(tool.function.name)
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools.{i}.function.parameters")
    if isinstance(req.tool_choice, NamedToolChoice) and req.tool_choice.function.name not in names:
        raise GatewayError(
            400,
            f"tool_choice names function {req.tool_choice.function.name!r}, which is not in tools.",
            param="tool_choice",
        )
    if req.tool_choice == "required" and not names:
        raise GatewayError(400, "tool_choice 'required' needs tools.", param="tool_choice")
