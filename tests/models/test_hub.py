"""Deployment config parsing and the ModelHub, with fake engines (one test uses the real ones)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concierge.models.deployment import (
    AliasSpec,
    DeploymentError,
    load_deployment,
    load_registry,
    parse_deployment,
    register_alias,
)
from concierge.models.engine import (
    BadRequestError,
    EngineInfo,
    EngineUnavailableError,
    ModelError,
    ModelFileMissingError,
    ModelNotFoundError,
)
from concierge.models.hub import CallRecord, ModelHub, build_engine


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep the in-house registry of the developer's machine out of these tests."""
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------- fakes


class FakeEngine:
    """Implements the Engine protocol; replies with canned text."""

    def __init__(self, spec: AliasSpec, reply: str = "Hello there", fail: Exception | None = None) -> None:
        self.spec = spec
        self.reply = reply
        self.fail = fail
        self.requests: list[dict[str, Any]] = []
        self.closed = 0
        self.streams_closed = 0
        caps = {"embeddings"} if spec.kind == "embeddings" else {"chat"}
        self.info = EngineInfo(
            kind=spec.engine_kind, model=f"fake:{spec.source_label}", context_length=2048, capabilities=caps
        )

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if self.fail:
            raise self.fail
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "engine-name",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.requests.append(request)
        return self._chunks()

    def _chunks(self) -> Iterator[dict[str, Any]]:
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "engine-name"}
        try:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            for i in range(0, len(self.reply), 4):
                if self.fail and i >= 4:
                    raise self.fail
                yield {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": self.reply[i : i + 4]}, "finish_reason": None}
                    ],
                }
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
            }
        finally:
            self.streams_closed += 1

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        if self.fail:
            raise self.fail
        return [[1.0, 0.0] for _ in texts], sum(len(t.split()) for t in texts)

    def close(self) -> None:
        self.closed += 1


class Factory:
    def __init__(self, **engine_kwargs: Any) -> None:
        self.built: list[FakeEngine] = []
        self.engine_kwargs = engine_kwargs
        self.lock = threading.Lock()

    def __call__(self, spec: AliasSpec) -> FakeEngine:
        time.sleep(0.02)  # widen the race window for the concurrency test
        engine = FakeEngine(spec, **self.engine_kwargs)
        with self.lock:
            self.built.append(engine)
        return engine


def make_hub(config: dict | None = None, **engine_kwargs: Any) -> tuple[ModelHub, Factory, list[CallRecord]]:
    records: list[CallRecord] = []
    factory = Factory(**engine_kwargs)
    deployment = parse_deployment(config) if config else load_deployment(None)
    return ModelHub(deployment, records.append, engine_factory=factory), factory, records


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- deployment config


def test_example_config_parses(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "weights"))
    path = write(
        tmp_path,
        "deploy.yaml",
        """
models:
  support-agent: {model: qwen3-4b, gguf: $MODELS_DIR/Qwen3-4B-Q4_K_M.gguf, n_ctx: 8192}
  local-rel: {model: qwen3-0.6b, gguf: weights/Qwen3-0.6B-Q8_0.gguf, lora: [{path: adapters/a.gguf, scale: 0.5}]}
  shop-assistant: {model: deepseek-v3, url: http://vllm.internal:8000/v1/, served_name: deepseek-ai/DeepSeek-V3,
                   api_key_env: VLLM_KEY}
  embed: {model: all-minilm-l6-v2, embedded: minilm}
  chat: {model: smollm2-135m-instruct, embedded: smollm2, parse: auto, in_house: false,
         provenance: {owner: ml-team}}
defaults: {support: support-agent, shop: shop-assistant, embed: embed, chat: chat}
""",
    )
    d = load_deployment(path)
    agent = d.aliases["support-agent"]
    assert agent.source == "gguf" and agent.gguf == tmp_path / "weights" / "Qwen3-4B-Q4_K_M.gguf"
    assert agent.n_ctx == 8192 and agent.kind == "chat" and agent.engine_kind == "llama.cpp"
    rel = d.aliases["local-rel"]
    assert rel.gguf == tmp_path / "weights" / "Qwen3-0.6B-Q8_0.gguf"
    assert rel.lora[0].path == tmp_path / "adapters" / "a.gguf" and rel.lora[0].scale == 0.5
    shop = d.aliases["shop-assistant"]
    assert shop.url == "http://vllm.internal:8000/v1" and shop.engine_kind == "openai-upstream"
    assert d.aliases["embed"].kind == "embeddings" and d.aliases["embed"].engine_kind == "onnx-embedding"
    assert d.aliases["chat"].provenance == {"owner": "ml-team"} and d.aliases["chat"].parse is None
    assert d.default("support") == "support-agent" and d.default("unknown-role") == "unknown-role"
    assert d.warnings == ()


