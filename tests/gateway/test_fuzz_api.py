"""Property-based fuzzing of the assembled app with schemathesis: no input may produce a 5xx.

The app is :func:`concierge.server.build_app` as ``concierge serve`` assembles it: the gateway's
model routes, the shop and support APIs (``/v1/shop/*``, ``/v1/support/chat``) and the web app,
over a deterministic fake hub, a small generated demo store and the homestay support desk (guided,
rules only), served live on loopback.

The handlers read raw request bodies (to answer OpenAI-style errors), so:

- the shop and support routes declare their request models with ``openapi_extra`` and the app's
  own document describes them; chat completions and embeddings get theirs added here from
  ``concierge.gateway.{chat,embeddings}.protocol``;
- the web app's routes are browser endpoints kept out of the document (``include_in_schema=False``):
  they are added here from the app's routes, POSTs with the form fields their handlers read, and
  every POST is sent with this site's ``Origin`` so cases get past the cross-site check to the
  handler (plus a visitor and an operator cookie, so the console's routes are reached too).

Each case may also name the live shop or support conversation (so turns continue, hand off and
are taken over) and start its message with a drawn phrase the shop and support rules react to
(ids, emails, dates, money, NUL). Checks: ``not_a_server_error`` and, where a response is declared,
``response_schema_conformance``; ``/v1`` errors must be OpenAI-style bodies; a web page must not
say "went wrong on our side" (an unexpected error the handler caught). Cases are derandomized
(a failure reproduces).
``CONCIERGE_FUZZ_EXAMPLES=N`` multiplies the examples per operation for a longer run
(``scripts/fuzz_api.sh``). Needs ``schemathesis`` (skipped without it).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the gateway")

from fastapi.routing import APIRoute  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from concierge import tenancy  # noqa: E402
from concierge.gateway.chat.protocol import ChatCompletionRequest  # noqa: E402
from concierge.gateway.completions.protocol import CompletionRequest  # noqa: E402
from concierge.gateway.embeddings.protocol import EmbeddingRequest  # noqa: E402
from concierge.gateway.messages.protocol import CountTokensRequest, MessagesRequest  # noqa: E402
from concierge.gateway.responses.protocol import ResponsesRequest  # noqa: E402
from concierge.gateway.settings import GatewaySettings  # noqa: E402
from concierge.gateway.tokenize.protocol import DetokenizeRequest, TokenizeRequest  # noqa: E402
from concierge.models.hub import ModelCard  # noqa: E402
from concierge.server import build_app, build_demo_services, build_services  # noqa: E402
from concierge.web import security  # noqa: E402

ALIASES = ("tiny", "embed")  # what chat completions and embeddings are fuzzed with
N_PRODUCTS, N_SHOPPERS, SEED = 60, 10, 7
SECRET = b"fuzz-cookie-secret-0123456789abcdef"
SCALE = max(1, int(os.environ.get("CONCIERGE_FUZZ_EXAMPLES", "1") or 1))
WEB_FORM = "application/x-www-form-urlencoded"
TEXT = {"type": "string", "maxLength": 300}

# The form fields each web POST reads (``form_text``/``after_of`` in web/routes.py).
WEB_FORMS: dict[str, dict[str, Any]] = {
    "/ui/shop/chat": {"message": TEXT, "query": TEXT, "price_min": TEXT, "price_max": TEXT},
    "/ui/shop/similar": {"product_id": TEXT, "title": TEXT},
    "/ui/shop/reset": {},
    "/ui/support/chat": {"message": TEXT, "after": {"type": "integer"}},
    "/ui/support/handoff": {"after": {"type": "integer"}},
    "/ui/support/reset": {},
    "/console/login": {"api_key": TEXT},
    "/console/logout": {},
    "/console/conversations/{conversation_id}/take-over": {},
    "/console/conversations/{conversation_id}/reply": {"message": TEXT},
    "/console/conversations/{conversation_id}/hand-back": {},
}
WEB_QUERIES: dict[str, dict[str, Any]] = {"/ui/support/updates": {"after": {"type": "integer"}}}
# What the shop's query parser and the support desk's rules react to (ids, emails, dates, money,
# sizes): random text seldom spells them, so a drawn one of these is put in front of a message.
PHRASES = (
    "I'm maya.okafor@example.com", "lucas.moreau@example.com cancel reservation HS10002, I found another place",
    "change the dates of HS10001 to 2025-13-45 and 2025-02-30", "move HS10003 to 2031-01-10 2029-01-01",
    "I want 999 percent back, $99999999999999999999.99, on my credit card", "yes", "no", "yes please do it",
    "the wifi was broken and it was dirty, refund 50%", "I want to talk to a human", "HS99999 details",
    "running shoes under $0", "red shoes size 99999999999999999999 under $1e308", "between $100 and $5",
    "women's jackets under 20 dollars, not blue, no leather", "something like P000001 but cheaper", "cheaper",
    "a NUL \x00 in the text",  # PostgreSQL refuses it (random text seldom has one)
)


# ---------------------------------------------------------------------------------------------
# A deterministic hub for every alias the app uses
# ---------------------------------------------------------------------------------------------
def _empty(schema: dict[str, Any]) -> Any:
    """The emptiest value a JSON schema allows (a model that "found nothing" in the message)."""
    if "enum" in schema:
        return None if None in schema["enum"] else schema["enum"][0]
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "null" in kinds:
        return None
    if "object" in kinds:
        props = schema.get("properties", {})
        return {name: _empty(props[name]) for name in schema.get("required", list(props))}
    return [] if "array" in kinds else "" if "string" in kinds else False if "boolean" in kinds else 0


class FuzzHub:
    """The ModelHub contract: canned text, empty structured answers, hashing embeddings."""

    REPLY = "Here are a few options from the catalogue."

    def __init__(self) -> None:
        from concierge.shop.search import HashingEmbedder

        self.observer = None
        self._embed = HashingEmbedder(64)
        self.cards = [
            ModelCard("tiny", "chat", "tiny-test", "fake", "/models/tiny.gguf", 8192),
            ModelCard("shop-assistant", "chat", "tiny-test", "fake", "/models/s.gguf", 8192),
            ModelCard("support-agent", "chat", "tiny-test", "fake", "/models/s.gguf", 8192),
            ModelCard("embed", "embeddings", "all-minilm-l6-v2", "fake", "/models/m.onnx", 256),
        ]

    def models(self) -> list[ModelCard]:
        return list(self.cards)

    def card(self, alias: str) -> ModelCard:
        from concierge.models.engine import ModelNotFoundError

        for card in self.cards:
            if card.alias == alias:
                return card
        raise ModelNotFoundError(f"The model `{alias}` does not exist.", param="model")

    def _content(self, request: dict[str, Any]) -> str:
        fmt = request.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(_empty((fmt.get("json_schema") or {}).get("schema") or {}))
        return "{}" if fmt.get("type") == "json_object" else self.REPLY

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fuzz", "object": "chat.completion", "created": int(time.time()), "model": alias,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self._content(request)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        base = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": 0, "model": alias}
        words = self._content(request).split(" ")
        for i, word in enumerate(words):
            text = word if i == len(words) - 1 else word + " "
            yield {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(words),
                                                "total_tokens": 5 + len(words)}}

    def complete(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-fuzz", "object": "text_completion", "created": int(time.time()), "model": alias,
            "choices": [{"index": 0, "text": self.REPLY, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }

    def stream_complete(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        base = {"id": "cmpl-fuzz", "object": "text_completion", "created": 0, "model": alias}
        yield {**base, "choices": [{"index": 0, "text": self.REPLY, "finish_reason": None, "logprobs": None}]}
        yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}

    def tokenize(self, alias: str, text: str, add_special: bool = True) -> list[int]:
        return [len(word) for word in str(text).split()]

    def detokenize(self, alias: str, tokens: list[int]) -> str:
        return " ".join("x" * max(1, int(t) % 12) for t in tokens)

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        return self._embed(list(texts)).tolist(), sum(len(t.split()) for t in texts)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The OpenAPI document fuzzed: the app's own, plus the bodies and routes it leaves out
# ---------------------------------------------------------------------------------------------
def _demo_ids() -> tuple[list[str], list[str]]:
    """Some product and shopper ids of the demo store the live app serves (same seed and size)."""
    from concierge.shop.demo_store import generate_demo_store

    products, events = generate_demo_store(seed=SEED, n_products=N_PRODUCTS, n_shoppers=N_SHOPPERS)
    shoppers = sorted({str(e["user"]) for e in events})
    return [str(p["id"]) for p in products[:5]], shoppers[:3]


def _nullable_enum(values: list[str]) -> dict[str, Any]:
    return {"anyOf": [{"enum": values}, {"type": "null"}]} if values else {"type": "null"}


def _body_schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema(ref_template="#/components/schemas/{model}"))
    components.update(schema.pop("$defs", {}))
    props = schema["properties"]
    # Served aliases, so valid cases reach the hub (unknown names: the path operation and negative cases).
    props["model"] = {"enum": list(ALIASES)}
    if "n" in props:  # the gateway serves one choice; the model says only ge=1
        props["n"] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1}, {"type": "null"}]}
    return schema


def _narrow_demo(spec: dict[str, Any]) -> None:
    """Valid shop and support cases name what the demo serves, so they get past the 404s to the answer."""
    products, shoppers = _demo_ids()
    for path in ("/v1/shop/chat", "/v1/shop/similar", "/v1/shop/complete-the-look", "/v1/support/chat"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        props = body["properties"]
        if "catalog" in props:
            props["catalog"] = _nullable_enum(["demo"])
        if "shopper_id" in props:
            props["shopper_id"] = _nullable_enum(shoppers)
        if "product_id" in props:
            props["product_id"] = {"enum": products + ["NO-SUCH-PRODUCT"]}
        if "domain" in props:
            props["domain"] = _nullable_enum(["homestay"])


def _web_operations(app: Any) -> dict[str, dict[str, Any]]:
    """The web app's routes (hidden from the document) as OpenAPI operations: forms, queries, path params."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.include_in_schema:
            continue
        path = route.path_format
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in route.param_convertors
        ] + [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in WEB_QUERIES.get(path, {}).items()
        ]
        for method in sorted(route.methods - {"HEAD"}):
            operation: dict[str, Any] = {"responses": {"default": {"description": "an HTML page or fragment"}}}
            if parameters:
                operation["parameters"] = parameters
            if method == "POST":
                if path not in WEB_FORMS:
                    raise LookupError(f"web POST {path}: add the form fields it reads to WEB_FORMS")
                fields = WEB_FORMS[path]
                operation["requestBody"] = {"required": True, "content": {WEB_FORM: {"schema": {
                    "type": "object", "properties": fields, "additionalProperties": False}}}}
            paths.setdefault(path, {})[method.lower()] = operation
    return paths


