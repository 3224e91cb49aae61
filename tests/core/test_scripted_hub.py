"""The shared fake hub itself (tests/helpers/hubs.py): what the test modules script with it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.models.engine import EngineUnavailableError, ModelNotFoundError, ServingHub
from concierge.models.hub import CallRecord, as_hub
from helpers.hubs import ScriptedHub, empty_json, tool_call


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])


def test_replies_come_from_alias_queues_then_the_shared_queue_then_standing_replies() -> None:
    hub = ScriptedHub("shared one", default="fallback").script("a", "for a").on("b", lambda r: "b says hi")
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    answers = [hub.chat(alias, ask)["choices"][0]["message"]["content"] for alias in ("a", "a", "b", "c")]
    assert answers == ["for a", "shared one", "b says hi", "fallback"]
    assert [c.alias for c in hub.calls] == ["a", "a", "b", "c"] and hub.requests[0] == ask
    with pytest.raises(AssertionError, match="no reply left"):
        ScriptedHub().chat("a", ask)


def test_messages_tool_calls_completions_errors_and_call_aware_functions() -> None:
    call = tool_call("get_order", {"order_id": "#W1"})
    whole = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "as is"}}]}
    hub = ScriptedHub(
        {"content": None, "tool_calls": [call]},
        whole,
        EngineUnavailableError("down"),
        lambda request, c: f"{c.alias}:{c.stream}",
        usage=None,
    )
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    first = hub.chat("m", ask)
    assert first["choices"][0]["finish_reason"] == "tool_calls" and "usage" not in first
    assert first["choices"][0]["message"]["tool_calls"] == [call]
    assert hub.chat("m", ask) is whole
    with pytest.raises(EngineUnavailableError):
        hub.chat("m", ask)
    assert hub.chat("m", ask)["choices"][0]["message"]["content"] == "m:False"


def test_structured_replies_and_streams_derived_from_the_reply() -> None:
    hub = ScriptedHub(default="  two  words ", structured=empty_json)
    schema = {"type": "object", "properties": {"q": {"type": ["string", "null"]}, "n": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    reply = hub.chat("m", {"messages": [], "response_format": fmt})
    assert json.loads(reply["choices"][0]["message"]["content"]) == {"q": None, "n": 0}
    chunks = list(hub.stream_chat("m", {"messages": []}))
    assert _text(chunks) == "  two  words "
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] == 10
    tools = ScriptedHub({"tool_calls": [tool_call("f", {})]}).stream_chat("m", {"messages": []})
    deltas = [c["choices"][0]["delta"] for c in tools if c["choices"]]
    assert deltas[0]["tool_calls"][0]["index"] == 0 and deltas[0]["tool_calls"][0]["function"]["name"] == "f"


def test_cards_roles_embeddings_metering_and_the_hub_protocols() -> None:
    hub = ScriptedHub(default="ok", cards=["tiny", "embed"], roles={"shop": "tiny"}, meter=True)
    assert isinstance(hub, ServingHub) and [c.kind for c in hub.models()] == ["chat", "embeddings"]
    with pytest.raises(ModelNotFoundError):
        hub.card("nope")
    assert as_hub(hub).deployment.role("shop") == "tiny" and hub.deployment.role("embed") is None
    vectors, tokens = hub.embed("embed", ["red shoes", "a blue hat"])
    assert len(vectors) == 2 and len(vectors[0]) == 64 and tokens == 5
    seen: list[CallRecord] = []
    hub.observer = seen.append
    hub.chat("tiny", {"messages": []}, tenant="acme")
    list(hub.stream_chat("tiny", {"messages": []}, tenant="acme"))
    assert [(r.endpoint, r.tenant, r.stream, r.prompt_tokens) for r in seen] == [
        ("chat", "acme", False, 5), ("chat", "acme", True, 5)
    ]
    assert not hasattr(ScriptedHub(), "deployment")
    with pytest.raises(TypeError, match="not a model hub"):
        as_hub(hub.chat_only())


def test_fake_hub_fixture_builds_a_scripted_hub(fake_hub) -> None:
    hub = fake_hub("scripted")
    assert isinstance(hub, ScriptedHub)
    assert hub.chat("m", {"messages": []})["choices"][0]["message"]["content"] == "scripted"
