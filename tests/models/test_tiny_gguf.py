"""The tiny random Qwen2 GGUF, and the llama.cpp engine's OpenAI surface exercised with it.

The weights are noise, so assertions are about shapes and guarantees (grammars, tool-call
parsing, usage, limits), never about what the text says. Schemas use enums and bounded
numbers so that a random model still has to finish inside ``max_tokens``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from concierge.models.engine import ContextLengthError, Engine
from concierge.models.llamacpp import LlamaCppEngine
from concierge.models.tiny_gguf import QWEN25_CHAT_TEMPLATE, SPECIAL_TOKENS, build_tiny_qwen2_gguf

gguf = pytest.importorskip("gguf")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]},
                "celsius": {"type": "boolean"},
            },
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}
ORDER = {
    "type": "function",
    "function": {
        "name": "find_order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "integer", "minimum": 1, "maximum": 999}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=4096, n_parallel=2, n_threads=1)
    yield eng
    eng.close()


def _tool_args(call: dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == tool["function"]["name"]
    args = json.loads(call["function"]["arguments"])
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


def test_file_is_small_and_has_qwen_tokenizer(tiny_gguf: Path) -> None:
    assert tiny_gguf.stat().st_size < 1_000_000
    reader = gguf.GGUFReader(str(tiny_gguf))
    fields = reader.fields

    def text(key: str) -> str:
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    assert text("general.architecture") == "qwen2"
    assert text("tokenizer.ggml.model") == "gpt2"
    assert text("tokenizer.ggml.pre") == "qwen2"
    assert text("tokenizer.chat_template") == QWEN25_CHAT_TEMPLATE
    tokens_field = fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tokens_field.parts[i]).decode() for i in tokens_field.data]
    types_field = fields["tokenizer.ggml.token_type"]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    for special, control in SPECIAL_TOKENS:
        expected = gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED
        assert types[tokens.index(special)] == expected
    assert len(set(tokens[:256])) == 256  # the GPT-2 byte alphabet
    eos = int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert tokens[eos] == "<|im_end|>"


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_tiny_qwen2_gguf(tmp_path / "a.gguf", seed=3).read_bytes()
    b = build_tiny_qwen2_gguf(tmp_path / "b.gguf", seed=3).read_bytes()
    c = build_tiny_qwen2_gguf(tmp_path / "c.gguf", seed=4).read_bytes()
    assert a == b and a != c


def test_loads_and_generates_fast(tiny_gguf: Path) -> None:
    started = time.perf_counter()
    eng = LlamaCppEngine(tiny_gguf, n_ctx=1024, n_parallel=1, n_threads=1)
    loaded = time.perf_counter() - started
    try:
        assert isinstance(eng, Engine)
        started = time.perf_counter()
        out = eng.chat({"messages": USER, "max_tokens": 16, "seed": 1})
        generated = time.perf_counter() - started
    finally:
        eng.close()
    # Typically ~0.2 s and ~0.01 s; the margins absorb a busy shared CI machine.
    assert loaded < 3.0 and generated < 2.0, (loaded, generated)
    assert out["usage"]["completion_tokens"] > 0


def test_chat_shape(engine: LlamaCppEngine) -> None:
    out = engine.chat({"model": "tiny", "messages": USER, "max_tokens": 8, "seed": 1, "temperature": 0.7})
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"stop", "length"}
    usage = out["usage"]
    assert (
        usage["prompt_tokens"] > 0
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert engine.info.context_length == 2048 and engine.info.kind == "llama.cpp"
    assert engine.info.extra["supports_tools"] is True


def test_seed_makes_sampling_repeatable(engine: LlamaCppEngine) -> None:
    request = {"messages": USER, "max_tokens": 12, "seed": 42, "temperature": 1.0}
    assert engine.chat(request)["choices"][0]["message"] == engine.chat(request)["choices"][0]["message"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_output_validates(engine: LlamaCppEngine, seed: int) -> None:
    schema = {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": ["refund", "exchange", "track"]},
            "order_id": {"type": "integer", "minimum": 1, "maximum": 9999},
            "urgent": {"type": "boolean"},
        },
        "required": ["intent", "order_id", "urgent"],
        "additionalProperties": False,
    }
    out = engine.chat(
        {
            "messages": [{"role": "user", "content": "I want my money back for order 12"}],
            "max_tokens": 400,
            "seed": seed,
            "response_format": {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}},
        }
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_truncated_json_returns_length_not_error(engine: LlamaCppEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    out = engine.chat(
        {
            "messages": USER,
            "max_tokens": 2,
            "seed": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    # llama-server's non-streaming path would raise "does not match the expected format" here
    assert out["choices"][0]["finish_reason"] == "length"
    content = out["choices"][0]["message"]["content"]
    assert isinstance(content, str) and (not content.strip() or content.lstrip().startswith("{"))


@pytest.mark.parametrize("seed", [0, 1])
def test_tool_choice_required(engine: LlamaCppEngine, seed: int) -> None:
    out = engine.chat(
        {
            "messages": USER,
            "tools": [WEATHER, ORDER],
            "tool_choice": "required",
            "max_tokens": 300,
            "seed": seed,
        }
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    tool = WEATHER if call["function"]["name"] == "get_weather" else ORDER
    _tool_args(call, tool)


def test_tool_choice_named(engine: LlamaCppEngine) -> None:
    request = {
        "messages": USER,
        "tools": [WEATHER, ORDER],
        "tool_choice": {"type": "function", "function": {"name": "find_order"}},
        "max_tokens": 300,
        "seed": 5,
    }
    (call,) = engine.chat(request)["choices"][0]["message"]["tool_calls"]
    assert 1 <= _tool_args(call, ORDER)["order_id"] <= 999


def test_tool_choice_named_streams_one_tool_call(engine: LlamaCppEngine) -> None:
    request = {
        "messages": USER,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 300,
        "seed": 2,
    }
    chunks = list(engine.stream_chat(request))
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []]
    assert len(calls) == 1 and calls[0]["index"] == 0
    _tool_args(calls[0], WEATHER)
    assert not any(ch["delta"].get("content") for c in chunks for ch in c["choices"])
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]] == [
        "tool_calls"
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_tool_history_and_auto_choice(engine: LlamaCppEngine) -> None:
    """A finished tool round-trip renders through the template; 'auto' and 'none' answer."""
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "celsius": true}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    for choice in ("auto", "none"):
        out = engine.chat(
            {"messages": messages, "tools": [WEATHER], "tool_choice": choice, "max_tokens": 8, "seed": 3}
        )
        message = out["choices"][0]["message"]
        assert message["role"] == "assistant"
        assert out["usage"]["prompt_tokens"] > 300  # the tools block and history were rendered
        if choice == "none":
            assert not message.get("tool_calls")


def test_unknown_named_tool_is_bad_request(engine: LlamaCppEngine) -> None:
    from concierge.models.engine import BadRequestError

    with pytest.raises(BadRequestError, match="nope"):
        engine.chat(
            {
                "messages": USER,
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            }
        )


def test_stream_ends_with_usage_chunk(engine: LlamaCppEngine) -> None:
    chunks = list(engine.stream_chat({"model": "tiny", "messages": USER, "max_tokens": 10, "seed": 1}))
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in chunks)
    *body, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 10
    assert body[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"] for c in body)
    # stream_options from the caller do not matter: usage always comes
    chunks = list(
        engine.stream_chat({"messages": USER, "max_tokens": 3, "stream_options": {"include_usage": False}})
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_stop_sequences_and_max_completion_tokens(engine: LlamaCppEngine) -> None:
    out = engine.chat({"messages": USER, "max_completion_tokens": 5, "seed": 1})
    assert out["usage"]["completion_tokens"] <= 5
    grammar = 'root ::= "hello STOP more text"'
    out = engine.chat({"messages": USER, "max_tokens": 40, "grammar": grammar, "stop": ["STOP"]})
    assert out["choices"][0]["message"]["content"] == "hello "
    assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow(engine: LlamaCppEngine, stream: bool) -> None:
    request = {"messages": [{"role": "user", "content": "x " * 1500}], "max_tokens": 4}
    with pytest.raises(ContextLengthError, match="2048 tokens per request") as info:
        if stream:
            list(engine.stream_chat(request))
        else:
            engine.chat(request)
    assert info.value.status_code == 400 and info.value.code == "context_length_exceeded"
    # the engine is still healthy afterwards
    assert engine.chat({"messages": USER, "max_tokens": 2})["usage"]["completion_tokens"] == 2


def test_embeddings_mode(tiny_gguf: Path) -> None:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=1024, n_parallel=1, n_threads=1, embedding=True)
    try:
        vectors, tokens = eng.embed(["hello world", "refund my order", "hello world"])
        assert "embeddings" in eng.info.capabilities
    finally:
        eng.close()
    arr = np.asarray(vectors)
    assert arr.shape == (3, 64) and tokens > 0
    assert np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert np.allclose(arr[0], arr[2], atol=1e-5) and not np.allclose(arr[0], arr[1])


def test_chat_engine_refuses_embeddings(engine: LlamaCppEngine) -> None:
    from concierge.models.engine import BadRequestError

    with pytest.raises(BadRequestError, match="embedding=True"):
        engine.embed(["hi"])


# -- compact JSON ----------------------------------------------------------------------------

TICKET = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["refund", "exchange", "track"]},
        "order_id": {"type": "integer", "minimum": 1, "maximum": 9999},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "order_id", "urgent"],
    "additionalProperties": False,
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?$)')  # a cut string runs to the end


def _outside_strings(text: str) -> str:
    """The JSON text with every string (a cut-off last one too) emptied."""
    return _STRINGS.sub('""', text)


def _ticket_request(max_tokens: int, seed: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "I want my money back for order 12"}],
        "max_tokens": max_tokens,
        "seed": seed,
        "response_format": {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET}},
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_json_schema_is_compact_within_64_tokens(engine: LlamaCppEngine, seed: int) -> None:
    choice = engine.chat(_ticket_request(64, seed))["choices"][0]
    content = choice["message"]["content"]
    assert choice["finish_reason"] == "stop", content
    jsonschema.validate(json.loads(content), TICKET)
    assert not re.search(r"\s", _outside_strings(content)), content
    streamed = "".join(
        ch["delta"].get("content") or "" for c in engine.stream_chat(_ticket_request(64, seed)) for ch in c["choices"]
    )
    assert streamed == content


@pytest.mark.parametrize("seed", [0, 1])
def test_json_object_is_compact(engine: LlamaCppEngine, seed: int) -> None:
    request = {"messages": USER, "max_tokens": 48, "seed": seed, "response_format": {"type": "json_object"}}
    choice = engine.chat(request)["choices"][0]
    content = choice["message"]["content"]
    assert content.startswith("{") and not re.search(r"\s", _outside_strings(content)), content
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert choice["finish_reason"] == "length"


@pytest.mark.parametrize("seed", [0, 1])
def test_forced_tool_call_json_is_compact(engine: LlamaCppEngine, seed: int) -> None:
    request = {"messages": USER, "tools": [WEATHER, ORDER], "tool_choice": "required", "max_tokens": 64, "seed": seed}
    choice = engine.chat(request)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    _tool_args(call, WEATHER if call["function"]["name"] == "get_weather" else ORDER)


@pytest.mark.parametrize("stream", [False, True])
def test_cut_json_reports_length(engine: LlamaCppEngine, stream: bool) -> None:
    request = _ticket_request(4, 0)
    if stream:
        chunks = list(engine.stream_chat(request))
        content = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
        finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")]
    else:
        choice = engine.chat(request)["choices"][0]
        content, finishes = choice["message"]["content"], [choice["finish_reason"]]
    assert finishes == ["length"]
    assert content.startswith("{") and not content.endswith("}")
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


def test_json_whitespace_option_keeps_llama_cpp_grammar(tiny_gguf: Path) -> None:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=1024, n_parallel=1, n_threads=1, json_whitespace=True)
    try:
        assert eng.info.extra["json_whitespace"] is True
        body, _ = eng._prepare(_ticket_request(64, 0), stream=False)
        assert "grammar" not in body and body["response_format"]["type"] == "json_schema"
        spaced = [eng.chat(_ticket_request(64, seed))["choices"][0]["message"]["content"] for seed in range(3)]
    finally:
        eng.close()
    # The random model fills llama.cpp's free whitespace (which is what compact JSON prevents).
    assert any(re.search(r"\s", _outside_strings(text)) for text in spaced), spaced


@pytest.mark.slow
def test_smollm2_json_schema_is_compact() -> None:
    from concierge.models import locate
    from concierge.models.engine import ModelFileMissingError

    try:
        path = locate.smollm2_gguf()
    except ModelFileMissingError as exc:
        pytest.skip(str(exc))
    eng = LlamaCppEngine(path, n_ctx=1024, n_parallel=1, n_threads=2)
    schema = {
        "type": "object",
        "properties": {"intent": {"type": "string", "enum": ["refund", "exchange", "track"]}, "note": {"type": "string"}},
        "required": ["intent", "note"],
        "additionalProperties": False,
    }
    request = {
        "messages": [{"role": "user", "content": "I want a refund for order 12"}],
        "max_tokens": 64,
        "seed": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "intent", "schema": schema}},
    }
    try:
        choice = eng.chat(request)["choices"][0]
        cut = eng.chat({**request, "max_tokens": 5})["choices"][0]
    finally:
        eng.close()
    content = choice["message"]["content"]
    assert choice["finish_reason"] == "stop", content
    jsonschema.validate(json.loads(content), schema)
    assert not re.search(r"\s", _outside_strings(content)), content
    assert cut["finish_reason"] == "length" and not cut["message"]["content"].endswith("}")


def test_json_grammar_compacts_llguidance_and_gbnf(monkeypatch: pytest.MonkeyPatch) -> None:
    import xllamacpp

    from concierge.models.engine import BadRequestError
    from concierge.models.llamacpp import json_grammar

    compact = json_grammar(TICKET)
    if compact.startswith("%llguidance"):
        options = json.loads(compact.split("%json", 1)[1])["x-guidance"]
        assert options == {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
        assert "x-guidance" not in json_grammar(TICKET, whitespace=True)
    # A llama.cpp built without llguidance writes GBNF, whose ``space`` rule is the free whitespace.
    gbnf = 'root ::= "{" space "}" space\nspace ::= | " " | "\\n"{1,2} [ \\t]{0,20}\n'
    monkeypatch.setattr(xllamacpp, "json_schema_to_grammar", lambda schema: gbnf)
    assert json_grammar(TICKET) == 'root ::= "{" space "}" space\nspace ::= ""\n'
    assert json_grammar(TICKET, whitespace=True) == gbnf
    with pytest.raises(BadRequestError):
        json_grammar(["not", "a", "schema"])


_ALTERNATE_GRAMMAR_MODELS = """
import json, sys
from pathlib import Path
from concierge.models import locate
from concierge.models.llamacpp import LlamaCppEngine