# The gateway's model endpoints read raw bodies: their request models, added to the document here.
BODIES = (
    ("/v1/chat/completions", ChatCompletionRequest),
    ("/v1/embeddings", EmbeddingRequest),
    ("/v1/completions", CompletionRequest),
    ("/v1/responses", ResponsesRequest),
    ("/v1/messages", MessagesRequest),
    ("/v1/messages/count_tokens", CountTokensRequest),
    ("/tokenize", TokenizeRequest),
    ("/detokenize", DetokenizeRequest),
)


def _openapi(app: Any) -> dict[str, Any]:
    spec = copy.deepcopy(app.openapi())
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, model in BODIES:
        spec["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(model, components)}},
        }
    _narrow_demo(spec)
    for path, operations in _web_operations(app).items():
        spec["paths"].setdefault(path, {}).update(operations)
    return spec


def _collection_app() -> Any:
    """The assembled app, for its routes and document only (nothing is served or stored by it)."""
    hub = FuzzHub()
    services = build_services(hub)
    services.secret = SECRET
    return build_app(hub, services=services)


APP_SPEC = _openapi(_collection_app())
OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(APP_SPEC).get_all_operations()]


def _has_body_or_query(op: Any) -> bool:
    """Whether a negative case can be made: a body with fields, or query parameters (path parameters
    are any non-empty string, so nothing violates them)."""
    if any(p.get("in") == "query" for p in op.definition.raw.get("parameters", [])):
        return True
    body = op.definition.raw.get("requestBody", {}).get("content", {})
    return any(set(media.get("schema", {})) & {"properties", "$ref", "anyOf"} for media in body.values())


