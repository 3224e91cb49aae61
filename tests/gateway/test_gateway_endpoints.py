"""The request allow-list, the deployment ceilings and the endpoint families beyond chat.

Driven over HTTP on a live server with the FakeHub of test_gateway (canned, deterministic).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

from concierge import tenancy
from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from helpers.gateway import assert_error as _assert_error
from helpers.gateway import post as _post
from helpers.hubs import GatewayHub as FakeHub
from helpers.server import LiveServer

HI = [{"role": "user", "content": "hi"}]


class EndpointHub(FakeHub):
    """FakeHub plus the calls the newer endpoints use (text completion, tokenize)."""

    def complete(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        self.requests.append((alias, request, tenant))
        prompt = len(request["prompt"].split())
        text = f" continued {request['prompt'][-8:]} (seed {request.get('seed')})"
        self._report(alias, "completions", tenant, 0.0, prompt, 3)
        return {
            "id": "cmpl-fake", "object": "text_completion", "created": 0, "model": alias,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3},
        }

    def stream_complete(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        self.requests.append((alias, request, tenant))
        base = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": alias}
        for word in ["once", "upon", "a", "time"]:
            yield {**base, "choices": [{"index": 0, "text": " " + word, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}}

    def tokenize(self, alias: str, text: str, add_special: bool = True) -> list[int]:
        return ([1] if add_special else []) + [len(w) for w in text.split()]

    def detokenize(self, alias: str, tokens: list[int]) -> str:
        return " ".join("x" * t for t in tokens)


@pytest.fixture(scope="module")
def hub() -> FakeHub:
    return EndpointHub()


@pytest.fixture(scope="module")
def live(home, keys: dict[str, str], hub: FakeHub) -> Iterator[LiveServer]:  # noqa: ANN001, F811
    settings = GatewaySettings(max_tokens_ceiling=50, max_prompt_chars=400)
    with LiveServer(create_app(hub, settings)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: LiveServer, keys: dict[str, str]) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=live.url + "/v1", api_key=keys["acme"], max_retries=0, timeout=20)


# ---- the allow-list ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("ignore_eos", True), ("n_predict", 100000), ("id_slot", 0), ("cache_prompt", False),
     ("lora", [{"id": 0, "scale": 1.0}]), ("no_such_field", 1)],
)
def test_engine_fields_are_refused_by_name(
    live: LiveServer, keys: dict[str, str], hub: FakeHub, field: str, value: Any  # noqa: F811
) -> None:
    before = len(hub.requests)
    body = {"model": "tiny", "messages": HI, field: value}
    error = _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, field)
    assert field in error["message"] and error["code"] == "unsupported_parameter"
    assert len(hub.requests) == before  # nothing reached the engine


def test_nested_unknown_fields_are_refused(live: LiveServer, keys: dict[str, str]) -> None:  # noqa: F811
    body = {"model": "tiny", "messages": HI, "stream": True, "stream_options": {"include_usage": True, "x": 1}}
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, "stream_options.x")
    part = {"type": "text", "text": "hi", "cache_prompt": True}
    body = {"model": "tiny", "messages": [{"role": "user", "content": [part]}]}
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, "messages.0.content.0.cache_prompt")
    body["messages"][0]["content"] = [{"type": "input_audio", "input_audio": {}}]
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, "messages.0.content.0")
    tool = {"type": "function", "function": {"name": "f", "parameters": {}, "lora": 1}}
    body = {"model": "tiny", "messages": HI, "tools": [tool]}
    _assert_error(_post(live, "/v1/chat/completions", keys["acme"], json=body), 400, "tools.0.function.lora")


def test_payload_is_built_from_the_allow_list(client: openai.OpenAI, hub: FakeHub) -> None:
    client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "refusal": None}],
        max_tokens=10, temperature=0.5, seed=3, user="u-1", metadata={"k": "v"}, store=False,
        service_tier="auto", parallel_tool_calls=False, logprobs=True, top_logprobs=2,
    )
    request = hub.requests[-1][1]
    assert request == {
        "model": "tiny", "stream": False, "max_tokens": 10, "temperature": 0.5, "seed": 3,
        "parallel_tool_calls": False, "logprobs": True, "top_logprobs": 2,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"store": True}, "store"), ({"service_tier": "flex"}, "service_tier"),
     ({"reasoning_effort": "low"}, "reasoning_effort"), ({"modalities": ["text", "audio"]}, "modalities"),
     ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"), ({"top_logprobs": 2}, "top_logprobs")],
)
def test_openai_options_we_cannot_honour_are_400(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=HI, extra_body=extra)
    assert info.value.body["param"] == param


def test_max_tokens_ceiling(client: openai.OpenAI, hub: FakeHub) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=51)
    assert info.value.body["param"] == "max_tokens" and "max_tokens_ceiling" in info.value.body["message"]
    assert "50" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=HI, max_completion_tokens=99)
    assert info.value.body["param"] == "max_completion_tokens"
    client.chat.completions.create(model="tiny", messages=HI)
    assert hub.requests[-1][1]["max_tokens"] == 50  # the ceiling is the default


def test_prompt_length_ceiling(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 401}])
    assert info.value.body["param"] == "messages" and "max_prompt_chars" in info.value.body["message"]
    assert "400" in info.value.body["message"] and info.value.body["code"] == "prompt_too_long"


def test_official_client_defaults_are_accepted(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=HI, stream=True, stream_options={"include_usage": True}, user="me",
        safety_identifier="s", prompt_cache_key="p",
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and any(c.choices and c.choices[0].delta.content for c in chunks)
    with client.chat.completions.stream(model="tiny", messages=HI) as helper:
        assert helper.get_final_completion().choices[0].message.content

    class Size(pydantic.BaseModel):
        size: str
        count: int

    parsed = client.chat.completions.parse(model="tiny", messages=HI, response_format=Size)
    assert parsed.choices[0].message.parsed == Size(size="text", count=3)


# ---- n > 1 and /v1/completions ------------------------------------------------------------------


def test_chat_n_choices(client: openai.OpenAI, hub: FakeHub) -> None:
    before = len(hub.requests)
    result = client.chat.completions.create(model="tiny", messages=HI, n=3, seed=7, max_tokens=5)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert all(c.message.content for c in result.choices)
    one = hub.requests[-1][1]
    assert result.usage.completion_tokens == 3 * (len(str(result.choices[0].message.content).split()) + 1)
    assert result.usage.prompt_tokens == 3 * len(one["messages"][0]["content"].split())
    assert sorted(r[1]["seed"] for r in hub.requests[before:]) == [7, 8, 9]
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, n=2, stream=True, seed=1,
                                                 stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] == texts[1] == "Hello from the tiny model , how can I help ? "
    assert [c for c in chunks if c.usage] == [chunks[-1]] and chunks[-1].usage.completion_tokens == 2 * 11
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finishes) == [0, 1]


def test_completions(client: openai.OpenAI, hub: FakeHub) -> None:
    result = client.completions.create(model="tiny", prompt="Once upon", max_tokens=5)
    assert result.object == "text_completion" and result.choices[0].text.startswith(" continued")
    assert result.usage.total_tokens == 5 and hub.requests[-1][1]["max_tokens"] == 5
    result = client.completions.create(model="tiny", prompt=["a b", "c d e"], n=2, seed=1)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text.endswith("a b (seed 1)") and result.choices[1].text.endswith("(seed 2)")
    assert result.choices[2].text.endswith("c d e (seed 1)")
    assert result.usage.prompt_tokens == 2 * 2 + 2 * 3
    chunks = list(client.completions.create(model="tiny", prompt="x", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " once upon a time"
    assert chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"echo": True}, "echo"), ({"suffix": "x"}, "suffix"), ({"ignore_eos": True}, "ignore_eos"),
     ({"max_tokens": 51}, "max_tokens"), ({"prompt": [[1, 2]]}, "prompt"), ({"prompt": "x" * 401}, "prompt")],
)
def test_completions_refusals(live: LiveServer, keys: dict[str, str], extra: dict, param: str) -> None:  # noqa: F811
    body = {"model": "tiny", "prompt": "hi", **extra}
    _assert_error(_post(live, "/v1/completions", keys["acme"], json=body), 400, param)


def test_every_engine_call_is_metered(live: LiveServer) -> None:  # noqa: F811
    key = tenancy.create_key("hooli").key
    hooli = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0, timeout=20)
    hooli.chat.completions.create(model="tiny", messages=HI, n=2)
    hooli.completions.create(model="tiny", prompt=["a b", "c"], max_tokens=3)
    hooli.responses.create(model="tiny", input="one two")
    answer = httpx.post(live.url + "/v1/messages", headers={"x-api-key": key}, timeout=10,
                        json={"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x y z"}]})
    assert answer.status_code == 200, answer.text
    live.flush()
    rows = {(r.model, r.endpoint): r for r in tenancy.usage_summary("hooli")}
    assert rows[("tiny", "chat")].requests == 4  # n=2, Responses and Messages run as chat calls
    assert rows[("tiny", "chat")].prompt_tokens == 1 + 1 + 2 + 3
    assert rows[("tiny", "completions")].requests == 2 and rows[("tiny", "completions")].prompt_tokens == 3


# ---- /tokenize and /detokenize -----------------------------------------------------------------


def test_tokenize_and_detokenize(live: LiveServer, keys: dict[str, str]) -> None:  # noqa: F811
    answer = _post(live, "/tokenize", keys["acme"], json={"model": "tiny", "prompt": "ab cde"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"count": 3, "max_model_len": FakeHub.CONTEXT, "tokens": [1, 2, 3]}
    answer = _post(live, "/tokenize", keys["acme"], json={"model": "tiny", "prompt": "ab", "add_special_tokens": False})
    assert answer.json()["tokens"] == [2]
    answer = _post(live, "/detokenize", keys["acme"], json={"model": "tiny", "tokens": [2, 3]})
    assert answer.json() == {"prompt": "xx xxx"}
    _assert_error(_post(live, "/tokenize", None, json={"model": "tiny", "prompt": "a"}), 401)
    _assert_error(_post(live, "/tokenize", keys["acme"], json={"model": "nope", "prompt": "a"}), 404)
    _assert_error(_post(live, "/tokenize", keys["acme"], json={"model": "tiny", "prompt": "a", "x": 1}), 400, "x")
    _assert_error(_post(live, "/tokenize", keys["acme"], json={"model": "tiny"}), 400)


def test_real_hub_completions_and_tokenize(real_live: LiveServer, real_client: openai.OpenAI) -> None:  # noqa: F811
    """The real ModelHub has no completion or tokenizer call: the llama.cpp engine's own API serves them."""
    result = real_client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0)
    assert result.object == "text_completion" and 0 < result.usage.completion_tokens <= 4
    # The same greedy completion streamed: the same text, in pieces, ending with a finish reason. (A random
    # tiny model's tokens may decode to empty text, so the pieces are compared, not required non-empty.)
    chunks = list(real_client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                                                 stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == result.choices[0].text
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    key = {"Authorization": f"Bearer {real_client.api_key}"}
    answer = httpx.post(real_live.url + "/tokenize", json={"model": "tiny", "prompt": "hello"}, headers=key, timeout=20)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()["tokens"]
    assert answer.json()["count"] == len(tokens) > 0 and answer.json()["max_model_len"] == 1024
    back = httpx.post(real_live.url + "/detokenize", json={"model": "tiny", "tokens": tokens}, headers=key, timeout=20)
    assert back.json()["prompt"].strip() == "hello"
    chat = httpx.post(real_live.url + "/tokenize", headers=key, timeout=20,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}]})
    assert chat.status_code == 200 and chat.json()["count"] > len(tokens)  # the template's tokens too
    real_live.flush()  # the engine-API calls are metered by the gateway itself
    rows = {(r.model, r.endpoint): r for r in tenancy.usage_summary("initech")}
    assert rows[("tiny", "completions")].requests >= 2 and rows[("tiny", "completions")].completion_tokens > 0


