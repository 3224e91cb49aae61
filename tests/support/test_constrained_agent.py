"""Constrained agent mode: one JSON action per step under a schema built from the domain's tools.

The real-model tests decode with llama.cpp: a tiny random Qwen2 GGUF (noise weights, so only the
grammar stands between it and garbage) and, marked slow, the embedded SmolLM2. Their outputs are
checked against the domain's own tool schemas, not against the schema the agent decoded under.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from concierge.models.deployment import parse_deployment
from concierge.models.hub import ModelHub
from concierge.models.replies import bound_reply
from concierge.support.actions import TOOL_RESULT_PREFIX, render_history
from concierge.support.agent import REPEATING_MESSAGE, UNCLEAR_MESSAGE, ToolAgent
from concierge.support.domains import load_domain
from concierge.support.session import build_agent, guard_rules
from helpers.hubs import ScriptedHub, card

EMAIL = "maya.okafor@example.com"
RESERVATION = "HS10001"


class Recording:
    """A hub that passes calls to ``inner`` and keeps every (request, response) pair."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        response = self.inner.chat(alias, request, tenant)
        self.calls.append((request, response))
        return response


def _check_outputs(domain: Any, calls: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every output is one action the domain accepts the shape of; returns the actions."""
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in domain.openai_tools()}
    actions = []
    for request, response in calls:
        assert "tools" not in request and request["response_format"]["type"] == "json_schema"
        message = response["choices"][0]["message"]
        assert not message.get("tool_calls")
        action = json.loads(message["content"])  # the whole output is the JSON action
        assert action["action"] in ("tool", "message", "transfer")
        if action["action"] == "tool":
            assert action["name"] in tools and action["name"] != "transfer_to_human_agents"
            jsonschema.validate(action["arguments"], tools[action["name"]])  # the tool's own schema
        elif action["action"] == "message":
            assert action["content"].strip() and len(action["content"]) <= 400
        else:
            assert isinstance(action["summary"], str)
        actions.append(action)
    return actions


@pytest.fixture(scope="module")
def long_tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen2 with a 16k window: its near byte-level tokenizer makes the policy long."""
    pytest.importorskip("gguf", reason="the gguf package (dev extra) builds the tiny model")
    from concierge.models.tiny_gguf import build_tiny_qwen2_gguf

    return build_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny-16k") / "tiny.gguf", n_ctx=16384)


def _tiny_hub(gguf: Path, **alias: Any) -> ModelHub:
    spec = {"gguf": str(gguf), "n_ctx": 16384, "n_parallel": 1, "threads": 1, **alias}
    return ModelHub(parse_deployment({"models": {"support-agent": spec}}))


def _in_child(function: str, *args: str) -> Any:
    """Run ``function(*args)`` of this file in a fresh process and return the JSON it prints.

    llama.cpp keeps one llguidance tokenizer cached by vocabulary address: a model whose vocabulary
    lands where an earlier, freed model's was (another vocabulary) trips its GGML_ASSERT and aborts
    the whole test run (seen in the full suite). A process per grammar-decoding model avoids that."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests")])}
    code = f"import runpy, sys; runpy.run_path({str(Path(__file__))!r})[{function!r}](*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _tiny_conversation(gguf: str) -> None:
    domain = load_domain("homestay")
    hub = Recording(_tiny_hub(Path(gguf)))
    try:
        # Room for the longest action the grammar allows even in the random model's multi-byte
        # characters (a byte per token), so the grammar alone decides what comes out.
        agent = ToolAgent(domain, hub, "support-agent", rules=guard_rules("homestay"), max_steps=4, max_tokens=2048)
        state: dict[str, Any] = {}
        replies = [
            agent.respond(state, text)
            for text in (
                f"Hi, I'm {EMAIL}. Please cancel reservation {RESERVATION}.",
                "Yes, go ahead.",
                "What is the refund?",
            )
        ]
    finally:
        hub.inner.close()
    result = {
        "actions_mode": agent.actions,
        "calls": hub.calls,
        "messages": state["messages"],
        "replies": [r.message for r in replies],
        "invalid": sum(r.usage.get("invalid_actions", 0) for r in replies),
    }
    print("RESULT " + json.dumps(result))


def test_tiny_random_model_produces_only_valid_actions_over_several_steps(long_tiny_gguf: Path) -> None:
    out = _in_child("_tiny_conversation", str(long_tiny_gguf))
    assert out["actions_mode"] == "constrained"  # a llama.cpp alias defaults to constrained
    assert all(out["replies"]) and out["invalid"] == 0
    actions = _check_outputs(load_domain("homestay"), [tuple(c) for c in out["calls"]])
    assert len(actions) >= 4
    # Every tool action reached the guardrails: the stored call is the decoded one.
    stored = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for m in out["messages"]
        for c in m.get("tool_calls") or []
    ]
    decoded = [(a["name"], a["arguments"]) for a in actions if a["action"] == "tool"]
    decoded += [("transfer_to_human_agents", {"summary": a["summary"]}) for a in actions if a["action"] == "transfer"]
    assert sorted(map(json.dumps, stored)) == sorted(map(json.dumps, decoded))


def test_alias_option_chooses_how_the_agent_acts(tiny_gguf: Path) -> None:
    deployment = parse_deployment(
        {
            "models": {
                "local": {"gguf": str(tiny_gguf)},
                "local-tools": {"gguf": str(tiny_gguf), "actions": "tools"},
                "remote": {"url": "http://127.0.0.1:9/v1", "served_name": "big"},
                "remote-constrained": {"url": "http://127.0.0.1:9/v1", "served_name": "big", "actions": "constrained"},
            }
        }
    )
    hub = ModelHub(deployment)
    domain = load_domain("homestay")
    chosen = {alias: build_agent(domain, "agent", hub, alias).actions for alias in deployment.aliases}
    assert chosen == {
        "local": "constrained",
        "local-tools": "tools",
        "remote": "tools",
        "remote-constrained": "constrained",
    }
    assert build_agent(domain, "agent", hub, "local", actions="tools").actions == "tools"  # the override
    with pytest.raises(ValueError, match="actions must be one of tools, constrained, got 'json'"):
        parse_deployment({"models": {"a": {"gguf": str(tiny_gguf), "actions": "json"}}})


def test_the_option_decides_the_request_shape() -> None:
    domain = load_domain("homestay")
    hub = ScriptedHub(
        cards=[card("big", actions="tools"), card("small", actions="constrained")],
        default={"content": "Hello, how can I help?"},
        structured=json.dumps({"action": "message", "content": "Hello, how can I help?"}),
    )
    for alias in ("big", "small"):
        ToolAgent(domain, hub, alias, rules=guard_rules("homestay")).respond({}, "hi")
    big, small = hub.requests
    assert big["tools"] and "response_format" not in big
    assert "tools" not in small and small["response_format"]["json_schema"]["name"] == "agent_action"
    variants = small["response_format"]["json_schema"]["schema"]["anyOf"]
    names = sorted(v["properties"]["name"]["const"] for v in variants if "name" in v["properties"])
    # Not identified yet: only the tools the guard lets through before identification.
    assert names == ["calculate", "find_guest_by_email", "get_listing_details", "search_listings"]
    assert [v["properties"]["action"]["const"] for v in variants if "name" not in v["properties"]] == [
        "message",
        "transfer",
    ]
    assert "# Tools\n- find_guest_by_email(email)" in small["messages"][0]["content"]


def _constrained(domain: Any, *outputs: Any) -> tuple[ToolAgent, ScriptedHub]:
    hub = ScriptedHub(*[json.dumps(o) if isinstance(o, dict) and "action" in o else o for o in outputs],
                      default=json.dumps({"action": "message", "content": "Anything else?"}))
    return ToolAgent(domain, hub, "a", rules=guard_rules("homestay"), actions="constrained", max_steps=6), hub


def test_the_grammar_offers_the_tools_the_guard_would_consider() -> None:
    domain = load_domain("homestay")
    find = {"action": "tool", "name": "find_guest_by_email", "arguments": {"email": EMAIL}}
    agent, hub = _constrained(domain, find, {"action": "message", "content": "Found you."})
    agent.respond({}, f"I'm {EMAIL}")
    def tools(request: dict[str, Any]) -> set[str]:
        anyof = request["response_format"]["json_schema"]["schema"]["anyOf"]
        return {v["properties"]["name"]["const"] for v in anyof if "name" in v["properties"]}
    everything = {t["function"]["name"] for t in domain.openai_tools()} - {"transfer_to_human_agents"}
    assert "cancel_reservation" not in tools(hub.requests[0])
    # Identified: every account tool, no identification tool.
    assert tools(hub.requests[1]) == everything - {"find_guest_by_email"}


def test_guardrails_judge_constrained_calls() -> None:
    domain = load_domain("homestay")
    before = domain.db_hash()
    agent, _ = _constrained(
        domain,
        {"action": "tool", "name": "cancel_reservation",
         "arguments": {"reservation_id": RESERVATION, "reason": "change of plans"}},
        {"action": "message", "content": "Who am I speaking with?"},
    )
    result = agent.respond({}, f"Cancel {RESERVATION} now")
    assert result.actions[0]["tool"] == "cancel_reservation" and result.actions[0]["refused"]
    assert domain.db_hash() == before and result.message == "Who am I speaking with?"


def test_transfer_action_runs_the_handoff_tool() -> None:
    domain = load_domain("homestay")
    agent, _ = _constrained(domain, {"action": "transfer", "summary": "Guest wants a person."})
    result = agent.respond({}, "I want to talk to a human")
    assert result.status == "handoff"
    assert result.actions[0]["tool"] == "transfer_to_human_agents" and result.actions[0]["ok"]
    assert result.handoff and result.handoff["summary"] == "Guest wants a person."


def test_a_message_cut_by_max_tokens_is_sent_as_far_as_it_got() -> None:
    domain = load_domain("homestay")
    cut = {"choices": [{"message": {"content": '{"action":"message","content":"Your stay is ca\\u00'},
                        "finish_reason": "length"}], "usage": {}}
    agent, _ = _constrained(domain, cut)
    result = agent.respond({}, "hello")
    assert result.message == "Your stay is ca" and result.usage["cut_messages"] == 1


def test_invalid_output_is_retried_then_answered_plainly() -> None:
    domain = load_domain("homestay")
    cut = '{"action":"message","content":"I am so'  # what max_tokens leaves of a message
    agent, hub = _constrained(domain, cut, '{"action":"tool","name":"no_such_tool","arguments":{}}')
    result = agent.respond({}, "hello")
    assert result.message == UNCLEAR_MESSAGE and result.usage["invalid_actions"] == 2
    assert len(hub.requests) == 2 and not result.actions


def test_two_failed_calls_to_one_tool_force_a_message() -> None:
    domain = load_domain("homestay")
    wrong = {"action": "tool", "name": "find_guest_by_email", "arguments": {"email": "nobody@example.com"}}
    agent, hub = _constrained(domain, wrong, wrong, {"action": "message", "content": "I could not find you."})
    agent.respond({}, "I'm nobody@example.com")
    third = hub.requests[2]["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [v["properties"]["action"]["const"] for v in third] == ["message"]


LOOP = "I'm sure you're not alone. " * 14


def test_a_looping_message_is_cut_in_both_action_modes() -> None:
    domain = load_domain("homestay")
    constrained, _ = _constrained(domain, {"action": "message", "content": LOOP.strip()})
    tools = ToolAgent(domain, ScriptedHub({"content": LOOP * 4}), "a", rules=guard_rules("homestay"))
    for agent in (constrained, tools):
        result = agent.respond({}, "Nobody ever helps me.")
        assert result.message == "I'm sure you're not alone." and result.usage["looped_replies"] == 1


def test_the_same_reply_three_turns_running_becomes_a_plain_offer() -> None:
    domain = load_domain("homestay")
    same = {"action": "message", "content": "Please give me your email."}
    agent, _ = _constrained(domain, same, same, same)
    state: dict[str, Any] = {}
    replies = [agent.respond(state, text).message for text in ("hi", "hello?", "hello??")]
    assert replies == ["Please give me your email.", "Please give me your email.", REPEATING_MESSAGE]


def test_history_renders_steps_as_the_model_wrote_them() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_x", "arguments": '{"id":"1"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_x", "content": '{"ok": 1}'},
        {"role": "assistant", "content": "Done."},
    ]
    assert render_history(messages, ["transfer_to_human_agents"]) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '{"action":"tool","name":"get_x","arguments":{"id":"1"}}'},
        {"role": "user", "content": f'{TOOL_RESULT_PREFIX} get_x: {{"ok": 1}}'},
        {"role": "assistant", "content": '{"action":"message","content":"Done."}'},
    ]


# -- the embedded model -------------------------------------------------------------------------


def _smollm2() -> Path:
    from concierge.models.engine import ModelError
    from concierge.models.locate import smollm2_gguf

    try:
        return smollm2_gguf()
    except ModelError as exc:
        pytest.skip(f"the embedded SmolLM2 is not installed: {exc.message}")


def _smollm2_hub() -> ModelHub:
    _smollm2()
    spec = {"embedded": "smollm2", "n_ctx": 8192, "n_parallel": 1}
    return ModelHub(parse_deployment({"models": {"support-agent": spec}}))


def _embedded_calls() -> None:
    """Two customer turns on SmolLM2 (run by :func:`_in_child`); prints the model calls as JSON."""
    domain = load_domain("homestay")
    hub = Recording(_smollm2_hub())
    try:
        agent = build_agent(domain, "agent", hub, "support-agent", max_steps=4)
        assert agent.actions == "constrained"
        state: dict[str, Any] = {}
        for text in (f"Hi, my email is {EMAIL}.", f"Please cancel reservation {RESERVATION}."):
            assert agent.respond(state, text).message
    finally:
        hub.inner.close()
    print("RESULT " + json.dumps(hub.calls))


@pytest.mark.slow
def test_embedded_model_drives_constrained_steps_with_valid_actions() -> None:
    _smollm2()
    calls = _in_child("_embedded_calls")
    actions = _check_outputs(load_domain("homestay"), [tuple(c) for c in calls])
    assert len(actions) >= 2


def test_loop_check_on_a_real_repeated_output() -> None:
    """SmolLM2 at temperature 0, shown a message that repeats itself, repeats it too (as agent-mode
    customers saw): the check keeps one copy."""
    from concierge.models.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(_smollm2(), n_ctx=1024, n_parallel=1, n_threads=1)
    try:
        out = engine.chat(
            {"messages": [{"role": "user", "content": "I am alone. " * 5}], "max_tokens": 80, "temperature": 0}
        )
    finally:
        engine.close()
    text = out["choices"][0]["message"]["content"]
    assert text.count("I am alone.") >= 8  # the model really loops
    reply = bound_reply(text)
    assert reply.looped and reply.text == "I am alone."