def _examples(op: Any) -> int:
    if op.path.startswith("/v1/") and op.method.upper() == "POST":
        return 25 * SCALE  # the bodies that matter most
    return (12 if _has_body_or_query(op) or "{" in op.path else 4) * SCALE


CASES = [(op, schemathesis.GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, schemathesis.GenerationMode.NEGATIVE) for op in OPERATIONS if _has_body_or_query(op)
]


# ---------------------------------------------------------------------------------------------
# The live app
# ---------------------------------------------------------------------------------------------
class Live:
    def __init__(self, url: str, key: str, cookies: dict[str, str]) -> None:
        self.url = url
        self.key = key
        self.cookies = cookies
        # The visitor's conversations (the demo tenant's, as the API key's): {"shop": id, "support": id}.
        self.conversations = security.unsign(cookies["concierge_visitor"], SECRET, "visitor") or {}

    def resolve(self, case: Any) -> None:
        """Name the live conversation (the shop's on shop routes, else support's) where the case names one."""
        kind = "shop" if case.path.startswith("/v1/shop/") else "support"
        if isinstance(case.body, dict) and isinstance(case.body.get("conversation_id"), str):
            case.body["conversation_id"] = self.conversations[kind]
        if "conversation_id" in (case.path_parameters or {}):
            case.path_parameters["conversation_id"] = self.conversations[kind]


