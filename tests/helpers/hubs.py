"""Fake hubs with the ``concierge.models.engine.Hub`` contract, shared by the test modules.

``ScriptedHub`` is the one scriptable fake: replies per alias (texts, messages, tool calls, JSON,
whole completions, errors, functions of the request), streams derived from them, hashing
embeddings, model cards, deployment roles and a record of every call. ``shop_hub()`` is its shop
configuration. ``GatewayHub`` is the gateway tests' hub (aliases that are slow, down, boom, flaky;
a small context; metering), kept as it was while test_gateway is being extended.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from concierge.models.engine import ContextLengthError, EngineUnavailableError, ModelNotFoundError
from concierge.models.hub import CallRecord, ModelCard


# ---------------------------------------------------------------------------------------------
# A fake hub with the ModelHub contract
# ---------------------------------------------------------------------------------------------
def _instance(schema: dict[str, Any]) -> Any:
    """A small value that satisfies ``schema`` (enough for the schemas used here)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _instance(sub) for name, sub in props.items()}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "string"}))] * max(1, schema.get("minItems", 1))
    return {"string": "text", "integer": 3, "number": 1.5, "boolean": True, "null": None}[kind]


class GatewayHub:
    """The gateway tests' hub: canned answers; tokens are whitespace words; reports every call to ``observer``."""

    CONTEXT = 64

    def __init__(self) -> None:
        self.observer = None
        self.requests: list[tuple[str, dict[str, Any], str | None]] = []
        self.closed_streams = 0
        self.cards = {
            "tiny": ModelCard("tiny", "chat", "tiny-test", "fake", "/models/tiny.gguf", self.CONTEXT),
            "slow": ModelCard("slow", "chat", None, "fake", "/models/slow.gguf", self.CONTEXT),
            "down": ModelCard("down", "chat", None, "fake", "http://127.0.0.1:9/v1", 4096),
            "boom": ModelCard("boom", "chat", None, "fake", "/models/boom.gguf", 4096),
            "flaky": ModelCard("flaky", "chat", None, "fake", "/models/flaky.gguf", 4096),
            "embed": ModelCard("embed", "embeddings", "all-minilm-l6-v2", "fake", "minilm", 256),
        }

    # -- contract ------------------------------------------------------------------------------
    def models(self) -> list[ModelCard]:
        return list(self.cards.values())

    def card(self, alias: str) -> ModelCard:
        if alias not in self.cards:
            raise ModelNotFoundError(f"The model `{alias}` does not exist.", param="model")
        return self.cards[alias]

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        self.requests.append((alias, request, tenant))
        try:
            prompt = self._prompt_tokens(alias, request)
            message = self._answer(request)
        except Exception as exc:
            self._report(
                alias, "chat", tenant, start, status=getattr(exc, "status_code", 500), error=str(exc)
            )
            raise
        completion = len(str(message.get("content") or "").split()) + 1
        self._report(alias, "chat", tenant, start, prompt, completion, ttft=time.perf_counter() - start)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": alias,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        self.requests.append((alias, request, tenant))
        return self._stream(alias, request, tenant)

    def _stream(self, alias: str, request: dict[str, Any], tenant: str | None) -> Iterator[dict]:
        start = time.perf_counter()
        status, ttft, sent = 200, None, 0
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": alias}
        try:
            prompt = self._prompt_tokens(alias, request)
            words = str(self._answer(request)["content"]).split()
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            ttft = time.perf_counter() - start
            for i, word in enumerate(words):
                if alias == "flaky" and i == 2:
                    raise EngineUnavailableError("engine crashed mid-stream")
                if alias == "slow":
                    time.sleep(0.05)
                sent += 1
                yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent},
            }
        except GeneratorExit:
            self.closed_streams += 1
            status = 499
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", 500)
            raise
        finally:
            self._report(alias, "chat", tenant, start, locals().get("prompt", 0), sent, ttft, status, True)

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        start = time.perf_counter()
        vectors = []
        for text in texts:
            raw = [float((hash(text) >> (4 * i)) % 17 + 1) for i in range(8)]
            norm = math.sqrt(sum(x * x for x in raw))
            vectors.append([x / norm for x in raw])
        tokens = sum(len(t.split()) for t in texts)
        self._report(alias, "embeddings", tenant, start, tokens, 0)
        return vectors, tokens

    def close(self) -> None:
        pass

    # -- behaviour -----------------------------------------------------------------------------
    def _prompt_tokens(self, alias: str, request: dict[str, Any]) -> int:
        if alias == "down":
            raise EngineUnavailableError("upstream http://127.0.0.1:9/v1 refused the connection")
        if alias == "boom":
            raise RuntimeError("secret internal detail sk-should-not-leak")
        if alias == "slow":
            time.sleep(0.5)
        tokens = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
        if tokens > self.cards[alias].context_length:
            raise ContextLengthError(
                f"This model's maximum context length is {self.CONTEXT} tokens; the prompt has {tokens}.",
                param="messages",
            )
        return tokens

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        fmt = request.get("response_format") or {}
        choice = request.get("tool_choice")
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            tool = next(t for t in request["tools"] if t["function"]["name"] == name)
            args = _instance(tool["function"].get("parameters") or {"type": "object"})
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        if fmt.get("type") == "json_schema":
            return {"role": "assistant", "content": json.dumps(_instance(fmt["json_schema"]["schema"]))}
        return {"role": "assistant", "content": "Hello from the tiny model , how can I help ?"}

    def _report(
        self,
        alias,
        endpoint,
        tenant,
        start,
        prompt=0,
        completion=0,
        ttft=None,
        status=200,
        stream=False,
        error=None,
    ) -> None:  # noqa: ANN001
        if self.observer is not None:
            self.observer(
                CallRecord(
                    alias,
                    endpoint,
                    tenant,
                    prompt,
                    completion,
                    ttft,
                    time.perf_counter() - start,
                    status,
                    error,
                    stream,
                )
            )


