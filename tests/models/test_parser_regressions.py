"""Regressions from vLLM's most-reported tool-call and reasoning parser bugs, against concierge's parsers.

Each case is a model's exact raw output and the message it must parse to, whole
(:func:`parse_message`) and streamed (:class:`StreamParser`) under every way of cutting the text
into deltas: one delta, character by character, every two-piece split, and token-like chunks
(special tokens whole, words, punctuation). vLLM issues:

* #19056, #22885 (and #20678, #18108): Hermes/Qwen3 tool-call arguments split across deltas came
  out truncated or as invalid JSON while streaming, though the non-streamed call was right.
* #39056: Qwen3.5 wrote a ``<tool_call>`` inside ``<think>``. concierge keeps it reasoning: a call
  the model only thinks about is not made (vLLM's proposed fix, PR #35687, instead ends the
  reasoning at ``<tool_call>``).
* #48020: DeepSeek V3/V3.1 dropped a tool call whose begin and end markers came in one delta.
* #53284: a template that closes the think block itself (``<think>\\n\\n</think>\\n\\n`` at the end
  of the prompt); the output has no tags and is all answer, not reasoning.
* #22507: Qwen3 Thinking-2507: the template opens ``<think>``, so the output has only ``</think>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from concierge.models.formats import (
    ChatFormat,
    StreamParser,
    merge_deltas,
    parse_message,
    prompt_prefilled,
    request_prefilled,
)

DS_CALLS_BEGIN, DS_CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL_BEGIN, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
DS_EOS = "<｜end▁of▁sentence｜>"
SPECIAL = [
    "<think>", "</think>", "<tool_call>", "</tool_call>", DS_CALLS_BEGIN, DS_CALLS_END, DS_CALL_BEGIN,
    DS_CALL_END, DS_SEP, DS_EOS, "<function=", "</function>", "<parameter=", "</parameter>",
]
_TOKEN = re.compile("|".join(re.escape(t) for t in SPECIAL) + r"|\w+|\s+|[^\w\s]")

# A Qwen3 Thinking-2507 model (its template opens <think>): a think-prefilled Hermes family.
QWEN3_THINKING = ChatFormat("think-prefilled", "hermes")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


@dataclass
class Case:
    id: str
    family: str | ChatFormat
    text: str
    content: str | None
    reasoning: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    prefilled: bool | None = None  # what the prompt says (see prompt_prefilled); None: the family default
    tools: list[dict[str, Any]] | None = None


CASES = [
    # -- vLLM #19056 / #22885: Hermes (Qwen3) arguments split across deltas -------------------
    Case(
        "19056-qwen3-think-then-two-calls",
        "qwen3",
        "<think>\nThe user wants the weather in Paris and the time there. I'll call both tools.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3}}\n'
        "</tool_call>\n"
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>',
        content=None,
        reasoning="The user wants the weather in Paris and the time there. I'll call both tools.",
        calls=[
            ("get_weather", {"city": "Paris", "unit": "celsius", "days": 3}),
            ("get_time", {"tz": "Europe/Paris"}),
        ],
        tools=[WEATHER],
    ),
    Case(
        "22885-qwen3-args-with-braces-quotes-and-tags",
        "qwen3",
        'Let me look that up.\n\n<tool_call>\n{"name": "search", "arguments": {"query": "size {M} \\"slim\\" </b>", '
        '"filters": {"price": [10, 20.5], "tags": ["a,b", "}"]}, "note": "café ☕"}}\n</tool_call>',
        content="Let me look that up.",
        calls=[
            (
                "search",
                {
                    "query": 'size {M} "slim" </b>',
                    "filters": {"price": [10, 20.5], "tags": ["a,b", "}"]},
                    "note": "café ☕",
                },
            )
        ],
    ),
    Case(
        "22885-qwen3-empty-arguments",
        "qwen3",
        '<tool_call>\n{"name": "list_orders", "arguments": {}}\n</tool_call>',
        content=None,
        calls=[("list_orders", {})],
    ),
    # -- vLLM #39056: a tool call inside <think> stays reasoning --------------------------------
    Case(
        "39056-qwen3.5-xml-call-inside-think",
        "qwen3.5",
        "<think>\nI could call <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call> but I already know it is sunny.\n</think>\n\nIt is sunny in Paris today.",
        content="It is sunny in Paris today.",
        reasoning="I could call <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call> but I already know it is sunny.",
        tools=[WEATHER],
    ),
    Case(
        "39056-qwen3-json-call-inside-unclosed-think",
        "qwen3",
        '<think>\nMaybe <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        content="",
        reasoning='Maybe <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    Case(
        "39056-qwen3.5-call-after-think-is-a-call",
        "qwen3.5",
        "<think>\nI need the weather.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
        "</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>",
        content=None,
        reasoning="I need the weather.",
        calls=[("get_weather", {"city": "Paris", "days": 2})],
        tools=[WEATHER],
    ),
    # -- vLLM #48020: DeepSeek begin and end markers in one delta -------------------------------
    Case(
        "48020-deepseek-v3-one-call",
        "deepseek-v3",
        f"{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}get_weather\n```json\n"
        f'{{"city": "Paris", "days": 1}}\n```{DS_CALL_END}{DS_CALLS_END}{DS_EOS}',
        content=None,
        calls=[("get_weather", {"city": "Paris", "days": 1})],
    ),
    Case(
        "48020-deepseek-v3-text-then-two-calls",
        "deepseek-v3",
        f"Checking both.{DS_CALLS_BEGIN}{DS_CALL_BEGIN}function{DS_SEP}get_weather\n```json\n"
        f'{{"city": "Paris"}}\n```{DS_CALL_END}\n{DS_CALL_BEGIN}function{DS_SEP}get_time\n```json\n'
        f'{{"tz": "UTC"}}\n```{DS_CALL_END}{DS_CALLS_END}',
        content="Checking both.",
        calls=[("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})],
    ),
    Case(
        "48020-deepseek-v3.1-one-call",
        "deepseek-v3.1",
        f'{DS_CALLS_BEGIN}{DS_CALL_BEGIN}get_weather{DS_SEP}{{"city": "Paris"}}{DS_CALL_END}{DS_CALLS_END}',
        content=None,
        calls=[("get_weather", {"city": "Paris"})],
    ),
    # -- vLLM #53284: the template closed <think> itself: all answer ---------------------------
    Case(
        "53284-prefilled-family-prompt-closed-think",
        QWEN3_THINKING,
        "Hello! How can I help you today?",
        content="Hello! How can I help you today?",
        prefilled=prompt_prefilled("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ),
    Case(
        "53284-prefilled-family-prompt-closed-think-tool-call",
        QWEN3_THINKING,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        content=None,
        calls=[("get_weather", {"city": "Paris"})],
        prefilled=False,
    ),
    Case(
        "53284-qwen3-no-tags-is-content",
        "qwen3",
        "Hello! How can I help you today?",
        content="Hello! How can I help you today?",
    ),
    Case(
        "53284-deepseek-r1-thinking-off",
        "deepseek-r1",
        "Paris is the capital of France.",
        content="Paris is the capital of France.",
        prefilled=request_prefilled({"chat_template_kwargs": {"thinking": False}}),
    ),
    # -- vLLM #22507: Qwen3 Thinking-2507 writes no opening tag --------------------------------
    Case(
        "22507-thinking-2507-no-opening-tag",
        QWEN3_THINKING,
        "Okay, the user said hello. I should greet them back.\n</think>\n\nHello! How can I assist you today?",
        content="Hello! How can I assist you today?",
        reasoning="Okay, the user said hello. I should greet them back.",
    ),
    Case(
        "22507-qwen3-prompt-opened-think",
        "qwen3",
        "Okay, the user said hello. I should greet them back.\n</think>\n\nHello! How can I assist you today?",
        content="Hello! How can I assist you today?",
        reasoning="Okay, the user said hello. I should greet them back.",
        prefilled=prompt_prefilled("<|im_start|>assistant\n<think>\n"),
    ),
    Case(
        "22507-thinking-2507-reasoning-then-call",
        QWEN3_THINKING,
        'Need the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Nice"}}\n'
        "</tool_call>",
        content=None,
        reasoning="Need the weather.",
        calls=[("get_weather", {"city": "Nice"})],
    ),
    Case(
        "22507-thinking-2507-cut-inside-reasoning",
        QWEN3_THINKING,
        "Okay, the user said hello. I should",
        content="",
        reasoning="Okay, the user said hello. I should",
    ),
]


def _splits(text: str) -> Iterator[tuple[str, list[str]]]:
    yield "whole", [text]
    yield "chars", list(text)
    yield "tokens", _TOKEN.findall(text)
    tokens = _TOKEN.findall(text)
    yield "token-pairs", ["".join(tokens[i : i + 2]) for i in range(0, len(tokens), 2)]
    for i in range(1, len(text)):
        yield f"at-{i}", [text[:i], text[i:]]


def _check(message: dict[str, Any], case: Case, how: str) -> None:
    where = f"{case.id} [{how}]"
    assert message["content"] == case.content, where
    assert message.get("reasoning_content") == case.reasoning, where
    calls = message.get("tool_calls") or []
    got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]
    assert got == case.calls, where
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls), where


def test_every_case_is_exercised_streamed() -> None:
    assert "".join(_TOKEN.findall(CASES[0].text)) == CASES[0].text  # the token split loses nothing


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_whole_message(case: Case) -> None:
    _check(parse_message(case.text, case.family, tools=case.tools, prefilled=case.prefilled), case, "whole")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_streamed_at_every_split(case: Case) -> None:
    for how, chunks in _splits(case.text):
        assert "".join(chunks) == case.text
        parser = StreamParser(case.family, tools=case.tools, prefilled=case.prefilled)
        deltas: list[dict[str, Any]] = []
        for chunk in chunks:
            deltas += parser.feed(chunk)
        deltas += parser.finish()
        _check(merge_deltas(deltas), case, how)
        # Each call: a header delta (index, id, name, empty arguments), then its arguments once.
        headers = [tc for d in deltas for tc in d.get("tool_calls") or [] if "id" in tc]
        assert [h["index"] for h in headers] == list(range(len(case.calls))), (case.id, how)
        assert all(h["function"]["arguments"] == "" for h in headers), (case.id, how)
        assert len(parser.tool_calls) == len(case.calls)


def test_prompt_prefilled_reads_only_the_end_of_the_prompt() -> None:
    history = "<|im_start|>assistant\n<think>\nold\n</think>\n\nold answer<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    assert prompt_prefilled(history + "<|im_start|>assistant\n<think>\n") is True
    assert prompt_prefilled(history + "<|im_start|>assistant\n<think>\n\n</think>\n\n") is False
    assert prompt_prefilled(history + "<|im_start|>assistant\n") is None
    assert prompt_prefilled(None) is None and prompt_prefilled("") is None


def test_request_prefilled_from_chat_template_kwargs() -> None:
    assert request_prefilled({"chat_template_kwargs": {"enable_thinking": False}}) is False
    assert request_prefilled({"chat_template_kwargs": {"thinking": False}}) is False
    assert request_prefilled({"chat_template_kwargs": {"reasoning_effort": "none"}}) is False
    assert request_prefilled({"chat_template_kwargs": {"enable_thinking": True}}) is None
    assert request_prefilled({"messages": []}) is None and request_prefilled(None) is None


def test_without_the_prompt_a_prefilled_family_reads_tagless_output_as_reasoning() -> None:
    """The #53284 symptom, which only the prompt (or the request) can resolve: a cut-off reasoning
    block and a template-closed one look the same in the output."""
    message = parse_message("Hello! How can I help you today?", QWEN3_THINKING)
    assert message["content"] == "" and message["reasoning_content"] == "Hello! How can I help you today?"


# -- through the hub: a request that switches thinking off (vLLM #53284) ----------------------


@pytest.mark.parametrize("stream", [False, True])
def test_hub_reads_thinking_off_requests_as_answers(stream: bool, tmp_path, monkeypatch) -> None:
    from concierge.models.deployment import parse_deployment
    from concierge.models.engine import EngineInfo
    from concierge.models.hub import ModelHub

    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    answer = "Paris is the capital of France."

    class Upstream:
        info = EngineInfo(kind="openai-upstream", model="deepseek-ai/DeepSeek-R1", capabilities={"chat"})

        def chat(self, request: dict[str, Any]) -> dict[str, Any]:
            message = {"role": "assistant", "content": answer}
            return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

        def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
            for token in _TOKEN.findall(answer):
                yield {"choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
            yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

        def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
            raise NotImplementedError

        def close(self) -> None:
            pass

    deployment = parse_deployment({"models": {"r1": {"model": "deepseek-r1", "url": "http://h/v1", "parse": True}}})
    hub = ModelHub(deployment, engine_factory=lambda spec: Upstream())

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        if not stream:
            return hub.chat("r1", request)["choices"][0]["message"]
        deltas = [c["choices"][0]["delta"] for c in hub.stream_chat("r1", request) if c.get("choices")]
        return merge_deltas(deltas)

    messages = [{"role": "user", "content": "Capital of France?"}]
    off = ask({"messages": messages, "chat_template_kwargs": {"thinking": False}})
    assert off["content"] == answer and not off.get("reasoning_content")
    # R1's template opens the block, so by default a tag-free answer is (cut-off) reasoning.
    on = ask({"messages": messages})
    assert on["reasoning_content"] == answer and not on["content"]
    hub.close()
