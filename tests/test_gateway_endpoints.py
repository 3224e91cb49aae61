"""The request allow-list, the deployment ceilings and the endpoint families beyond chat.

Driven over HTTP on a live server with the FakeHub of test_gateway (canned, deterministic).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from test_gateway import FakeHub, LiveServer, _assert_error, _post, home, keys  # noqa: F401  (fixtures)

from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def hub() -> FakeHub:
    return FakeHub()


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
