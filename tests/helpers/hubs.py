"""Fake hubs with the ``concierge.models.engine.Hub`` contract, shared by the test modules.

``GatewayHub`` is the gateway tests' hub (aliases that are slow, down, boom, flaky; a small context);
``ShopHub`` is the shop/support API tests' hub (canned replies, "found nothing" JSON, hashing
embeddings).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
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
# A deterministic hub
# ---------------------------------------------------------------------------------------------
def _empty(schema: dict[str, Any]) -> Any:
    """The emptiest value a JSON schema allows (a model that "found nothing" in the message)."""
    if "enum" in schema:
        return None if None in schema["enum"] else schema["enum"][0]
    kind = schema.get("type", "object")
    kinds = kind if isinstance(kind, list) else [kind]
    if "null" in kinds:
        return None
    if "object" in kinds:
        props = schema.get("properties", {})
        return {name: _empty(props[name]) for name in schema.get("required", list(props))}
    if "array" in kinds:
        return []
    if "string" in kinds:
        return ""
    if "boolean" in kinds:
        return False
    return 0


class ShopHub:
    """The shop/support API tests' hub: canned chat answers, JSON-schema answers with nothing in them, hashing embeddings."""

    REPLY = "Here are a few options from the catalogue."

    def __init__(self) -> None:
        from concierge.shop.search import HashingEmbedder

        self.observer = None
        self.calls: list[tuple[str, str | None]] = []
        self._embed = HashingEmbedder(64)
        self.cards = [
            ModelCard("shop-assistant", "chat", "smollm2-135m-instruct", "llama.cpp", "/models/s.gguf", 8192),
            ModelCard("support-agent", "chat", "smollm2-135m-instruct", "llama.cpp", "/models/s.gguf", 8192),
            ModelCard("embed", "embeddings", "all-minilm-l6-v2", "onnx-embedding", "/models/m.onnx", 256),
        ]

    def models(self) -> list[ModelCard]:
        return list(self.cards)

    def card(self, alias: str) -> ModelCard:
        from concierge.models.engine import ModelNotFoundError

        for card in self.cards:
            if card.alias == alias:
                return card
        raise ModelNotFoundError(f"The model `{alias}` does not exist.")

    def _content(self, request: dict[str, Any]) -> str:
        fmt = request.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(_empty((fmt.get("json_schema") or {}).get("schema") or {}))
        if fmt.get("type") == "json_object":
            return "{}"
        return self.REPLY

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        self.calls.append((alias, tenant))
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": alias,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self._content(request)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        self.calls.append((alias, tenant))
        words = self._content(request).split(" ")
        for i, word in enumerate(words):
            text = word if i == len(words) - 1 else word + " "
            yield {"id": "c", "object": "chat.completion.chunk", "model": alias,
                   "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield {"id": "c", "object": "chat.completion.chunk", "model": alias,
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {"id": "c", "object": "chat.completion.chunk", "model": alias, "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}}

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        return self._embed(list(texts)).tolist(), sum(len(t.split()) for t in texts)

    def close(self) -> None:
        pass