# ---------------------------------------------------------------------------------------------
# ScriptedHub: the one scriptable fake hub
# ---------------------------------------------------------------------------------------------
Reply = Any  # str | dict | BaseException | Callable[[dict], Reply] | None (see ScriptedHub)

DEFAULT_USAGE: dict[str, int] = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
_UNSET: Any = object()


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "") -> dict[str, Any]:
    """An OpenAI tool call (``arguments`` as given when a string, else JSON-encoded)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id or f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}}


def empty_instance(schema: dict[str, Any]) -> Any:
    """The emptiest value a JSON schema allows (a model that "found nothing" in the message)."""
    if "enum" in schema:
        return None if None in schema["enum"] else schema["enum"][0]
    kind = schema.get("type", "object")
    kinds = kind if isinstance(kind, list) else [kind]
    if "null" in kinds:
        return None
    if "object" in kinds:
        props = schema.get("properties", {})
        return {name: empty_instance(props[name]) for name in schema.get("required", list(props))}
    if "array" in kinds:
        return []
    if "string" in kinds:
        return ""
    if "boolean" in kinds:
        return False
    return 0


def empty_json(request: dict[str, Any]) -> str:
    """A structured reply: the emptiest JSON the request's ``response_format`` allows."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(empty_instance((fmt.get("json_schema") or {}).get("schema") or {}))
    return "{}"


def card(alias: str, kind: str | None = None, context_length: int | None = 8192, **fields: Any) -> ModelCard:
    """A model card for a scripted alias (``embed*`` aliases are embedding models unless told)."""
    kind = kind or ("embeddings" if alias.startswith("embed") else "chat")
    values = {"catalogue_id": None, "engine": "scripted", "source": f"/models/{alias}.gguf", **fields}
    return ModelCard(
        alias, kind, values.pop("catalogue_id"), values.pop("engine"), values.pop("source"), context_length, **values
    )


@dataclass
class Call:
    """One call a ScriptedHub received (``request`` is a deep copy taken when it arrived)."""

    alias: str
    request: dict[str, Any]
    tenant: str | None = None
    stream: bool = False


class ScriptedRoles:
    """A deployment's role -> alias table (the ``Roles`` protocol)."""

    def __init__(self, roles: dict[str, str]) -> None:
        self.roles = dict(roles)

    def default(self, role: str) -> str:
        return self.roles.get(role, role)

    def role(self, role: str, fallback: str | None = None) -> str | None:
        return self.roles.get(role, fallback)


