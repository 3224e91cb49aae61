"""The official clients against the gateway on loopback: openai (chat, completions, Responses),
the openai-agents SDK (an agent with one function tool over /v1/responses), anthropic
(Messages) and langchain-openai (ChatOpenAI). The hub is scripted: each test queues the
assistant turns the "model" answers with, so tool calls and their round trips are deterministic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from test_gateway import FakeHub, LiveServer, home, keys  # noqa: F401  (fixtures)


def tool_call(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class ScriptedHub(FakeHub):
    """FakeHub whose answers are taken from ``script`` in order (FakeHub's own when it is empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Any] = []

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.script:
            return super()._answer(request)
        turn = self.script.pop(0)
        return turn(request) if callable(turn) else turn

    def tokenize(self, alias: str, text: str, add_special: bool = True) -> list[int]:
        return ([1] if add_special else []) + [len(w) for w in text.split()]

    def _stream(self, alias: str, request: dict[str, Any], tenant: str | None) -> Iterator[dict]:
        start = time.perf_counter()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": alias}
        prompt = self._prompt_tokens(alias, request)
        message = self._answer(request)
        sent = 0
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for word in str(message.get("content") or "").split(" ") if message.get("content") else []:
            sent += 1
            yield {**base, "choices": [{"index": 0, "delta": {"content": word if sent == 1 else " " + word}}]}
        for i, tc in enumerate(message.get("tool_calls") or []):
            head = {"index": i, "id": tc["id"], "type": "function", "function": {"name": tc["function"]["name"], "arguments": ""}}
            yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}}]}
            args = tc["function"]["arguments"]
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                sent += 1
                yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": part}}]}}]}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent}}
        self._report(alias, "chat", tenant, start, prompt, sent, 0.0, 200, True)


@pytest.fixture(scope="module")
def hub() -> ScriptedHub:
    return ScriptedHub()


@pytest.fixture
def scripted(hub: ScriptedHub) -> Iterator[ScriptedHub]:
    hub.script.clear()
    yield hub
    hub.script.clear()


@pytest.fixture(scope="module")
def live(home, keys: dict[str, str], hub: ScriptedHub) -> Iterator[LiveServer]:  # noqa: ANN001, F811
    with LiveServer(create_app(hub, GatewaySettings())) as server:
        yield server


@pytest.fixture(scope="module")
def oai(live: LiveServer, keys: dict[str, str]) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=live.url + "/v1", api_key=keys["acme"], max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def claude(live: LiveServer, keys: dict[str, str]) -> anthropic.Anthropic:  # noqa: F811
    return anthropic.Anthropic(base_url=live.url, api_key=keys["acme"], max_retries=0, timeout=20)


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# ---- anthropic ---------------------------------------------------------------------------------


def test_anthropic_messages(claude: anthropic.Anthropic, scripted: ScriptedHub) -> None:
    scripted.script.append(say("Bonjour from the tiny model"))
    message = claude.messages.create(
        model="tiny", max_tokens=20, system="Answer in French.",
        messages=[{"role": "user", "content": "Say hello"}], metadata={"user_id": "u1"},
    )
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == "Bonjour from the tiny model"
    assert message.usage.input_tokens == 5 and message.usage.output_tokens > 0
    request = scripted.requests[-1][1]
    assert request["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert request["max_tokens"] == 20


def test_anthropic_stream(claude: anthropic.Anthropic, scripted: ScriptedHub) -> None:
    scripted.script.append(say("one two three"))
    with claude.messages.stream(model="tiny", max_tokens=20, messages=[{"role": "user", "content": "count"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text == "one two three" and final.usage.output_tokens == 3


def test_anthropic_tools_round_trip(claude: anthropic.Anthropic, scripted: ScriptedHub) -> None:
    tools = [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER}]
    scripted.script += [tool_call("get_weather", {"city": "Oslo"}, "toolu_1"), say("It is sunny in Oslo.")]
    first = claude.messages.create(model="tiny", max_tokens=50, tools=tools,
                                   messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Oslo"}
    second = claude.messages.create(model="tiny", max_tokens=50, tools=tools, messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}]},
    ])
    assert second.content[0].text == "It is sunny in Oslo."
    sent = scripted.requests[-1][1]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny, 21C"}
    # Streaming a tool call: a tool_use block with input_json_delta parts.
    scripted.script.append(tool_call("get_weather", {"city": "Rome"}, "toolu_2"))
    with claude.messages.stream(model="tiny", max_tokens=50, tools=tools, tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Rome?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == {"city": "Rome"}
    assert scripted.requests[-1][1]["tool_choice"] == "required"


def test_anthropic_errors_and_auth(live: LiveServer, claude: anthropic.Anthropic, keys: dict[str, str]) -> None:  # noqa: F811
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="tiny", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               extra_body={"ignore_eos": True})
    assert info.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": info.value.body["error"]["message"]}}
    assert "ignore_eos" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    bad = anthropic.Anthropic(base_url=live.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model="tiny", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "authentication_error"
    # Bearer works as well as x-api-key.
    answer = httpx.post(live.url + "/v1/messages", headers={"Authorization": f"Bearer {keys['acme']}"}, timeout=10,
                        json={"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 200 and answer.json()["type"] == "message"


def test_anthropic_count_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="tiny", system="be brief",
                                           messages=[{"role": "user", "content": "one two three"}])
    assert counted.input_tokens == 5
