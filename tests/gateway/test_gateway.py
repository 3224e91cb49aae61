"""The OpenAI-compatible gateway, driven over HTTP on a live uvicorn server.

Most tests use ``FakeHub`` (the ModelHub contract with canned, deterministic answers) so they
check the gateway itself: auth, validation, SSE, error mapping, metering, metrics, request log.
``test_real_hub_*`` run the same routes over the real ModelHub and a tiny GGUF when available.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from sqlalchemy import select

from concierge import tenancy
from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from concierge.store import db
from concierge.store.tables import RequestLog
from helpers.gateway import assert_error as _assert_error
from helpers.gateway import post as _post
from helpers.hubs import GatewayHub as FakeHub
from helpers.server import LiveServer


@pytest.fixture(scope="module")
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture(scope="module")
def live(home: Path, keys: dict[str, str], hub: FakeHub) -> Iterator[LiveServer]:
    app = create_app(hub, GatewaySettings(max_body_bytes=64 * 1024))
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: LiveServer, keys: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=keys["acme"], max_retries=0, timeout=20)


def _alive(live: LiveServer, key: str) -> None:
    """The server still answers a normal call after an error."""
    response = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200 and response.json()["object"] == "list"


# ---------------------------------------------------------------------------------------------
# Happy paths through the official client
# ---------------------------------------------------------------------------------------------
def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"tiny", "embed", "down"} <= set(models)
    tiny = models["tiny"]
    assert tiny.object == "model" and tiny.owned_by == "concierge"
    assert tiny.model_extra["context_length"] == FakeHub.CONTEXT
    assert tiny.model_extra["engine"] == "fake" and tiny.model_extra["kind"] == "chat"
    assert "source" not in tiny.model_extra  # file paths are for operator keys only
    assert client.models.retrieve("embed").model_extra["kind"] == "embeddings"


def test_models_show_source_to_operators(live: LiveServer, keys: dict[str, str]) -> None:
    response = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {keys['ops']}"})
    assert {m["id"]: m["source"] for m in response.json()["data"]}["tiny"] == "/models/tiny.gguf"


def test_chat(client: openai.OpenAI, hub: FakeHub) -> None:
    result = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello there"}],
        max_completion_tokens=20,
        seed=1,
        extra_body={"top_k": 5},
    )
    assert result.choices[0].message.content.startswith("Hello")
    assert result.usage.prompt_tokens == 2
    alias, request, tenant = hub.requests[-1]
    assert (alias, tenant) == ("tiny", "acme")
    assert request["max_tokens"] == 20 and request["top_k"] == 5  # mapped; allowed extensions passed on


def test_stream_with_usage(client: openai.OpenAI, hub: FakeHub) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the tiny model")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    assert hub.requests[-1][1]["stream_options"]["include_usage"] is True


def test_stream_without_usage_still_meters(client: openai.OpenAI, hub: FakeHub) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    # The engine was still asked for usage, so the call is metered.
    assert hub.requests[-1][1]["stream_options"]["include_usage"] is True


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "size": {"type": "integer"}, "tags": {"type": "array"}},
        "required": ["name", "size"],
    }
    result = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "a product"}],
        response_format={"type": "json_schema", "json_schema": {"name": "product", "schema": schema}},
    )
    jsonschema.validate(json.loads(result.choices[0].message.content), schema)


def test_forced_tool_call(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_order",
                "description": "Look up an order",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            },
        }
    ]
    result = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "where is my order"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_order"}},
    )
    call = result.choices[0].message.tool_calls[0]
    assert call.function.name == "get_order" and "order_id" in json.loads(call.function.arguments)


def test_embeddings(client: openai.OpenAI, live: LiveServer, keys: dict[str, str]) -> None:
    # The official client asks for base64 by default and decodes it.
    result = client.embeddings.create(model="embed", input=["red shoes", "blue hat"])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 4
    vec = result.data[0].embedding
    assert len(vec) == 8 and abs(sum(x * x for x in vec) - 1.0) < 1e-5
    as_float = _post(
        live, "/v1/embeddings", keys["acme"], json={"model": "embed", "input": "red shoes"}
    ).json()
    assert as_float["data"][0]["embedding"] == pytest.approx(vec, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors: each one answered in OpenAI shape, and the server keeps serving
# ---------------------------------------------------------------------------------------------
def test_missing_and_bad_keys(live: LiveServer, keys: dict[str, str]) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    error = _assert_error(_post(live, "/v1/chat/completions", None, json=body), 401)
    assert error["code"] == "invalid_api_key"
    _assert_error(
        _post(live, "/v1/chat/completions", None, json=body, headers={"Authorization": "Basic x"}), 401
    )
    bad = openai.OpenAI(base_url=live.url + "/v1", api_key="ck-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    _assert_error(httpx.get(live.url + "/v1/models"), 401)
    _alive(live, keys["acme"])


def test_revoked_key_stops_within_ttl(live: LiveServer) -> None:
    key = tenancy.create_key("shortlived").key
    assert httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    tenancy.revoke_key(key)
    revoked_at = time.monotonic()
    while True:
        status = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
        if status == 401:
            break
        assert time.monotonic() - revoked_at < 2.0, "revoked key still accepted after 2 s"
        time.sleep(0.05)


def test_unknown_model_404(client: openai.OpenAI, live: LiveServer, keys: dict[str, str]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    _alive(live, keys["acme"])


def test_malformed_json_400(live: LiveServer, keys: dict[str, str]) -> None:
    response = _post(
        live,
        "/v1/chat/completions",
        keys["acme"],
        content=b'{"model": "tiny", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert "Malformed JSON" in _assert_error(response, 400)["message"]
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], content=b""), 400)
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], content=b"[1, 2]"), 400)
    _alive(live, keys["acme"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 99}, "n"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "wat"}},
                },
            },
            "response_format.json_schema.schema",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            },
            "response_format",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        ({"model": "embed", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_invalid_requests_400(live: LiveServer, keys: dict[str, str], body: dict, param: str) -> None:
    error = _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, param)
    assert error["type"] == "invalid_request_error"


def test_invalid_schema_through_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "required": "name"}},
            },
        )
    assert info.value.param == "response_format.json_schema.schema"
    assert "Invalid JSON schema" in info.value.message


def test_embedding_input_errors(live: LiveServer, keys: dict[str, str]) -> None:
    error = _assert_error(
        _post(live, "/v1/embeddings", keys["acme"], json={"model": "embed", "input": [[1, 2, 3]]}),
        400,
        "input",
    )
    assert "Token" in error["message"]
    _assert_error(
        _post(live, "/v1/embeddings", keys["acme"], json={"model": "embed", "input": []}), 400, "input"
    )
    _assert_error(
        _post(live, "/v1/embeddings", keys["acme"], json={"model": "tiny", "input": "x"}), 400, "model"
    )
    _assert_error(
        _post(live, "/v1/embeddings", keys["acme"], json={"model": "embed", "input": "x", "dimensions": 3}),
        400,
        "dimensions",
    )


def test_context_length_400(client: openai.OpenAI, live: LiveServer, keys: dict[str, str]) -> None:
    long = " ".join(["word"] * (FakeHub.CONTEXT + 10))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long}])
    assert info.value.code == "context_length_exceeded" and str(FakeHub.CONTEXT) in info.value.message
    # Streaming requests get the same HTTP 400, not a 200 stream with an error inside.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": long}], stream=True
        )
    _alive(live, keys["acme"])


def test_body_too_large_413(live: LiveServer, keys: dict[str, str]) -> None:
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * (200 * 1024)}]}
    error = _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=big), 413)
    assert error["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must count streamed bytes
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}]}'

    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], content=chunked()), 413)
    _alive(live, keys["acme"])


def test_engine_down_503(client: openai.OpenAI, live: LiveServer, keys: dict[str, str]) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503 and info.value.code == "engine_unavailable"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="down", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    _alive(live, keys["acme"])


def test_unexpected_error_500_is_generic(
    live: LiveServer, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    body = {"model": "boom", "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level("ERROR", logger="concierge.gateway"):
        response = _post(live, "/v1/chat/completions", keys["acme"], json=body)
    error = _assert_error(response, 500)
    assert error["type"] == "server_error" and "sk-should-not-leak" not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "sk-should-not-leak" not in logged and keys["acme"] not in logged
    _alive(live, keys["acme"])


def test_error_mid_stream_is_an_event(live: LiveServer, keys: dict[str, str]) -> None:
    body = {"model": "flaky", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = _post(live, "/v1/chat/completions", keys["acme"], json=body)
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "engine_unavailable" and "mid-stream" in error["message"]
    assert any("choices" in json.loads(e) for e in events[:-2])  # some content came first
    _alive(live, keys["acme"])


def test_unknown_route_is_openai_shaped(live: LiveServer, keys: dict[str, str]) -> None:
    _assert_error(_post(live, "/v1/completions-nope", keys["acme"], json={}), 404)


# ---------------------------------------------------------------------------------------------
# Concurrency, disconnects, metering, metrics
# ---------------------------------------------------------------------------------------------
def test_event_loop_not_blocked_by_model_calls(live: LiveServer, keys: dict[str, str]) -> None:
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    results: list[int] = []
    workers = [
        threading.Thread(
            target=lambda: results.append(
                _post(live, "/v1/chat/completions", keys["acme"], json=body).status_code
            )
        )
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    time.sleep(0.1)
    start = time.perf_counter()
    assert httpx.get(live.url + "/healthz").status_code == 200
    waited = time.perf_counter() - start
    finished_before = len(results)
    # The three 0.5 s model calls run in worker threads: /healthz answers at once, or at least before
    # any of them has finished (on a loaded machine the first bound alone is flaky).
    assert waited < 0.3 or finished_before == 0, (waited, finished_before)
    for w in workers:
        w.join(10)
    assert results == [200, 200, 200]


def test_client_disconnect_closes_the_stream(live: LiveServer, keys: dict[str, str], hub: FakeHub) -> None:
    before = hub.closed_streams
    body = {"model": "slow", "messages": [{"role": "user", "content": " ".join(["w"] * 20)}], "stream": True}
    with httpx.stream(
        "POST",
        live.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {keys['acme']}"},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # hang up after the first event
    deadline = time.monotonic() + 5
    while hub.closed_streams == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.closed_streams == before + 1
    _alive(live, keys["acme"])


def test_usage_recorded_per_tenant(live: LiveServer, keys: dict[str, str]) -> None:
    globex = openai.OpenAI(base_url=live.url + "/v1", api_key=keys["globex"], max_retries=0)
    for _ in range(2):
        globex.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "one two three"}])
    globex.embeddings.create(model="embed", input="four five")
    with pytest.raises(openai.InternalServerError):
        globex.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    live.flush()
    rows = {(r.model, r.endpoint): r for r in tenancy.usage_summary("globex")}
    chat = rows[("tiny", "chat")]
    assert chat.requests == 2 and chat.prompt_tokens == 6 and chat.completion_tokens > 0 and chat.errors == 0
    assert rows[("embed", "embeddings")].prompt_tokens == 2
    assert rows[("down", "chat")].errors == 1
    assert all(r.tenant == "acme" for r in tenancy.usage_summary("acme"))


def test_metrics(live: LiveServer, keys: dict[str, str]) -> None:
    _assert_error(httpx.get(live.url + "/metrics"), 401)
    _assert_error(httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {keys['acme']}"}), 403)
    key = keys["globex"]
    _post(
        live,
        "/v1/chat/completions",
        key,
        json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
    )
    _post(
        live,
        "/v1/chat/completions",
        key,
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    text = httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {keys['ops']}"}).text
    assert 'concierge_requests_total{endpoint="chat",model="tiny",status="200",tenant="globex"}' in text
    assert 'concierge_requests_total{endpoint="chat",model="-",status="404",tenant="globex"}' in text
    assert 'status="401",tenant="-"' in text
    assert 'concierge_tokens_total{direction="in",model="tiny",tenant="globex"}' in text
    assert 'concierge_tokens_total{direction="out",model="tiny",tenant="globex"}' in text
    assert 'concierge_time_to_first_token_seconds_bucket{le="0.01",model="tiny",tenant="globex"}' in text
    assert 'concierge_request_latency_seconds_count{model="tiny",tenant="globex"}' in text


def test_healthz_needs_no_key(live: LiveServer) -> None:
    health = httpx.get(live.url + "/healthz").json()
    assert health["status"] == "ok" and {m["alias"] for m in health["models"]} >= {"tiny", "embed"}


# ---------------------------------------------------------------------------------------------
# Opt-in request log (own server) and warm-up
# ---------------------------------------------------------------------------------------------
def test_request_log_is_redacted(home: Path, keys: dict[str, str]) -> None:
    hub = FakeHub()
    for alias in ("slow", "down", "boom", "flaky"):  # warm-up should end "done", and quickly
        del hub.cards[alias]
    app = create_app(hub, GatewaySettings(log_requests=True, metrics_public=True, warm_up=True))
    with LiveServer(app) as server:
        text = "mail me at jane.doe@example.com or 617-555-0834, card 4111 1111 1111 1111, order #W2378156"
        body = {"model": "tiny", "messages": [{"role": "user", "content": text}]}
        assert _post(server, "/v1/chat/completions", keys["acme"], json=body).status_code == 200
        body["stream"] = True
        assert _post(server, "/v1/chat/completions", keys["acme"], json=body).status_code == 200
        assert httpx.get(server.url + "/metrics").status_code == 200  # metrics_public
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/healthz").json()["warm_up"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.flush()
    with db.session_scope() as session:
        logs = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
        stored = [(log.request, log.response) for log in logs[-2:]]
    assert len(stored) == 2
    for request, response in stored:
        for secret in ("jane.doe@example.com", "617-555-0834", "4111 1111 1111 1111", keys["acme"]):
            assert secret not in request and secret not in response
        assert "[EMAIL]" in request and "[PHONE]" in request and "[CARD]" in request
        assert "#W2378156" in request
        assert "Hello from the tiny model" in response
    # Warm-up calls are not metered as anyone's usage.
    assert all(r.tenant is not None for r in tenancy.usage_summary())


# ---------------------------------------------------------------------------------------------
# End to end over the real ModelHub: a tiny random Qwen2 GGUF (llama.cpp), MiniLM embeddings,
# and an upstream alias pointing at a closed port.
# ---------------------------------------------------------------------------------------------
def test_real_hub_models_and_chat(real_client: openai.OpenAI) -> None:
    models = {m.id: m for m in real_client.models.list()}
    assert models["tiny"].model_extra["engine"] == "llama.cpp"
    assert models["tiny"].model_extra["context_length"] == 1024
    assert models["embed"].model_extra["kind"] == "embeddings"
    result = real_client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0, seed=7
    )
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0 and 0 < result.usage.completion_tokens <= 8


def test_real_hub_stream_with_usage(real_client: openai.OpenAI) -> None:
    chunks = list(
        real_client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
    assert any(c.choices and c.choices[0].delta.content for c in chunks)


def test_real_hub_stream_is_pushed_and_a_dropped_stream_frees_the_slot(
    real_live: LiveServer, real_client: openai.OpenAI
) -> None:
    """llama.cpp streams are advanced from the engine's thread (no pump thread); a client that goes
    away mid-stream stops generation, so the one slot serves the next request."""
    from concierge.models.tiny_gguf import tiny_vocab

    before = {t.name for t in threading.enumerate()}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 600}
    headers = {"Authorization": f"Bearer {real_client.api_key}"}
    # ignore_eos is refused (off the allow-list); an OpenAI logit_bias against EOS keeps it going.
    no_eos = {str(tiny_vocab()[0].index("<|im_end|>")): -100}
    with httpx.stream(
        "POST", real_live.url + "/v1/chat/completions", json={**body, "stream": True, "logit_bias": no_eos},
        headers=headers, timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))
        assert "sse-pump" not in {t.name for t in threading.enumerate()} - before
    # The only slot (n_parallel 1) is free again: a plain call completes.
    result = real_client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, timeout=20
    )
    assert result.usage.completion_tokens <= 4


def test_real_hub_json_schema(real_client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"in_stock": {"type": "boolean"}, "size": {"enum": ["S", "M", "L"]}},
        "required": ["in_stock", "size"],
        "additionalProperties": False,
    }
    result = real_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "is it in stock?"}],
        max_tokens=400,  # random weights pad with whitespace the grammar allows
        seed=0,
        response_format={"type": "json_schema", "json_schema": {"name": "stock", "schema": schema}},
    )
    jsonschema.validate(json.loads(result.choices[0].message.content), schema)


def test_real_hub_forced_tool_call(real_client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"enum": ["#W1", "#W2"]}},
                    "required": ["order_id"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    result = real_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "where is order W1?"}],
        tools=tools,
        max_tokens=300,
        tool_choice={"type": "function", "function": {"name": "get_order"}},
        seed=0,
    )
    call = result.choices[0].message.tool_calls[0]
    assert call.function.name == "get_order"
    assert json.loads(call.function.arguments)["order_id"] in ("#W1", "#W2")


def test_real_hub_embeddings(real_client: openai.OpenAI) -> None:
    result = real_client.embeddings.create(model="embed", input=["red running shoes", "a blue hat"])
    assert [len(d.embedding) for d in result.data] == [384, 384] and result.usage.prompt_tokens > 0


def test_real_hub_errors(real_client: openai.OpenAI, real_live: LiveServer, keys: dict[str, str]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        real_client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 1500}], max_tokens=4
        )
    assert "1024" in info.value.message and info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # streaming: the same 400 before any event
        real_client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 1500}], max_tokens=4, stream=True
        )
    with pytest.raises(openai.InternalServerError) as down:
        real_client.chat.completions.create(model="remote", messages=[{"role": "user", "content": "hi"}])
    assert down.value.status_code == 503
    with pytest.raises(openai.NotFoundError):
        real_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    _alive(real_live, keys["globex"])


def test_real_hub_usage_and_metrics(
    real_client: openai.OpenAI, real_live: LiveServer, keys: dict[str, str]
) -> None:
    real_client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    real_live.flush()
    rows = {(r.model, r.endpoint) for r in tenancy.usage_summary("initech")}
    assert ("tiny", "chat") in rows
    text = httpx.get(real_live.url + "/metrics", headers={"Authorization": f"Bearer {keys['ops']}"}).text
    assert 'concierge_tokens_total{direction="out",model="tiny",tenant="initech"}' in text
    assert 'concierge_time_to_first_token_seconds_count{model="tiny",tenant="initech"}' in text


def test_layers_gateway_and_web_do_not_import_each_other_and_the_core_has_no_web_framework() -> None:
    """The gateway and the web app meet only in concierge.server; shop, support, store and models stay framework-free."""
    import re
    from pathlib import Path

    import concierge

    root = Path(concierge.__file__).parent

    def offenders(package: str, pattern: str) -> list[str]:
        found = []
        for path in sorted((root / package).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(pattern, line) and re.match(r"\s*(from|import)\s", line):
                    found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
        return found

    assert offenders("gateway", r"concierge\.web\b") == []
    assert offenders("web", r"concierge\.gateway\b") == []
    for core in ("shop", "support", "store", "models"):
        assert offenders(core, r"\b(fastapi|starlette|typer)\b") == [], core
