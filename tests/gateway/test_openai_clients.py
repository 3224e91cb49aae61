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
from helpers.hubs import GatewayHub as FakeHub
from helpers.server import LiveServer


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
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="tiny", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                               tools=[{"name": "f", "input_schema": {"type": "wat"}}])
    assert "tools.0.input_schema" in info.value.body["error"]["message"]
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


# ---- openai: chat and Responses ----------------------------------------------------------------


def test_openai_chat_n_and_tools(oai: openai.OpenAI, scripted: ScriptedHub) -> None:
    scripted.script += [say("first"), say("second")]
    result = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=2)
    assert sorted(c.message.content for c in result.choices) == ["first", "second"]
    assert [c.index for c in result.choices] == [0, 1]
    scripted.script.append(tool_call("get_weather", {"city": "Oslo"}))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    result = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert result.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_openai_responses(oai: openai.OpenAI, scripted: ScriptedHub) -> None:
    scripted.script.append(say("Hello there"))
    response = oai.responses.create(model="tiny", input="Say hello", instructions="Be kind.", max_output_tokens=30)
    assert response.status == "completed" and response.output_text == "Hello there"
    assert response.usage.input_tokens == 4 and response.usage.output_tokens > 0  # instructions count
    sent = scripted.requests[-1][1]
    assert sent["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hello"}]
    assert sent["max_tokens"] == 30
    # previous_response_id continues the stored conversation (instructions are not carried over).
    scripted.script.append(say("You said hello"))
    follow = oai.responses.create(model="tiny", input="What did I say?", previous_response_id=response.id)
    assert follow.output_text == "You said hello" and follow.previous_response_id == response.id
    assert [m["content"] for m in scripted.requests[-1][1]["messages"]] == ["Say hello", "Hello there", "What did I say?"]
    assert oai.responses.retrieve(follow.id).output_text == "You said hello"


def test_openai_responses_are_per_tenant(live: LiveServer, oai: openai.OpenAI, keys: dict[str, str]) -> None:  # noqa: F811
    mine = oai.responses.create(model="tiny", input="secret plan")
    other = openai.OpenAI(base_url=live.url + "/v1", api_key=keys["globex"], max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model="tiny", input="continue", previous_response_id=mine.id)
    assert info.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    unstored = oai.responses.create(model="tiny", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="tiny", input="y", previous_response_id=unstored.id)


def test_openai_responses_stream(oai: openai.OpenAI, scripted: ScriptedHub) -> None:
    scripted.script.append(say("streamed words here"))
    events = list(oai.responses.create(model="tiny", input="go", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed words here"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == "streamed words here" and final.usage.output_tokens == 3
    # A streamed function call, through the SDK's stream helper.
    scripted.script.append(tool_call("get_weather", {"city": "Oslo"}))
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    with oai.responses.stream(model="tiny", input="weather?", tools=tools) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}
    # The stored stream continues like any response.
    scripted.script.append(say("Sunny"))
    oai.responses.create(model="tiny", previous_response_id=final.id,
                         input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    sent = scripted.requests[-1][1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_openai_responses_json_schema_and_refusals(oai: openai.OpenAI, scripted: ScriptedHub) -> None:
    schema = {"type": "object", "properties": {"size": {"enum": ["S", "M"]}}, "required": ["size"],
              "additionalProperties": False}
    response = oai.responses.create(model="tiny", input="size?",
                                    text={"format": {"type": "json_schema", "name": "s", "schema": schema}})
    assert json.loads(response.output_text) == {"size": "S"}
    assert scripted.requests[-1][1]["response_format"]["json_schema"]["schema"] == schema
    bad = {"format": {"type": "json_schema", "name": "s", "schema": {"type": "wat"}}}
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="tiny", input="x", text=bad)
    assert info.value.body["param"] == "text.format.schema"
    for extra, param in (({"ignore_eos": True}, "ignore_eos"), ({"reasoning": {"effort": "high"}}, "reasoning"),
                         ({"include": ["reasoning.encrypted_content"]}, "include")):
        with pytest.raises(openai.BadRequestError) as info:
            oai.responses.create(model="tiny", input="x", extra_body=extra)
        assert info.value.body["param"] == param


# ---- openai-agents: an agent with one function tool over /v1/responses ----------------------------


def test_agents_sdk_runs_a_function_tool(live: LiveServer, keys: dict[str, str], scripted: ScriptedHub) -> None:  # noqa: F811
    agents = pytest.importorskip("agents")
    ran: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        ran.append(city)
        return f"{city}: 21C and sunny"

    def answer_from_tool_result(request: dict[str, Any]) -> dict[str, Any]:
        result = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "tool")
        return say(f"The tool says: {result}")

    scripted.script += [tool_call("get_weather", {"city": "Oslo"}, "call_w1"), answer_from_tool_result]
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key=keys["acme"], max_retries=0)
    model = agents.OpenAIResponsesModel(model="tiny", openai_client=client)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model)
    result = agents.Runner.run_sync(agent, "What is the weather in Oslo?",
                                    run_config=agents.RunConfig(tracing_disabled=True))
    assert ran == ["Oslo"]
    assert result.final_output == "The tool says: Oslo: 21C and sunny"


# ---- langchain-openai ---------------------------------------------------------------------------


def test_langchain_chat_openai(live: LiveServer, keys: dict[str, str], scripted: ScriptedHub) -> None:  # noqa: F811
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model="tiny", base_url=live.url + "/v1", api_key=keys["acme"],
                                      max_retries=0, timeout=20)
    scripted.script.append(say("Hi from langchain"))
    assert llm.invoke("hello").content == "Hi from langchain"

    def get_weather(city: str) -> str:
        """The weather of a city."""
        return "sunny"

    scripted.script.append(tool_call("get_weather", {"city": "Oslo"}))
    message = llm.bind_tools([get_weather]).invoke("weather in Oslo?")
    assert message.tool_calls[0]["name"] == "get_weather" and message.tool_calls[0]["args"] == {"city": "Oslo"}
    assert scripted.requests[-1][1]["tools"][0]["function"]["name"] == "get_weather"