@pytest.fixture(scope="module")
def live(isolated_home: Path, live_server: Any) -> Live:
    hub = FuzzHub()
    services = build_demo_services(hub, n_products=N_PRODUCTS, n_shoppers=N_SHOPPERS, use_model=False, warm=False)
    services.secret = SECRET
    app = build_app(hub, GatewaySettings(max_body_bytes=64 * 1024), services=services)
    server = live_server(app)
    key = tenancy.create_key("demo").key
    operator_key = tenancy.create_key("ops", scope="operator").key
    # A visitor with a shop and a support conversation, and a logged-in operator: the cookies every
    # case sends, so the handlers behind them (history, handoff, console actions) are reached.
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30) as browser:
        assert browser.post("/ui/support/chat", data={"message": "hello", "after": "0"}).status_code == 303
        for line in browser.post("/ui/shop/chat", data={"message": "running shoes"}).iter_lines():
            assert json.loads(line)["type"] != "error", line
        assert browser.post("/console/login", data={"api_key": operator_key}).status_code == 303
        cookies = dict(browser.cookies)
    assert {"concierge_visitor", "concierge_operator"} <= set(cookies)
    live = Live(server.url, key, cookies)
    assert set(live.conversations) == {"shop", "support"}
    return live


def test_every_route_of_the_app_is_fuzzed() -> None:
    """A new route (gateway, shop, support or web) is fuzzed too, or this fails."""
    app = _collection_app()
    fuzzed = {(op.method.upper(), op.path) for op in OPERATIONS}
    routes = {(method, route.path_format) for route in app.routes if isinstance(route, APIRoute)
              for method in route.methods - {"HEAD"}}
    assert routes <= fuzzed, sorted(routes - fuzzed)
    assert {"/v1/shop/chat", "/v1/support/chat", "/ui/shop/chat", "/console/login"} <= {p for _, p in fuzzed}