def test_real_hub_responses_and_messages(real_live: LiveServer, real_client: openai.OpenAI) -> None:  # noqa: F811
    """Responses and Messages over the real llama.cpp engine (random tiny model: shapes, not words)."""
    import anthropic

    response = real_client.responses.create(model="tiny", input="hello", instructions="Be brief.", max_output_tokens=4)
    assert response.status in ("completed", "incomplete") and 0 < response.usage.output_tokens <= 4
    events = list(real_client.responses.create(model="tiny", input="hello", max_output_tokens=3, stream=True,
                                               previous_response_id=response.id))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    # Random weights pad with whitespace the grammar allows: room to finish, greedy for repeatability.
    shaped = real_client.responses.create(model="tiny", input="ok?", max_output_tokens=400, temperature=0,
                                          text={"format": {"type": "json_schema", "name": "o", "schema": schema}})
    assert isinstance(json.loads(shaped.output_text)["ok"], bool)
    claude = anthropic.Anthropic(base_url=real_live.url, api_key=real_client.api_key, max_retries=0, timeout=60)
    message = claude.messages.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": "hello"}])
    assert message.type == "message" and 0 < message.usage.output_tokens <= 4
    with claude.messages.stream(model="tiny", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert claude.messages.count_tokens(model="tiny", messages=[{"role": "user", "content": "hello"}]).input_tokens > 1


def test_chat_n_stream_needs_that_many_slots(home, keys: dict[str, str]) -> None:  # noqa: ANN001, F811
    with LiveServer(create_app(EndpointHub(), GatewaySettings(max_concurrent=2))) as server:
        body = {"model": "tiny", "messages": HI, "n": 3, "stream": True}
        _assert_error(_post(server, "/v1/chat/completions", keys["acme"], json=body), 400, "n")
        body["n"] = 2
        answer = _post(server, "/v1/chat/completions", keys["acme"], json=body)
        assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
        # The slots came back: two more streams at once still fit.
        assert _post(server, "/v1/chat/completions", keys["acme"], json=body).status_code == 200


def test_a_hub_without_the_call_is_a_400_not_a_5xx(home, keys: dict[str, str]) -> None:  # noqa: ANN001, F811
    """A plain hub (no complete/tokenize, no engine HTTP API): the model does not serve the endpoint."""
    with LiveServer(create_app(FakeHub(), GatewaySettings())) as server:
        for path, body in (("/v1/completions", {"model": "tiny", "prompt": "x"}),
                           ("/tokenize", {"model": "tiny", "prompt": "x"}),
                           ("/detokenize", {"model": "tiny", "tokens": [1]})):
            error = _assert_error(_post(server, path, keys["acme"], json=body), 400, "model")
            assert error["code"] == "model_not_supported"