paths = {"tiny": Path(sys.argv[1]), "smollm2": locate.smollm2_gguf()}
schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["n"], "additionalProperties": False}
request = {"messages": [{"role": "user", "content": "a number"}], "max_tokens": 16, "temperature": 0,
           "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}
for name in ["tiny", "smollm2"] * 3:
    engine = LlamaCppEngine(paths[name], n_ctx=512, n_parallel=1, n_threads=1)
    choice = engine.chat(dict(request))["choices"][0]
    engine.close()
    del engine
    print("RESULT", json.dumps([name, choice["finish_reason"], choice["message"]["content"]]), flush=True)
"""


@pytest.mark.slow
def test_models_with_other_vocabularies_take_turns_under_grammars(tiny_gguf: Path) -> None:
    """Load, decode under a JSON grammar, free; then the same with another vocabulary, three times.

    llama.cpp's llguidance caches one tokenizer by vocabulary address; before the engine kept the
    last grammar users alive past ``close()``, the second model here could get the first one's
    address and abort the process (``GGML_ASSERT(... llg_matcher_get_mask_byte_size ...)``: 2 of 3
    runs of this sequence without the hold; the likely abort of a CI run). Run in a child process, so an abort fails this test only."""
    import os
    import subprocess
    import sys

    from concierge.models import locate
    from concierge.models.engine import ModelFileMissingError

    try:
        locate.smollm2_gguf()
    except ModelFileMissingError as exc:
        pytest.skip(str(exc))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, "-c", _ALTERNATE_GRAMMAR_MODELS, str(tiny_gguf)],
                          env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-1500:]
    results = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert [name for name, _, _ in results] == ["tiny", "smollm2"] * 3
    for _, finish, content in results:
        if finish == "stop":
            assert 1 <= json.loads(content)["n"] <= 9