def test_the_apps_document_describes_the_shop_and_support_bodies() -> None:
    paths = _collection_app().openapi()["paths"]
    for path, field in (("/v1/shop/chat", "message"), ("/v1/shop/similar", "product_id"),
                        ("/v1/shop/complete-the-look", "k"), ("/v1/support/chat", "mode")):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert field in body["content"]["application/json"]["schema"]["properties"], path
        assert "application/json" in paths[path]["post"]["responses"]["200"]["content"], path


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label} {m.value}" for op, m in CASES])
def test_no_input_gives_a_server_error(operation: Any, mode: Any, live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}", "Origin": live.url}
    checked: list[int] = []

    @settings(
        max_examples=_examples(operation),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run: a failure here is reproducible
        database=None,
    )
    @given(case=operation.as_strategy(mode), real_conversation=st.booleans(),
           phrase=st.none() | st.sampled_from(PHRASES))
    def run(case: Any, real_conversation: bool, phrase: str | None) -> None:
        if real_conversation:  # continue, hand off, take over ... a real conversation, not only unknown ids
            live.resolve(case)
        if phrase and isinstance(case.body, dict) and isinstance(case.body.get("message"), str):
            case.body["message"] = f"{phrase} {case.body['message']}"[:300]
        response = case.call(base_url=live.url, headers=headers, cookies=live.cookies, timeout=30,
                             allow_redirects=False)
        where = f"{case.method} {case.formatted_path} body={str(case.body)[:200]!r}"
        assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance],
                               headers=headers)
        if case.path.startswith("/v1/messages") and response.status_code >= 400:
            body = response.json()  # Anthropic's error shape: no param, no code
            assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"], where
        elif (case.path.startswith("/v1") or case.path.endswith("tokenize")) and response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], where
        if not case.path.startswith("/v1"):
            # The Origin check let the case through to the handler.
            assert "Cross-site request refused" not in response.text, where
            # The web handlers catch what they did not expect and say so with a 200 (a 5xx in disguise).
            assert "went wrong on our side" not in response.text, f"{where} -> {response.text[:300]}"
        checked.append(response.status_code)

    run()
    assert checked  # cases were generated and sent
    if mode == schemathesis.GenerationMode.POSITIVE and operation.path.startswith("/v1/") \
            and "requestBody" in operation.definition.raw:
        assert 200 in checked, checked  # valid cases got past validation to the answer, not only 4xx