def test_toml_config(tmp_path):
    path = write(
        tmp_path,
        "deploy.toml",
        """
[models.agent]
model = "qwen3-4b"
url = "http://localhost:8000/v1"
[defaults]
support = "agent"
""",
    )
    d = load_deployment(path)
    assert d.aliases["agent"].served_name == "Qwen/Qwen3-4B"  # the catalogue's hf_id by default
    assert d.defaults == {"support": "agent"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "models:\n  a: {model: qwen3-4b, gguf: x.gguf, url: http://h/v1}\n",
            "exactly one source.*found gguf and url",
        ),
        ("models:\n  a: {model: qwen3-4b}\n", "exactly one source.*found none"),
        ("models:\n  a: {embedded: llama}\n", "embedded must be one of smollm2, minilm"),
        (
            "models:\n  a: {embedded: smollm2, nctx: 5}\n",
            "unknown setting 'nctx' \\(did you mean 'n_ctx'\\?\\)",
        ),
        ("models:\n  a: {embedded: smollm2, n_ctx: -1}\n", "n_ctx must be a positive integer"),
        ("models:\n  a: {url: ftp://h}\n", "url must start with http"),
        ("models:\n  a: {model: my-own-model, url: http://h/v1}\n", "need served_name"),
        ("models:\n  a: {model: qwen3-4b, url: http://h/v1, n_ctx: 4096}\n", "n_ctx only applies to local"),
        (
            "models:\n  a: {model: qwen3-4b, gguf: x.gguf, api_key_env: K}\n",
            "api_key_env only applies to url",
        ),
        ("models:\n  a: {model: qwen3-4b, gguf: x.bin}\n", "must name a .gguf file"),
        ("models:\n  a: {embedded: minilm, kind: chat}\n", "kind 'chat' does not match"),
        (
            "models:\n  a: {embedded: smollm2, model: qwen3-4b}\n",
            "embedded 'smollm2' is smollm2-135m-instruct",
        ),
        ("models:\n  a: {embedded: minilm, lora: [x.gguf]}\n", "lora only applies to chat"),
        ("models:\n  a: {embedded: smollm2, parse: maybe}\n", "parse must be true, false or auto"),
        ("models:\n  a: {embedded: smollm2}\ndefaults: {chat: b}\n", "defaults.chat names unknown alias 'b'"),
        ("models: {}\n", "at least one alias"),
        ("model:\n  a: {embedded: smollm2}\n", "unknown top-level key 'model'"),
        ("models:\n  a: {embedded: smollm2\n", "not valid yaml"),
    ],
)
def test_config_errors_are_one_line_naming_file_and_alias(tmp_path, body, message):
    path = write(tmp_path, "deploy.yaml", body)
    with pytest.raises(DeploymentError, match=message) as info:
        load_deployment(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    file_level = ("defaults.", "at least one alias", "top-level", "not valid")
    if not any(marker in message for marker in file_level):
        assert "alias 'a'" in text


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(DeploymentError, match=str(tmp_path / "nope.yaml")):
        load_deployment(tmp_path / "nope.yaml")


def test_unknown_catalogue_id_warns_and_still_serves(tmp_path):
    path = write(tmp_path, "deploy.yaml", "models:\n  a: {model: qwen3-4, gguf: m.gguf}\n")
    d = load_deployment(path)
    assert len(d.warnings) == 1 and "not in the catalogue" in d.warnings[0] and "qwen3-4b" in d.warnings[0]
    hub = ModelHub(d, engine_factory=Factory())
    assert hub.card("a").catalogue_id is None
    assert hub.chat("a", {"messages": [{"role": "user", "content": "hi"}]})["model"] == "a"


def test_missing_gguf_reports_path_and_download_command(tmp_path):
    path = write(
        tmp_path, "deploy.yaml", "models:\n  agent: {model: qwen3-4b, gguf: w/Qwen3-4B-Q4_K_M.gguf}\n"
    )
    d = load_deployment(path)
    problems = d.check_files()
    assert len(problems) == 1
    assert str(tmp_path / "w" / "Qwen3-4B-Q4_K_M.gguf") in problems[0]
    assert "hf download Qwen/Qwen3-4B-GGUF Qwen3-4B-Q4_K_M.gguf" in problems[0]
    records: list[CallRecord] = []
    hub = ModelHub(d, records.append)  # the real factory: fails before importing llama.cpp
    with pytest.raises(ModelFileMissingError, match="Qwen3-4B-Q4_K_M.gguf not found"):
        hub.chat("agent", {"messages": [{"role": "user", "content": "hi"}]})
    assert records[-1].status == 503 and "hf download" in records[-1].error


def test_registry_merge_precedence_and_register(tmp_path):
    home = tmp_path / "home"
    register_alias(
        "retail-inhouse",
        {
            "model": "smollm2-135m-instruct",
            "embedded": "smollm2",
            "lora": [{"path": "adapters/retail.gguf", "scale": 1.0}],
            "provenance": {"dataset": "tau2-retail"},
        },
    )
    registry = json.loads((home / "models.json").read_text())
    assert registry["aliases"]["retail-inhouse"]["in_house"] is True
    loaded = load_registry()
    spec = loaded["retail-inhouse"]
    assert spec.in_house and spec.lora[0].path == home / "adapters" / "retail.gguf"
    d = load_deployment(None)
    assert "retail-inhouse" in d.aliases and d.aliases["retail-inhouse"].in_house
    # the config wins over the registry on a clash
    register_alias("chat", {"model": "qwen3-4b", "url": "http://x/v1"})
    d = load_deployment(None)
    assert d.aliases["chat"].source == "embedded" and any("shadowed" in w for w in d.warnings)
    assert load_deployment(None, include_registry=False).aliases.keys() == {
        "chat",
        "support-agent",
        "shop-assistant",
        "embed",
    }
    with pytest.raises(DeploymentError):
        register_alias("bad", {"embedded": "nope"})


def test_with_alias_adds_an_in_house_alias():
    d = load_deployment(None, include_registry=False)
    d2 = d.with_alias("support-v2", {"model": "smollm2-135m-instruct", "embedded": "smollm2"})
    assert "support-v2" in d2 and "support-v2" not in d and d2.aliases["support-v2"].in_house
    hub = ModelHub(d2, engine_factory=Factory())
    assert hub.card("support-v2").in_house
    card = hub.register("retail-v3", {"model": "smollm2-135m-instruct", "embedded": "smollm2", "n_ctx": 1024})
    assert card.in_house and card.context_length == 512 and "retail-v3" in hub.aliases()


# --------------------------------------------------------------------------- hub


def test_default_deployment_shares_one_chat_engine_across_aliases():
    hub, factory, records = make_hub()
    request = {"messages": [{"role": "user", "content": "hi"}]}
    for alias in ("chat", "support-agent", "shop-assistant"):
        assert hub.chat(alias, request)["model"] == alias
    assert len(factory.built) == 1
    hub.embed("embed", ["a b"])
    assert len(factory.built) == 2
    assert sorted(hub.loaded()) == ["chat", "embed", "shop-assistant", "support-agent"]
    hub.close()
    assert [e.closed for e in factory.built] == [1, 1]
    with pytest.raises(EngineUnavailableError):
        hub.chat("chat", request)


def test_concurrent_first_calls_build_each_engine_once():
    hub, factory, _ = make_hub()
    errors: list[BaseException] = []

    def call(alias: str) -> None:
        try:
            hub.chat(alias, {"messages": [{"role": "user", "content": "x"}]})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=call, args=(a,)) for a in ["chat", "support-agent", "shop-assistant"] * 4
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(factory.built) == 1