class ScriptedHub:
    """A fake model hub driven by a script: a ``ServingHub`` (``as_hub`` completes it to a ``Hub``).

    Replies, for ``chat`` and ``stream_chat`` alike (a stream is derived from the reply):

    - a ``str``: the assistant's text; a ``dict`` with ``choices``: the whole completion, as is;
      any other ``dict``: the assistant message's fields (``content``, ``tool_calls``); ``None``: no
      content; an exception (instance or class): raised; a callable: called with the request (or,
      when it takes two arguments, the request and the Call: alias, tenant, stream), its result is
      the reply (it may raise).
    - where a reply comes from, first match wins: ``structured`` for a request with a
      ``response_format`` (when set); the alias's queue (``script(alias, ...)``); the shared queue
      (the positional ``replies``); the alias's standing reply (``on(alias, reply)``); ``default``.
      With nothing left and no default, the call fails (AssertionError: the script ran out).

    Everything else is configuration: ``cards`` (ModelCards or alias names; none by default, so
    ``card`` raises ModelNotFoundError), ``roles`` (a ``deployment`` with those role -> alias entries;
    without it the hub has no ``deployment`` attribute), ``usage`` (a dict, a callable of
    (request, message), or None for none), ``embed_dim`` (hashing embeddings), ``meter`` (report a
    CallRecord per call to ``observer``, as the real hub does for the gateway's metering),
    ``chunk_delay`` (alias -> seconds to wait before each streamed text chunk: a slow engine).

    Every call is recorded: ``calls`` (Call: alias, request, tenant, stream), ``requests`` (the
    request dicts), ``embeds`` ((alias, texts, tenant)).
    """

    def __init__(
        self,
        *replies: Reply,
        default: Reply = _UNSET,
        structured: Reply = _UNSET,
        cards: Iterable[ModelCard | str] = (),
        roles: dict[str, str] | None = None,
        usage: dict[str, int] | Callable[[dict[str, Any], dict[str, Any]], dict[str, int]] | None = DEFAULT_USAGE,
        embed_dim: int = 64,
        meter: bool = False,
        chunk_delay: dict[str, float] | None = None,
    ) -> None:
        self.queue: deque[Reply] = deque(replies)
        self.default = default
        self.structured = structured
        self.queues: dict[str, deque[Reply]] = {}
        self.standing: dict[str, Reply] = {}
        self.cards = {c.alias: c for c in (card(c) if isinstance(c, str) else c for c in cards)}
        if roles is not None:
            self.deployment = ScriptedRoles(roles)
        self.usage = usage
        self.embed_dim = embed_dim
        self.meter = meter
        self.chunk_delay = dict(chunk_delay or {})
        self.observer: Callable[[CallRecord], None] | None = None
        self.calls: list[Call] = []
        self.embeds: list[tuple[str, list[str], str | None]] = []
        self.closed = False
        self._embedder: Any = None
        self._lock = threading.Lock()

    # -- scripting -----------------------------------------------------------------------------
    def script(self, alias: str, *replies: Reply) -> ScriptedHub:
        """Queue ``replies`` for ``alias`` (answered in order, before the shared queue)."""
        self.queues.setdefault(alias, deque()).extend(replies)
        return self

    def on(self, alias: str, reply: Reply) -> ScriptedHub:
        """The reply ``alias`` gives whenever its queues are empty (a function, a text, an error)."""
        self.standing[alias] = reply
        return self

    def add_card(self, *cards: ModelCard | str) -> ScriptedHub:
        for c in cards:
            c = card(c) if isinstance(c, str) else c
            self.cards[c.alias] = c
        return self

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The request dicts received, in order (chat and stream_chat)."""
        return [c.request for c in self.calls]

    def remaining(self, alias: str | None = None) -> int:
        """Replies still queued for ``alias`` (None: the shared queue)."""
        return len(self.queue if alias is None else self.queues.get(alias, ()))

    # -- ServingHub ----------------------------------------------------------------------------
    def models(self) -> list[ModelCard]:
        return list(self.cards.values())

    def card(self, alias: str) -> ModelCard:
        if alias not in self.cards:
            raise ModelNotFoundError(f"The model `{alias}` does not exist.", param="model")
        return self.cards[alias]

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            response = self._respond(alias, request, tenant, stream=False)
        except BaseException as exc:
            self._report(alias, "chat", tenant, start, status=getattr(exc, "status_code", 500), error=str(exc))
            raise
        usage = response.get("usage") or {}
        self._report(alias, "chat", tenant, start, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        return response

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict[str, Any]]:
        """chat.completion.chunk dicts derived from the reply: its text word by word (whitespace kept),
        its tool calls in one delta, a finish_reason, then a usage chunk (when the hub has usage).
        The reply is worked out (and an error raised) when the stream is opened, not when read."""
        start = time.perf_counter()
        try:
            response = self._respond(alias, request, tenant, stream=True)
        except BaseException as exc:
            self._report(alias, "chat", tenant, start, status=getattr(exc, "status_code", 500), error=str(exc),
                         stream=True)
            raise
        return self._chunks(alias, response, tenant, start)

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        start = time.perf_counter()
        self.embeds.append((alias, list(texts), tenant))
        if self._embedder is None:
            from concierge.shop.search import HashingEmbedder

            self._embedder = HashingEmbedder(self.embed_dim)
        tokens = sum(len(t.split()) for t in texts)
        self._report(alias, "embeddings", tenant, start, tokens, 0)
        return self._embedder(list(texts)).tolist(), tokens

    def close(self) -> None:
        self.closed = True

    def chat_only(self) -> ChatOnly:
        """This hub seen as a bare ``ChatHub`` (only ``chat``): for code that must not see the rest."""
        return ChatOnly(self)

    # -- behaviour -----------------------------------------------------------------------------
    def _next(self, alias: str, request: dict[str, Any]) -> Reply:
        with self._lock:
            if self.structured is not _UNSET and request.get("response_format"):
                return self.structured
            queue = self.queues.get(alias)
            if queue:
                return queue.popleft()
            if self.queue:
                return self.queue.popleft()
        if alias in self.standing:
            return self.standing[alias]
        if self.default is not _UNSET:
            return self.default
        raise AssertionError(f"ScriptedHub: the script has no reply left for {alias!r}")

    def _respond(self, alias: str, request: dict[str, Any], tenant: str | None, stream: bool) -> dict[str, Any]:
        call = Call(alias, copy.deepcopy(request), tenant, stream)
        self.calls.append(call)
        reply = self._next(alias, request)
        while callable(reply) and not (isinstance(reply, type) and issubclass(reply, BaseException)):
            reply = reply(request, call) if _arity(reply) >= 2 else reply(request)
        if isinstance(reply, BaseException) or (isinstance(reply, type) and issubclass(reply, BaseException)):
            raise reply
        if isinstance(reply, dict) and "choices" in reply:
            return reply
        message: dict[str, Any] = {"role": "assistant"}
        if reply is None or isinstance(reply, str):
            message["content"] = reply
        else:
            message.update(reply)
            message.setdefault("content", None)
        response: dict[str, Any] = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": alias,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}
            ],
        }
        usage = self.usage(request, message) if callable(self.usage) else self.usage
        if usage is not None:
            response["usage"] = dict(usage)
        return response

    def _chunks(self, alias: str, response: dict[str, Any], tenant: str | None, start: float) -> Iterator[dict]:
        base = {"id": response.get("id", "chatcmpl-scripted"), "object": "chat.completion.chunk", "created": 0,
                "model": alias}
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        usage = response.get("usage")
        status = 200
        try:
            delay = self.chunk_delay.get(alias, 0.0)
            for piece in re.findall(r"\S+\s*|\s+", str(message.get("content") or "")):
                if delay:
                    time.sleep(delay)
                yield {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            if message.get("tool_calls"):
                calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]}
            finish = choice.get("finish_reason") or "stop"
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            if usage is not None:
                yield {**base, "choices": [], "usage": dict(usage)}
        except GeneratorExit:
            status = 499
            raise
        finally:
            usage = usage or {}
            self._report(alias, "chat", tenant, start, usage.get("prompt_tokens", 0),
                         usage.get("completion_tokens", 0), status=status, stream=True)

    def _report(self, alias: str, endpoint: str, tenant: str | None, start: float, prompt: int = 0,
                completion: int = 0, status: int = 200, error: str | None = None, stream: bool = False) -> None:
        if self.meter and self.observer is not None:
            elapsed = time.perf_counter() - start
            self.observer(CallRecord(alias, endpoint, tenant, prompt, completion, elapsed, elapsed, status, error,
                                     stream))


def _arity(function: Callable[..., Any]) -> int:
    """How many positional arguments ``function`` takes (1 when it cannot be told)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class ChatOnly:
    """A ScriptedHub behind the bare ``ChatHub`` protocol: ``chat`` only (``requests``/``calls`` read through)."""

    def __init__(self, hub: ScriptedHub) -> None:
        self.hub = hub

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return self.hub.chat(alias, request, tenant)

    @property
    def calls(self) -> list[Call]:
        return self.hub.calls

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.hub.requests