def test_app_survives_the_fuzzing(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    chat = httpx.post(live.url + "/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "still there?"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    shop = httpx.post(live.url + "/v1/shop/chat", headers=headers, timeout=30, json={"message": "a jacket"})
    assert shop.status_code == 200 and shop.json()["object"] == "shop.answer"
    support = httpx.post(live.url + "/v1/support/chat", headers=headers, timeout=30, json={"message": "hello"})
    assert support.status_code == 200 and support.json()["object"] == "support.turn"
    page = httpx.get(live.url + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text


# ---------------------------------------------------------------------------------------------
# Regressions: inputs the fuzzing found
# ---------------------------------------------------------------------------------------------
HUGE_ID = "9" * 30  # over the id column (SQLite: 64 bits, PostgreSQL: 32)


def test_huge_after_id_is_no_server_error(live: Live) -> None:
    """``GET /ui/support/updates?after=<30 nines>`` was a 500 (SQLite OverflowError; PostgreSQL "integer out of
    range" from 2**31 on); ``after`` is now clamped to the id column's range: no new messages (204)."""
    with httpx.Client(base_url=live.url, headers={"Origin": live.url}, cookies=live.cookies, timeout=30) as web:
        for after in (HUGE_ID, str(2**31), str(2**63)):
            assert web.get("/ui/support/updates", params={"after": after}).status_code == 204, after
        chat = web.post("/ui/support/chat", data={"message": "hello again", "after": HUGE_ID},
                        headers={"HX-Request": "true"})
        assert chat.status_code == 200 and "something went wrong" not in chat.text
        handoff = web.post("/ui/support/handoff", data={"after": "-" + HUGE_ID}, headers={"HX-Request": "true"})
        assert handoff.status_code == 200


def test_nul_in_a_message_or_id_is_a_400(live: Live) -> None:
    """A NUL (``"shoes\\x00"``, conversation id ``"a\\x00"``) was a 500 under PostgreSQL (it refuses NUL in text
    and JSON) and was stored under SQLite; now a 400 naming the field."""
    headers = {"Authorization": f"Bearer {live.key}"}
    for path, body, param in (
        ("/v1/shop/chat", {"message": "shoes\x00"}, "message"),
        ("/v1/shop/chat", {"message": "cheaper\x00", "conversation_id": live.conversations["shop"]}, "message"),
        ("/v1/shop/chat", {"message": "shoes", "conversation_id": "a\x00"}, "conversation_id"),
        ("/v1/support/chat", {"message": "hi\x00there"}, "message"),
        ("/v1/support/chat", {"message": "yes\x00", "conversation_id": live.conversations["support"]}, "message"),
        ("/v1/support/chat", {"message": "hi", "conversation_id": "a\x00"}, "conversation_id"),
    ):
        response = httpx.post(live.url + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["param"] == param, (path, body)


def test_nul_in_the_web_forms_and_console_ids_is_no_server_error(live: Live) -> None:
    """Web forms drop NUL (``message="hi\\x00"``: was "went wrong on our side" under PostgreSQL); a console id
    with NUL (``/console/conversations/a%00b``: was a 500 under PostgreSQL) is no such conversation (404)."""
    with httpx.Client(base_url=live.url, headers={"Origin": live.url, "HX-Request": "true"}, cookies=live.cookies,
                      timeout=30) as web:
        chat = web.post("/ui/support/chat", data={"message": "hi\x00", "after": "0"})
        assert chat.status_code == 200 and "went wrong" not in chat.text
        # A new visitor's chat (the fixture's may have reached its length limit in a long fuzz run).
        fresh = httpx.post(live.url + "/ui/shop/chat", data={"message": "boots\x00"}, timeout=30,
                           headers={"Origin": live.url})
        lines = [json.loads(line) for line in fresh.iter_lines()]
        assert lines and all(line["type"] != "error" for line in lines), lines
        reply = web.post(f"/console/conversations/{live.conversations['support']}/reply", data={"message": "x\x00"})
        assert reply.status_code == 200 and "went wrong" not in reply.text
        assert web.get("/console/conversations/a%00b").status_code == 404
        assert web.get("/console/conversations/a%00b/messages").status_code == 404
        for action in ("take-over", "reply", "hand-back"):
            assert web.post(f"/console/conversations/a%00b/{action}", data={"message": "x"}).status_code == 404


def test_impossible_report_names_are_404(live: Live) -> None:
    """``/console/reports/<300 a's>.json`` was a 500 (OSError: file name too long) and ``/console/reports/a%00b.json``
    reset the connection (ValueError: embedded null byte); both are no such report (404)."""
    with httpx.Client(base_url=live.url, cookies=live.cookies, timeout=30) as console:
        for name in ("a" * 300 + ".json", "a%00b.json", "x/" * 2000 + "r.md"):
            response = console.get(f"/console/reports/{name}")
            assert response.status_code == 404 and response.text == "No such report.", name[:40]
        assert console.get("/console/reports/../../etc/passwd").status_code == 404


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/shop/chat", "/v1/support/chat"])
def test_deeply_nested_json_is_a_400(live: Live, path: str) -> None:
    """A body of 50,000 ``[`` (under the size limit) made ``json.loads`` raise RecursionError: it was a 500."""
    response = httpx.post(live.url + path, content=b"[" * 50_000, timeout=30,
                          headers={"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
