"""The shop and support JSON API (``/v1/shop/*``, ``/v1/support/chat``) with the gateway's own auth.

The app is the real gateway app with the real shop assistant, search index and support session,
over ``FakeHub`` (the ModelHub contract with deterministic answers and hashing embeddings), on a
small generated demo store in a temporary ``CONCIERGE_HOME``. Support runs in guided mode with the
rule-based extractor only, so every turn is deterministic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from concierge import tenancy
from concierge.store import db
from helpers.apps import build_app
from helpers.hubs import ShopHub as FakeHub


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("concierge-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        db.reset_engines()
        yield path
        db.reset_engines()


@pytest.fixture(scope="module")
def api(home: Path) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str], Any]]:
    """(client, headers of a demo-tenant key, headers of another tenant's key, the WebServices)."""
    hub = FakeHub()
    app, services = build_app(hub)
    demo = tenancy.create_key("demo").key
    other = tenancy.create_key("other-shop").key
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {demo}"}, {"Authorization": f"Bearer {other}"}, services


def _a_shopper() -> str:
    from concierge.shop.catalog import load_interactions

    return load_interactions(None, "demo", "demo")[0].user


# ---------------------------------------------------------------------------------------------
# Auth and malformed requests
# ---------------------------------------------------------------------------------------------
ROUTES = [
    ("/v1/shop/chat", {"message": "running shoes"}),
    ("/v1/shop/similar", {"product_id": "P000001"}),
    ("/v1/shop/complete-the-look", {"product_id": "P000001"}),
    ("/v1/support/chat", {"message": "hello"}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_routes_refuse_missing_and_bad_keys(api, path: str, body: dict) -> None:
    client, *_ = api
    missing = client.post(path, json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post(path, json=body, headers={"Authorization": "Bearer ck-not-a-real-key"})
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/v1/shop/chat", b"", None),
        ("/v1/shop/chat", b"{not json", None),
        ("/v1/shop/chat", b"[1, 2]", None),
        ("/v1/shop/chat", b'{"conversation_id": "abc"}', "message"),
        ("/v1/shop/chat", b'{"message": ""}', "message"),
        ("/v1/shop/chat", b'{"message": "hi", "conversation": "typo"}', "conversation"),
        ("/v1/shop/chat", b'{"message": "hi", "catalog": "../etc"}', "catalog"),
        ("/v1/shop/similar", b'{"product_id": "P000001", "k": 0}', "k"),
        ("/v1/shop/complete-the-look", b'{"k": 3}', "product_id"),
        ("/v1/support/chat", b'{"message": "hi", "mode": "freestyle"}', "mode"),
        ("/v1/support/chat", b'{"message": "   "}', "message"),
        ("/v1/support/chat", b'{"message": "hi", "domain": "casino"}', "domain"),
    ],
)
def test_malformed_requests_are_400(api, path: str, raw: bytes, param: str | None) -> None:
    client, headers, *_ = api
    response = client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


# ---------------------------------------------------------------------------------------------
# Shop
# ---------------------------------------------------------------------------------------------
def test_shop_chat_answers_with_products_and_continues_by_id(api) -> None:
    from concierge.store.conversations import ShopConversations

    client, headers, *_ = api
    first = client.post("/v1/shop/chat", json={"message": "I need running shoes"}, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "shop.answer"
    assert body["message"]
    assert "state" not in body  # the assistant's state stays on the server
    assert body["products"], "the demo store has shoes: the answer must show some"
    for product in body["products"]:
        assert {"id", "product_id", "title", "price"} <= set(product)
    conversation_id = body["conversation_id"]

    second = client.post(
        "/v1/shop/chat", json={"message": "something cheaper", "conversation_id": conversation_id}, headers=headers
    )
    assert second.status_code == 200, second.text
    assert second.json()["conversation_id"] == conversation_id
    state = ShopConversations().load(conversation_id, "demo")
    assert [m["role"] for m in state["messages"]] == ["user", "assistant", "user", "assistant"]
    assert state["messages"][2]["content"] == "something cheaper"
    assert state["version"] == 2


def test_shop_chat_query_is_editable_filters(api) -> None:
    """The answer's ``query`` is what was understood; sent back edited (a filter removed), the search runs
    again with exactly those filters, in the same conversation."""
    from concierge.shop.catalog import load_catalog
    from concierge.store.conversations import ShopConversations

    client, headers, *_ = api
    catalog = load_catalog(None, "demo", "demo")
    first = client.post("/v1/shop/chat", json={"message": "sneakers under $60 please"}, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["query"]["price_max"] == 60 and body["query"]["category"]
    assert body["products"] and body["alternatives"] == []
    for card in body["products"]:
        assert card["price"] <= 60 and card["match"] == "exact" and card["unmet"] == []
        assert "under $60" in card["meets"]  # each card says which constraint it meets
        assert "sneakers" in card["meets"]
    # Remove the price filter: the same category, now with cards over the old budget where the catalogue has them.
    edited = {**body["query"], "price_max": None}
    second = client.post(
        "/v1/shop/chat", json={"conversation_id": body["conversation_id"], "query": edited}, headers=headers
    )
    assert second.status_code == 200, second.text
    again = second.json()
    assert again["conversation_id"] == body["conversation_id"]
    assert again["query"]["price_max"] is None and again["query"]["category"] == body["query"]["category"]
    pricier = [
        v for p in catalog.products if p.category.endswith("Sneakers") for v in p.variants if v.in_stock and v.price > 60
    ]
    assert pricier, "the test store has sneakers over $60"
    assert any(c["price"] > 60 for c in again["products"]), [c["price"] for c in again["products"]]
    assert all(c["category"].endswith("Sneakers") for c in again["products"])
    assert all(not any(m.startswith("under $") for m in c["meets"]) for c in again["products"])
    state = ShopConversations().load(body["conversation_id"], "demo")
    assert state["messages"][2]["content"] == "(changed the filters)"
    # Change a filter: a price floor the shopper typed.
    third = client.post(
        "/v1/shop/chat",
        json={"conversation_id": body["conversation_id"], "message": "from $70", "query": {**edited, "price_min": 70}},
        headers=headers,
    )
    assert third.status_code == 200, third.text
    assert third.json()["products"] and all(c["price"] >= 70 for c in third.json()["products"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": {"price_max": "cheap"}}, "query"),
        ({"query": {"colour": ["red"]}}, "query"),
        ({"message": "  "}, None),
        ({}, None),
    ],
)
def test_shop_chat_refuses_bad_edited_queries(api, body: dict, param: str | None) -> None:
    client, headers, *_ = api
    response = client.post("/v1/shop/chat", json=body, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_shop_chat_unknown_ids_are_404(api) -> None:
    client, headers, other, _ = api
    unknown_catalog = client.post("/v1/shop/chat", json={"message": "shoes", "catalog": "nope"}, headers=headers)
    assert unknown_catalog.status_code == 404
    assert unknown_catalog.json()["error"]["code"] == "catalog_not_found"

    unknown_shopper = client.post(
        "/v1/shop/chat", json={"message": "shoes", "shopper_id": "nobody-123"}, headers=headers
    )
    assert unknown_shopper.status_code == 404
    assert unknown_shopper.json()["error"]["code"] == "shopper_not_found"

    known = client.post("/v1/shop/chat", json={"message": "shoes", "shopper_id": _a_shopper()}, headers=headers)
    assert known.status_code == 200, known.text

    unknown_conversation = client.post(
        "/v1/shop/chat", json={"message": "more", "conversation_id": "0" * 32}, headers=headers
    )
    assert unknown_conversation.status_code == 404
    assert unknown_conversation.json()["error"]["code"] == "conversation_not_found"

    # Another tenant neither sees the demo catalogue nor continues the demo tenant's conversation.
    theirs = client.post("/v1/shop/chat", json={"message": "shoes"}, headers=other)
    assert theirs.status_code == 404
    stolen = client.post(
        "/v1/shop/chat", json={"message": "more", "conversation_id": known.json()["conversation_id"]}, headers=other
    )
    assert stolen.status_code == 404


def test_shop_similar_and_complete_the_look(api) -> None:
    client, headers, *_ = api
    products = client.post("/v1/shop/chat", json={"message": "a jacket"}, headers=headers).json()["products"]
    product_id = products[0]["product_id"]
    for path in ("/v1/shop/similar", "/v1/shop/complete-the-look"):
        response = client.post(path, json={"product_id": product_id, "k": 4}, headers=headers)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert 0 < len(data) <= 4
        assert all(p["product_id"] != product_id for p in data)
        missing = client.post(path, json={"product_id": "NO-SUCH-PRODUCT"}, headers=headers)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "product_not_found"


def test_shop_chat_streams_deltas_then_the_answer(api) -> None:
    client, headers, *_ = api
    events = []
    with client.stream("POST", "/v1/shop/chat", json={"message": "boots", "stream": True}, headers=headers) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert parsed[-1]["type"] == "answer"
    assert parsed[-1]["conversation_id"]
    deltas = "".join(e["content"] for e in parsed if e["type"] == "delta")
    assert deltas.strip(), "the stream sends text before the final answer"


def test_shop_answers_503_while_its_index_is_being_built(api, monkeypatch: pytest.MonkeyPatch) -> None:
    client, headers, _, services = api
    factory = services.shop.assistants
    building, release = threading.Event(), threading.Event()
    real_build = factory._build

    def slow_build(tenant: str, catalog: str) -> Any:
        building.set()
        release.wait(30)
        return real_build(tenant, catalog)

    monkeypatch.setattr(factory, "_build", slow_build)
    factory.forget("demo", "demo")
    warmer = threading.Thread(target=factory, args=("demo", "demo"))
    warmer.start()
    try:
        assert building.wait(10)
        busy = client.post("/v1/shop/chat", json={"message": "shoes"}, headers=headers)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "warming_up"
        assert busy.headers["retry-after"].isdigit()
    finally:
        release.set()
        warmer.join(30)
    assert client.post("/v1/shop/chat", json={"message": "shoes"}, headers=headers).status_code == 200


# ---------------------------------------------------------------------------------------------
# Support
# ---------------------------------------------------------------------------------------------
def test_support_chat_confirms_before_cancelling(api) -> None:
    client, headers, other, _ = api
    first = client.post(
        "/v1/support/chat",
        json={"message": "Please cancel reservation HS10002, I found another place. I'm lucas.moreau@example.com"},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "support.turn"
    assert body["status"] == "open"
    assert body["confirm"] is True, body["message"]
    assert "cancel_reservation" not in [a.get("tool") for a in body["actions"]]
    conversation_id = body["conversation_id"]

    # Another tenant cannot answer the confirmation.
    assert client.post(
        "/v1/support/chat", json={"message": "yes", "conversation_id": conversation_id}, headers=other
    ).status_code == 404

    yes = client.post("/v1/support/chat", json={"message": "yes", "conversation_id": conversation_id}, headers=headers)
    assert yes.status_code == 200
    after = yes.json()
    assert after["conversation_id"] == conversation_id
    assert after["confirm"] is False
    assert "cancel_reservation" in [a.get("tool") for a in after["actions"]]
    assert "cancelled" in after["message"]


def test_support_chat_hands_off_and_unknown_ids(api) -> None:
    client, headers, *_ = api
    turn = client.post("/v1/support/chat", json={"message": "I want to talk to a human please"}, headers=headers)
    assert turn.status_code == 200
    assert turn.json()["status"] == "handoff"
    later = client.post(
        "/v1/support/chat", json={"message": "hello?", "conversation_id": turn.json()["conversation_id"]},
        headers=headers,
    )
    assert later.json()["status"] == "handoff"
    missing = client.post("/v1/support/chat", json={"message": "hi", "conversation_id": "f" * 32}, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"


def test_shop_and_support_turns_queue_on_their_model_and_answer_429_when_full(home: Path) -> None:
    from concierge.gateway.app import create_app
    from concierge.gateway.settings import GatewaySettings
    from concierge.server import mount_all

    _, services = build_app(FakeHub())
    app = create_app(services.hub, GatewaySettings(max_concurrent=1, max_queued=0))
    mount_all(app, services)
    headers = {"Authorization": f"Bearer {tenancy.create_key('demo').key}"}
    with TestClient(app) as client:
        held = [client.portal.call(app.state.limits.admit, "someone", alias)
                for alias in ("shop-assistant", "support-agent")]
        shop = client.post("/v1/shop/chat", headers=headers, json={"message": "running shoes"})
        support = client.post("/v1/support/chat", headers=headers, json={"message": "hello"})
        for response in (shop, support):
            assert response.status_code == 429, response.text
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "model_overloaded"
        for slot in held:
            client.portal.call(slot.release)
        assert client.post("/v1/shop/chat", headers=headers, json={"message": "running shoes"}).status_code == 200
        assert client.post("/v1/support/chat", headers=headers, json={"message": "hello"}).status_code == 200


def test_serve_without_the_web_app_still_serves_every_tenants_shop_and_support(home: Path) -> None:
    """``concierge serve --no-web``: the shop and support APIs are there, on the tenants' own data."""
    from concierge.server import build_app as build_server_app

    products = _spring_catalog()
    app = build_server_app(FakeHub(), web=False)
    _check_without_web(app, products)


def test_serve_no_web_command_mounts_the_shop_and_support_apis(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``concierge serve --no-web`` command itself (model loading and uvicorn stubbed out)."""
    import uvicorn

    from concierge.commands.gateway import serve
    from concierge.models.hub import ModelHub

    products = _spring_catalog()
    served: list[Any] = []
    monkeypatch.delenv("CONCIERGE_CONFIG", raising=False)
    monkeypatch.setattr(ModelHub, "from_config", classmethod(lambda cls, config=None: FakeHub()))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    serve(port=8123, config=None, warm_up=False, web=False)
    (app,) = served
    _check_without_web(app, products)


def _spring_catalog() -> list[dict[str, Any]]:
    """Tenant ``nowebco``'s own catalogue ``spring`` (ingested once per module)."""
    from concierge.shop.catalog import ingest_catalog, list_catalogs
    from concierge.shop.demo_store import generate_demo_store

    products, _ = generate_demo_store(seed=5, n_products=40, n_shoppers=0)
    with db.session_scope() as session:
        if not any(c.name == "spring" for c in list_catalogs(session, "nowebco")):
            assert ingest_catalog(session, "nowebco", "spring", products).ok
    return products


def _check_without_web(app: Any, products: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {tenancy.create_key('nowebco').key}"}
    with TestClient(app) as client:
        shop = client.post("/v1/shop/chat", headers=headers, json={"message": "a jacket", "catalog": "spring"})
        assert shop.status_code == 200, shop.text
        assert shop.json()["object"] == "shop.answer"
        assert {p["product_id"] for p in shop.json()["products"]} <= {p["id"] for p in products}
        similar = client.post("/v1/shop/similar", headers=headers,
                              json={"product_id": products[0]["id"], "catalog": "spring"})
        assert similar.status_code == 200, similar.text
        support = client.post("/v1/support/chat", headers=headers, json={"message": "hello", "domain": "homestay"})
        assert support.status_code == 200, support.text
        assert support.json()["object"] == "support.turn"
        assert client.get("/").status_code == 404  # no web app
        assert client.get("/console").status_code == 404