# ---------------------------------------------------------------------------------------------
# Configurations of ScriptedHub
# ---------------------------------------------------------------------------------------------
SHOP_REPLY = "Here are a few options from the catalogue."


def shop_cards() -> list[ModelCard]:
    return [
        ModelCard("shop-assistant", "chat", "smollm2-135m-instruct", "llama.cpp", "/models/s.gguf", 8192),
        ModelCard("support-agent", "chat", "smollm2-135m-instruct", "llama.cpp", "/models/s.gguf", 8192),
        ModelCard("embed", "embeddings", "all-minilm-l6-v2", "onnx-embedding", "/models/m.onnx", 256),
    ]


class ShopHub(ScriptedHub):
    """The shop/support API's hub: a canned reply, "found nothing" JSON for every response_format
    request, hashing embeddings, and the three aliases ``concierge serve`` deploys."""

    REPLY = SHOP_REPLY

    def __init__(self, *replies: Reply, **config: Any) -> None:
        config.setdefault("default", self.REPLY)
        config.setdefault("structured", empty_json)
        config.setdefault("cards", shop_cards())
        super().__init__(*replies, **config)


def shop_hub(*replies: Reply, **config: Any) -> ShopHub:
    """A ScriptedHub configured as the shop/support API's hub (see ShopHub)."""
    return ShopHub(*replies, **config)