def test_model_cards():
    hub, _, _ = make_hub()
    cards = {c.alias: c for c in hub.models()}
    # The embedded defaults, plus the committed in-house adapter from the packaged registry.
    assert set(cards) == {"chat", "support-agent", "shop-assistant", "embed", "retail-inhouse", "retail-agent-inhouse"}
    assert cards["retail-inhouse"].in_house and not cards["chat"].in_house
    # The committed in-house agent model drives the constrained agent mode (a llama.cpp alias).
    assert cards["retail-agent-inhouse"].in_house and cards["retail-agent-inhouse"].actions == "constrained"
    assert cards["support-agent"].kind == "chat" and cards["support-agent"].engine == "llama.cpp"
    assert cards["support-agent"].catalogue_id == "smollm2-135m-instruct"
    assert cards["support-agent"].context_length == 4096  # n_ctx 8192 over 2 slots
    assert cards["embed"].kind == "embeddings" and cards["embed"].engine == "onnx-embedding"
    hub.chat("chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert hub.card("chat").context_length == 2048  # the loaded engine's own figure
    with pytest.raises(ModelNotFoundError):
        hub.card("gpt-4")


def test_observer_gets_records_for_chat_stream_and_embed():
    hub, _, records = make_hub()
    request = {"messages": [{"role": "user", "content": "hi"}]}
    hub.chat("support-agent", request, tenant="acme")
    chunks = list(hub.stream_chat("shop-assistant", request, tenant="acme"))
    hub.embed("embed", ["one two", "three"], tenant="acme")
    chat, stream, embed = records
    assert (chat.alias, chat.endpoint, chat.tenant, chat.status, chat.stream) == (
        "support-agent",
        "chat",
        "acme",
        200,
        False,
    )
    assert (
        (chat.prompt_tokens, chat.completion_tokens) == (7, 3)
        and chat.latency_s > 0
        and chat.ttft_s is not None
    )
    assert stream.stream and (stream.prompt_tokens, stream.completion_tokens) == (7, 5)
    assert stream.ttft_s is not None and 0 < stream.ttft_s <= stream.latency_s
    assert all(c["model"] == "shop-assistant" for c in chunks)
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello there"
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert (embed.endpoint, embed.prompt_tokens, embed.completion_tokens) == ("embeddings", 3, 0)


def test_unknown_alias_and_wrong_kind():
    hub, _, records = make_hub()
    with pytest.raises(ModelNotFoundError, match="available: chat, support-agent, shop-assistant, embed"):
        hub.chat("gpt-4", {"messages": []})
    assert records[-1].status == 404 and records[-1].alias == "gpt-4"
    with pytest.raises(BadRequestError, match="'embed' is an embeddings model; chat models: chat"):
        hub.chat("embed", {"messages": []})
    assert records[-1].status == 400
    with pytest.raises(BadRequestError, match="embeddings models: embed"):
        hub.embed("chat", ["x"])
    with pytest.raises(BadRequestError):
        hub.stream_chat("embed", {"messages": []})  # raises at the call, not at the first chunk
    with pytest.raises(BadRequestError, match="list of strings"):
        hub.embed("embed", "just a string")  # type: ignore[arg-type]


def test_engine_errors_are_recorded_and_re_raised():
    unavailable = EngineUnavailableError("upstream down")
    hub, _, records = make_hub(fail=unavailable)
    with pytest.raises(EngineUnavailableError) as info:
        hub.chat("chat", {"messages": []})
    assert info.value is unavailable
    assert (records[-1].status, records[-1].error) == (503, "upstream down")
    with pytest.raises(EngineUnavailableError):
        hub.embed("embed", ["x"])
    assert records[-1].endpoint == "embeddings" and records[-1].status == 503

    hub2, _, records2 = make_hub(fail=RuntimeError("segfault-ish"))
    with pytest.raises(ModelError, match="engine failed: segfault-ish") as info2:
        hub2.chat("chat", {"messages": []})
    assert type(info2.value) is ModelError and records2[-1].status == 500


def test_stream_failure_midway_and_client_close():
    hub, factory, records = make_hub(fail=EngineUnavailableError("died"), reply="abcdefghijkl")
    stream = hub.stream_chat("chat", {"messages": []})
    got = []
    with pytest.raises(EngineUnavailableError):
        for chunk in stream:
            got.append(chunk)
    assert got and records[-1].status == 503 and records[-1].stream

    hub, factory, records = make_hub(reply="a long reply in many chunks")
    stream = hub.stream_chat("chat", {"messages": []})
    next(stream)
    next(stream)
    stream.close()  # the client went away
    assert records[-1].status == 499 and factory.built[0].streams_closed == 1


def test_observer_failure_does_not_fail_the_call_and_extra_observers():
    def broken(_record: CallRecord) -> None:
        raise RuntimeError("db down")

    factory = Factory()
    hub = ModelHub(load_deployment(None), broken, engine_factory=factory)
    extra: list[CallRecord] = []
    hub.add_observer(extra.append)
    assert hub.chat("chat", {"messages": []})["choices"][0]["message"]["content"] == "Hello there"
    assert len(extra) == 1  # still told, after the broken one
    hub.remove_observer(extra.append)
    hub.chat("chat", {"messages": []})
    assert len(extra) == 1
    hub.warm_up("embed")
    assert len(factory.built) == 2 and "embed" in hub.loaded()


def test_missing_api_key_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_FOR_TEST", raising=False)
    d = parse_deployment(
        {
            "models": {
                "up": {
                    "model": "qwen3-4b",
                    "url": "http://127.0.0.1:9/v1",
                    "api_key_env": "NO_SUCH_KEY_FOR_TEST",
                }
            }
        }
    )
    with pytest.raises(EngineUnavailableError, match="NO_SUCH_KEY_FOR_TEST"):
        build_engine(d.aliases["up"])


# --------------------------------------------------------------------------- format parsing in the hub

RAW_QWEN = (
    "<think>\nweather needs a tool\n</think>\n\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
CONFIG = {
    "models": {
        "up": {"model": "qwen3-4b", "url": "http://127.0.0.1:9/v1"},
        "up-noparse": {"model": "qwen3-4b", "url": "http://127.0.0.1:9/v1", "parse": False},
        "local": {"model": "qwen3-4b", "gguf": "/m/Qwen3-4B-Q4_K_M.gguf"},
        "local-forced": {
            "model": "qwen3-4b",
            "gguf": "/m/Qwen3-4B-Q4_K_M.gguf",
            "parse": True,
            "n_ctx": 2048,
        },
    }
}


TOOLS = {
    "messages": [],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
}


def test_upstream_raw_tags_are_parsed_in_auto_mode():
    hub, _, _ = make_hub(CONFIG, reply=RAW_QWEN)
    response = hub.chat("up", TOOLS)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == "weather needs a tool"
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    untouched = hub.chat("up-noparse", TOOLS)
    assert untouched["choices"][0]["message"]["content"] == RAW_QWEN
    # llama.cpp parses its own output: auto mode leaves it alone
    assert hub.chat("local", TOOLS)["choices"][0]["message"]["content"] == RAW_QWEN
    forced = hub.chat("local-forced", TOOLS)
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_upstream_stream_is_parsed_and_plain_text_passes():
    hub, _, records = make_hub(CONFIG, reply=RAW_QWEN)
    chunks = list(hub.stream_chat("up", TOOLS))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "weather needs a tool"
    assert not any(d.get("content") for d in deltas)
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert calls[1]["function"]["arguments"] == '{"city": "Paris"}'
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["usage"] and all(c["model"] == "up" for c in chunks)
    assert records[-1].completion_tokens == 5

    # Without tools in the request, only reasoning is split off; tool markup stays text.
    no_tools = hub.chat("up", {"messages": []})["choices"][0]
    assert no_tools["message"]["reasoning_content"] == "weather needs a tool"
    assert no_tools["message"]["content"].startswith("<tool_call>") and no_tools["finish_reason"] == "stop"

    plain, _, _ = make_hub(CONFIG, reply="Just 2 < 3, no tags at all.")
    chunks = list(plain.stream_chat("up", {"messages": []}))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Just 2 < 3, no tags at all."


# --------------------------------------------------------------------------- real engines


@pytest.mark.slow
def test_default_deployment_with_real_engines():
    pytest.importorskip("concierge.models.llamacpp", reason="llama.cpp engine module not written yet")
    pytest.importorskip("concierge.models.embeddings", reason="embedding engine module not written yet")
    from concierge.models import locate

    try:
        locate.smollm2_gguf()
        locate.minilm_onnx()
        locate.minilm_tokenizer()
    except ModelFileMissingError as exc:
        pytest.skip(f"embedded model packages not installed: {exc}")
    records: list[CallRecord] = []
    with ModelHub.from_config(None, records.append) as hub:
        request = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}
        first = hub.chat("support-agent", request, tenant="t1")
        assert first["model"] == "support-agent" and first["choices"][0]["message"]["role"] == "assistant"
        chunks = list(hub.stream_chat("shop-assistant", request))
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        assert len(hub._engines) == 1  # both aliases on one llama.cpp engine
        vectors, tokens = hub.embed("embed", ["hello world", "bonjour"])
        assert len(vectors) == 2 and len(vectors[0]) == 384 and tokens > 0
        cards = {c.alias: c for c in hub.models()}
        assert cards["support-agent"].source.endswith(".gguf")
    assert [r.status for r in records] == [200, 200, 200]
    assert records[0].completion_tokens > 0 and records[1].ttft_s is not None


# --------------------------------------------------------------------------- json_whitespace


def test_json_whitespace_is_a_local_model_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    d = parse_deployment(
        {"models": {"compact": {"gguf": str(gguf)}, "spaced": {"gguf": str(gguf), "json_whitespace": True}}}
    )
    assert d.get("compact").json_whitespace is False and d.get("spaced").json_whitespace is True
    assert d.get("compact").engine_key() != d.get("spaced").engine_key()
    for bad, match in [
        ({"gguf": str(gguf), "json_whitespace": "yes"}, "json_whitespace must be true or false"),
        ({"url": "http://h/v1", "served_name": "m", "json_whitespace": True}, "only applies to local models"),
    ]:
        with pytest.raises(DeploymentError, match=match):
            parse_deployment({"models": {"x": bad}})

    import concierge.models.llamacpp as llamacpp
    from concierge.models.plugin import llamacpp_engine

    seen: dict[str, Any] = {}
    monkeypatch.setattr(llamacpp, "LlamaCppEngine", lambda path, **kw: seen.update(kw) or "engine")
    llamacpp_engine(d.get("spaced"), {})
    assert seen["json_whitespace"] is True
