"""ModelHub: every model call in concierge goes through here, whatever the engine.

The hub resolves a deployment alias (``support-agent``, ``shop-assistant``, ``embed`` ...)
to an engine, applies the model family's output format (reasoning blocks, tool calls) when
the engine returns raw text, and reports each call to an observer, so metering, metrics
and provenance happen in one place for the gateway, the shop and the support agent alike.

INTERFACE CONTRACT (other packages code against exactly this):

    hub = ModelHub(deployment, observer=callable_or_None)
    hub.models() -> list[ModelCard]
    hub.card(alias) -> ModelCard                      # ModelNotFoundError if unknown
    hub.chat(alias, request, tenant=None) -> dict     # OpenAI chat.completion dict
    hub.stream_chat(alias, request, tenant=None) -> Iterator[dict]   # chunks, last has usage
    hub.embed(alias, texts, tenant=None) -> tuple[list[list[float]], int]
    hub.engine_restarts -> dict[str, int]             # restarts per alias (see below)
    hub.close()
    ModelHub.from_config(path_or_None) -> ModelHub    # None: the embedded default deployment

That contract is the :class:`~concierge.models.engine.Hub` protocol (with its smaller layers
``ChatHub`` and ``ServingHub``); :func:`as_hub` makes a full Hub of any ServingHub (a test fake,
a wrapper), so code taking a Hub calls ``hub.open_stream``, ``hub.deployment.role(...)`` and
``hub.add_observer`` without probing.

Engines are built lazily, once per distinct source (aliases with the same file or URL and
the same settings share one engine), under a per-source lock so concurrent first calls
load a model once. ``stream_chat`` checks the alias and starts the engine before it
returns, so a bad alias or a missing file raises at the call, not at the first chunk.

Engine restart: when a call fails because the engine itself is gone (see
:func:`is_fatal_engine_error`: its process or server died, not a bad request), the hub drops that
engine from its table, closes it and logs one line; the next request builds a new one from the
alias's spec, under the same per-source lock, so concurrent requests restart it once. Restarts are
counted per alias in ``hub.engine_restarts`` and flagged on the failed call's
``CallRecord.engine_restarted``, which the gateway's observer turns into a Prometheus counter.

Format parsing (per alias ``parse: true | false | auto``, default auto): llama.cpp parses
reasoning and tool calls itself, so auto never re-parses its output; for an upstream, auto
re-parses a whole message only when it contains the family's raw tags, and streams pass
through a :class:`~concierge.models.formats.StreamParser` that leaves tag-free text alone.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from concierge import plugins
from concierge.models.deployment import (
    DEFAULT_N_CTX,
    DEFAULT_N_PARALLEL,
    AliasSpec,
    Deployment,
    load_deployment,
)
from concierge.models.engine import (
    PENDING,
    BadRequestError,
    Engine,
    EngineUnavailableError,
    Hub,
    ModelError,
    ModelFileMissingError,
    ModelNotFoundError,
    Roles,
    ServingHub,
)
from concierge.models.formats import ChatFormat, StreamParser, has_raw_tags, parse_message, request_prefilled

log = logging.getLogger(__name__)


@dataclass
class ModelCard:
    """One served alias, as /v1/models and the operator console show it."""

    alias: str
    kind: str  # "chat" | "embeddings"
    catalogue_id: str | None  # entry in the model catalogue, e.g. "smollm2-135m-instruct"
    engine: str  # "llama.cpp" | "openai-upstream" | "onnx-embedding" | a plugin engine's name
    source: str  # GGUF path or upstream URL (what is actually served)
    context_length: int | None = None
    owned_by: str = "concierge"
    in_house: bool = False
    actions: str = "tools"  # how the support agent takes actions: "tools" | "constrained"
    guided_lead: str = "rules"  # who decides guided mode's command: "rules" | "model"
    query_model: str = "auto"  # when the shopping assistant's model reads a request: "auto" | "always" | "never"
    answer_model: str = "always"  # whether it writes the shop's answer: "always" | "never" (the template)


def alias_option(hub: Any, alias: str | None, option: str) -> Any:
    """A deployment option from an alias's model card (``actions``, ``guided_lead``, ``query_model``,
    ``answer_model``); None for a hub without model cards or an alias it does not know."""
    if not isinstance(hub, ServingHub) or not alias:
        return None
    try:
        card = hub.card(alias)
    except ModelError:
        return None
    return getattr(card, option, None)


@dataclass
class CallRecord:
    """One model call, reported to the observer after it finishes (or fails)."""

    alias: str
    endpoint: str  # "chat" | "embeddings"
    tenant: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # time to first token (streaming and non-streaming)
    latency_s: float = 0.0
    status: int = 200
    error: str | None = None
    stream: bool = False
    engine_restarted: bool = False  # this failure retired the engine; the next call builds a new one


Observer = Callable[[CallRecord], None]
EngineFactory = Callable[[AliasSpec], Engine]

CLIENT_CLOSED = 499  # nginx's code for "the client went away": a stream closed before its end


def _embedded_path(name: str) -> Path:
    from concierge.models import locate

    return locate.embedded_path(name)


def build_engine(spec: AliasSpec) -> Engine:
    """The engine for an alias, from the factory registered under its engine name.

    ``gguf:`` and ``embedded: smollm2`` aliases get ``llama.cpp``, ``url:`` ones ``openai-upstream``,
    ``embedded: minilm`` ``onnx-embedding`` (all in :mod:`concierge.models.plugin`); ``engine: NAME``
    aliases get the plugin engine registered as NAME, which is handed the alias's ``options:``.
    Each factory imports its runtime lazily.
    """
    name = spec.engine_kind
    try:
        factory = plugins.get("engines", name)
    except plugins.PluginError as exc:  # e.g. the plugin's engine module needs an SDK that is missing
        raise EngineUnavailableError(f"alias {spec.alias!r}: {exc}") from exc
    if factory is None:
        known = ", ".join(plugins.names("engines"))
        raise EngineUnavailableError(f"alias {spec.alias!r}: no engine {name!r} is registered (known: {known})")
    engine = factory(spec, dict(spec.options))
    if not isinstance(engine, Engine):
        plugin = plugins.entries("engines")[name].plugin
        raise EngineUnavailableError(
            f"alias {spec.alias!r}: engine {name!r} from plugin {plugin} returned a {type(engine).__name__}, "
            "which lacks the Engine methods (info, chat, stream_chat, embed, close)"
        )
    return engine


def is_fatal_engine_error(exc: BaseException, spec: AliasSpec) -> bool:
    """Whether ``exc`` means the engine serving ``spec`` is gone (restart it), not a bad request.

    An error may say so itself with a boolean ``fatal`` attribute. Otherwise: an exception that
    escaped the engine's own error mapping (not a :class:`ModelError`) leaves the engine in an
    unknown state, so it is not reused; an :class:`EngineUnavailableError` from an engine that
    runs here (llama.cpp, ONNX) means its server is down. An upstream URL's 503 is not fatal: the
    server is someone else's, and a new client would not bring it back. Request errors (4xx) and
    a model's 500 answers never are, so a crafted request cannot make the hub reload a model.
    """
    flag = getattr(exc, "fatal", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, ModelFileMissingError):
        return False
    if isinstance(exc, EngineUnavailableError):
        return spec.source != "url"
    return not isinstance(exc, ModelError)


def _usage_tokens(usage: Any) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _has_output(delta: dict[str, Any]) -> bool:
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))


class ModelHub:
    """Aliases -> engines, with format parsing and one observer call per model call."""

    def __init__(
        self,
        deployment: Deployment,
        observer: Observer | None = None,
        *,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.deployment = deployment
        self.observer = observer
        self._observers: list[Observer] = []  # more listeners (gateway metrics), beside ``observer``
        self._factory = engine_factory or build_engine
        self._engines: dict[tuple[Any, ...], Engine] = {}
        self._building: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.engine_restarts: dict[str, int] = {}  # alias -> engines retired after a fatal error

    @classmethod
    def from_config(
        cls,
        path: str | Path | None = None,
        observer: Observer | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        include_registry: bool = True,
    ) -> ModelHub:
        """A hub for the deployment file at ``path`` (None: the embedded default), registries merged."""
        deployment = load_deployment(path, include_registry=include_registry)
        return cls(deployment, observer, engine_factory=engine_factory)

    # -- aliases and cards ------------------------------------------------------------------

    def aliases(self, kind: str | None = None) -> list[str]:
        return [a for a, s in self.deployment.aliases.items() if kind is None or s.kind == kind]

    def spec(self, alias: str) -> AliasSpec:
        spec = self.deployment.get(alias) if isinstance(alias, str) else None
        if spec is None:
            known = ", ".join(self.deployment.aliases) or "none"
            raise ModelNotFoundError(f"model {alias!r} does not exist; available: {known}", param="model")
        return spec

    def card(self, alias: str) -> ModelCard:
        spec = self.spec(alias)
        entry = spec.catalogue_entry
        engine = self._engines.get(spec.engine_key())
        source = spec.source_label
        if engine is not None and spec.source != "url":
            source = engine.info.model
        elif spec.source == "embedded":
            try:
                source = str(_embedded_path(str(spec.embedded)))
            except ModelError:
                pass  # not installed: the card still lists the alias; the call will say why
        if engine is not None and engine.info.context_length:
            context = engine.info.context_length
        elif spec.kind == "chat" and spec.source in ("gguf", "embedded"):
            # What one request gets before the engine is loaded: llama.cpp splits n_ctx over its slots.
            context = (spec.n_ctx or DEFAULT_N_CTX) // (spec.n_parallel or DEFAULT_N_PARALLEL)
        else:
            context = spec.context_length or (entry.context_length if entry else None)
        return ModelCard(
            alias=spec.alias,
            kind=spec.kind,
            catalogue_id=entry.id if entry else None,
            engine=spec.engine_kind,
            source=source,
            context_length=context,
            in_house=spec.in_house,
            actions=spec.agent_actions,
            guided_lead=spec.guided_lead,
            query_model=spec.query_model,
            answer_model=spec.answer_model,
        )

    def models(self) -> list[ModelCard]:
        return [self.card(alias) for alias in self.deployment.aliases]

    def register(self, alias: str, spec: AliasSpec | dict[str, Any]) -> ModelCard:
        """Serve a new (or replaced) alias from now on, e.g. an adapter training just registered."""
        with self._lock:
            self.deployment = self.deployment.with_alias(alias, spec)
        return self.card(alias)

    def loaded(self) -> list[str]:
        """Aliases whose engine is already built."""
        return [a for a, s in self.deployment.aliases.items() if s.engine_key() in self._engines]

    # -- engines ----------------------------------------------------------------------------

    def engine(self, alias: str) -> Engine:
        """The engine serving ``alias``, built on first use (thread-safe, shared per source)."""
        return self._engine_for(self.spec(alias))

    def warm_up(self, alias: str) -> None:
        """Load the alias's engine now (model loading is the slow part of a first call)."""
        self.engine(alias)

    def _engine_for(self, spec: AliasSpec) -> Engine:
        key = spec.engine_key()
        engine = self._engines.get(key)
        if engine is not None:
            return engine
        with self._lock:
            if self._closed:
                raise EngineUnavailableError("the model hub is closed")
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one load per source; other sources load in parallel
            engine = self._engines.get(key)
            if engine is None:
                started = time.perf_counter()
                engine = self._factory(spec)
                log.info(
                    "loaded %s for %r in %.2fs", spec.source_label, spec.alias, time.perf_counter() - started
                )
                with self._lock:
                    if self._closed:
                        engine.close()
                        raise EngineUnavailableError("the model hub is closed")
                    self._engines[key] = engine
        return engine

    def _engine_failed(self, spec: AliasSpec, engine: Engine, exc: BaseException, record: CallRecord) -> None:
        """Retire ``engine`` after a fatal error (once, however many calls saw it fail)."""
        if not is_fatal_engine_error(exc, spec):
            return
        key = spec.engine_key()
        with self._lock:
            if self._engines.get(key) is not engine:
                return  # another call retired it already (or the hub closed)
            del self._engines[key]
            self.engine_restarts[spec.alias] = self.engine_restarts.get(spec.alias, 0) + 1
        record.engine_restarted = True
        message = (str(getattr(exc, "message", None) or exc).splitlines() or [""])[0][:200]
        log.warning(
            "engine for %r (%s) died (%s: %s); closed it, a new one starts on the next request",
            spec.alias, spec.source_label, type(exc).__name__, message,
        )
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - a dead engine may fail to close; the restart matters more
            log.exception("closing the failed engine for %r failed", spec.alias)

    def _watched(
        self, spec: AliasSpec, engine: Engine, chunks: Iterator[dict[str, Any]], record: CallRecord
    ) -> Iterator[dict[str, Any]]:
        """``chunks`` as they come; an error raised by the engine's stream may retire the engine."""
        try:
            yield from chunks
        except Exception as exc:
            self._engine_failed(spec, engine, exc, record)
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing the rest matters more
                log.exception("closing engine %s failed", engine.info.model)

    def __enter__(self) -> ModelHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observer ---------------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Also report every call to ``observer`` (after the constructor's one)."""
        with self._lock:
            self._observers = [*self._observers, observer]

    def remove_observer(self, observer: Observer) -> None:
        with self._lock:
            self._observers = [o for o in self._observers if o != observer]  # == matches bound methods

    def _record(self, record: CallRecord) -> None:
        for observer in [self.observer, *self._observers]:
            if observer is None:
                continue
            try:
                observer(record)
            except Exception:  # noqa: BLE001 - metering must never fail a model call
                log.exception("model call observer failed")

    def _fail(self, record: CallRecord, started: float, exc: BaseException) -> ModelError:
        """Record a failure; the ModelError to raise (engine errors pass through as they are)."""
        error = exc if isinstance(exc, ModelError) else ModelError(f"{record.alias}: engine failed: {exc}")
        record.latency_s = time.perf_counter() - started
        record.status = error.status_code
        record.error = error.message
        self._record(record)
        return error

    def _checked(self, alias: str, endpoint: str) -> AliasSpec:
        spec = self.spec(alias)
        want = "chat" if endpoint == "chat" else "embeddings"
        if spec.kind != want:
            others = ", ".join(self.aliases(want)) or "none configured"
            what = "an embeddings model" if spec.kind == "embeddings" else "a chat model"
            raise BadRequestError(f"model {alias!r} is {what}; {want} models: {others}", param="model")
        return spec

    # -- format parsing ---------------------------------------------------------------------

    def _format(self, spec: AliasSpec, request: dict[str, Any]) -> tuple[ChatFormat | None, str]:
        """The family's format and the parse mode: "never", "always" or "tags" (only if raw tags seen)."""
        entry = spec.catalogue_entry
        fmt = entry.chat_format if entry else None
        if fmt is not None and not request.get("tools"):
            # No tools offered: a JSON or tag-looking answer is text, not a call.
            fmt = replace(fmt, tool_calls="none")
        if fmt is None or not fmt.parseable or spec.parse is False:
            return None, "never"
        if spec.parse is True:
            return fmt, "always"
        # llama.cpp parses its own output; an upstream's or a plugin engine's text may carry raw tags.
        return (fmt, "tags") if spec.source in ("url", "engine") else (None, "never")

    def _parse_response(self, spec: AliasSpec, response: dict[str, Any], request: dict[str, Any]) -> None:
        fmt, mode = self._format(spec, request)
        if fmt is None:
            return
        for choice in response.get("choices") or []:
            message = choice.get("message") or {}
            text = message.get("content")
            if not isinstance(text, str) or not text or (mode == "tags" and not has_raw_tags(text, fmt)):
                continue
            parsed = parse_message(text, fmt, tools=request.get("tools"), prefilled=request_prefilled(request))
            message["content"] = parsed["content"]
            if parsed.get("reasoning_content"):
                message["reasoning_content"] = (message.get("reasoning_content") or "") + parsed[
                    "reasoning_content"
                ]
            if parsed.get("tool_calls"):
                message["tool_calls"] = list(message.get("tool_calls") or []) + parsed["tool_calls"]
                if choice.get("finish_reason") in (None, "stop"):
                    choice["finish_reason"] = "tool_calls"

    # -- calls ------------------------------------------------------------------------------

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        """An OpenAI chat.completion dict; ``model`` in the answer is the alias."""
        record = CallRecord(alias=alias, endpoint="chat", tenant=tenant)
        started = time.perf_counter()
        try:
            spec = self._checked(alias, "chat")
            engine = self._engine_for(spec)
            try:
                raw = engine.chat({**request, "model": alias, "stream": False})
            except Exception as exc:
                self._engine_failed(spec, engine, exc, record)
                raise
            response = copy.deepcopy(raw)
            self._parse_response(spec, response, request)
        except Exception as exc:
            error = self._fail(record, started, exc)
            if error is exc:
                raise
            raise error from exc
        record.latency_s = time.perf_counter() - started
        # Non-streaming callers see the first token with the last; the engine's prompt
        # time (llama.cpp's timings) is the better figure when there is one.
        prompt_ms = (response.get("timings") or {}).get("prompt_ms") if isinstance(response, dict) else None
        record.ttft_s = prompt_ms / 1000.0 if isinstance(prompt_ms, int | float) else record.latency_s
        record.prompt_tokens, record.completion_tokens = _usage_tokens(response.get("usage"))
        response["model"] = alias
        self._record(record)
        return response

    def stream_chat(
        self, alias: str, request: dict[str, Any], tenant: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """chat.completion.chunk dicts; the last carries ``usage``. Errors before the stream raise here."""
        return self.open_stream(alias, request, tenant)[0]

    def open_stream(
        self,
        alias: str,
        request: dict[str, Any],
        tenant: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> tuple[Iterator[dict[str, Any]], bool]:
        """Like ``stream_chat``, and pushed where the engine can push (the bool says whether).

        A pushed stream never blocks: it yields ``PENDING`` until the engine's thread calls
        ``on_ready``, which is where a consumer advances it (engine.PENDING explains).
        """
        record = CallRecord(alias=alias, endpoint="chat", tenant=tenant, stream=True)
        started = time.perf_counter()
        pushed = False
        try:
            spec = self._checked(alias, "chat")
            engine = self._engine_for(spec)
            try:
                body = {**request, "model": alias, "stream": True}
                if on_ready is not None and getattr(engine, "pushes_chunks", False):
                    chunks = engine.stream_chat(body, on_ready=on_ready)  # type: ignore[call-arg]
                    pushed = True
                else:
                    chunks = engine.stream_chat(body)
            except Exception as exc:
                self._engine_failed(spec, engine, exc, record)
                raise
        except Exception as exc:
            error = self._fail(record, started, exc)
            if error is exc:
                raise
            raise error from exc
        fmt, mode = self._format(spec, request)
        return self._stream(alias, spec, engine, chunks, fmt, mode, request, record, started), pushed

    def _stream(
        self,
        alias: str,
        spec: AliasSpec,
        engine: Engine,
        chunks: Iterator[dict[str, Any]],
        fmt: ChatFormat | None,
        mode: str,
        request: dict[str, Any],
        record: CallRecord,
        started: float,
    ) -> Iterator[dict[str, Any]]:
        parsers: dict[int, StreamParser] = {}
        finished: set[int] = set()
        done = False

        def parser_for(index: int) -> StreamParser | None:
            if fmt is None:
                return None
            if index not in parsers:
                # "tags" mode: the upstream may already have split reasoning off, so never
                # assume output starts inside a reasoning block.
                # A request that switches thinking off had its think block closed by the template.
                parsers[index] = StreamParser(
                    fmt, tools=request.get("tools"), prefilled=request_prefilled(request) if mode == "always" else False
                )
            return parsers[index]

        def delta_chunk(template: dict[str, Any], index: int, delta: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": template.get("id"),
                "object": "chat.completion.chunk",
                "created": template.get("created"),
                "model": alias,
                "choices": [{"index": index, "delta": delta, "finish_reason": None}],
            }

        last: dict[str, Any] = {}
        try:
            for chunk in self._watched(spec, engine, chunks, record):
                if chunk is PENDING:  # a pushed stream with nothing ready: pass it on
                    yield chunk
                    continue
                # A shallow copy: nothing below mutates a chunk's nested parts (deltas are copied
                # before they are edited), and a deep copy per token costs ~12 us on the hot path.
                chunk = {**chunk, "model": alias}
                last = chunk
                if chunk.get("usage"):
                    record.prompt_tokens, record.completion_tokens = _usage_tokens(chunk["usage"])
                choices = chunk.get("choices") or []
                if record.ttft_s is None and any(_has_output(c.get("delta") or {}) for c in choices):
                    record.ttft_s = time.perf_counter() - started
                if fmt is None or not choices:
                    yield chunk
                    continue
                base = {k: v for k, v in chunk.items() if k not in ("usage", "choices")}
                for choice in choices:
                    index = int(choice.get("index") or 0)
                    parser = parser_for(index)
                    assert parser is not None
                    delta = dict(choice.get("delta") or {})
                    text = delta.pop("content", None)
                    produced = parser.feed(text) if isinstance(text, str) and text else []
                    finish = choice.get("finish_reason")
                    if finish and index not in finished:
                        produced += parser.finish()
                        finished.add(index)
                        if parser.tool_calls and finish == "stop":
                            finish = "tool_calls"
                    if delta:  # role, or fields the engine parsed itself
                        yield {**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
                    for item in produced:
                        yield delta_chunk(chunk, index, item)
                    if finish:
                        yield {**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
            # Streams that end without a finish_reason still flush what the parsers hold.
            for index, parser in parsers.items():
                if index not in finished:
                    for item in parser.finish():
                        yield delta_chunk(last, index, item)
            done = True
        except GeneratorExit:
            record.status, record.error = CLIENT_CLOSED, "stream closed by the client"
            raise
        except Exception as exc:
            error = self._fail(record, started, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None and not done:
                try:
                    close()  # stops generation in the engine's slot
                except Exception:  # noqa: BLE001
                    log.exception("closing the engine stream failed")
            if record.error is None or record.status == CLIENT_CLOSED:
                record.latency_s = time.perf_counter() - started
                self._record(record)

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        """Unit vectors for ``texts`` and the input tokens consumed."""
        record = CallRecord(alias=alias, endpoint="embeddings", tenant=tenant)
        started = time.perf_counter()
        try:
            spec = self._checked(alias, "embeddings")
            if (
                isinstance(texts, str)
                or not isinstance(texts, list | tuple)
                or not all(isinstance(t, str) for t in texts)
            ):
                raise BadRequestError("input must be a list of strings", param="input")
            engine = self._engine_for(spec)
            try:
                vectors, tokens = engine.embed(list(texts))
            except Exception as exc:
                self._engine_failed(spec, engine, exc, record)
                raise
        except Exception as exc:
            error = self._fail(record, started, exc)
            if error is exc:
                raise
            raise error from exc
        record.latency_s = time.perf_counter() - started
        record.prompt_tokens = int(tokens)
        self._record(record)
        return vectors, tokens


# -- any serving hub as a full Hub -------------------------------------------------------------


class _RolesOf:
    """Roles from a bare ``default(role)`` callable (or none: every role unset)."""

    def __init__(self, default: Callable[[str], str] | None = None) -> None:
        self._default = default

    def default(self, role: str) -> str:
        return str(self._default(role)) if self._default is not None else role

    def role(self, role: str, fallback: str | None = None) -> str | None:
        return fallback if self._default is None else self.default(role)


class HubAdapter:
    """A :class:`ServingHub` with the rest of :class:`Hub` filled in (see :func:`as_hub`).

    The inner hub's own ``spec``/``register``/``open_stream``/``warm_up``/``loaded``/observer
    methods are used where it has them; otherwise: unknown specs, no registering, streams that are
    never pushed, warm-up by a one-token call, nothing reported loaded, and observers chained onto
    the inner hub's ``observer`` attribute. This is the one place that looks at a hub's shape.
    Any other attribute reads through to the inner hub.
    """

    def __init__(self, inner: ServingHub) -> None:
        self.inner = inner
        deployment = getattr(inner, "deployment", None)
        if isinstance(deployment, Roles):
            self.deployment: Roles = deployment
        else:
            self.deployment = _RolesOf(getattr(deployment, "default", None))
        self._observers: list[Observer] = []
        self._previous: Any = None
        self._chained = False

    def __getattr__(self, name: str) -> Any:  # only called for names not found on the adapter
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # ServingHub: straight through
    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return self.inner.chat(alias, request, tenant=tenant)

    def stream_chat(
        self, alias: str, request: dict[str, Any], tenant: str | None = None
    ) -> Iterator[dict[str, Any]]:
        return self.inner.stream_chat(alias, request, tenant=tenant)

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        return self.inner.embed(alias, texts, tenant=tenant)

    def models(self) -> list[ModelCard]:
        return list(self.inner.models())

    def card(self, alias: str) -> ModelCard:
        return self.inner.card(alias)

    def close(self) -> None:
        self.inner.close()

    # the rest of Hub
    def spec(self, alias: str) -> AliasSpec:
        spec_of = getattr(self.inner, "spec", None)
        if callable(spec_of):
            return spec_of(alias)
        raise ModelNotFoundError(f"no deployment spec for {alias!r} on this hub", param="model")

    def register(self, alias: str, spec: AliasSpec | dict[str, Any]) -> ModelCard:
        register = getattr(self.inner, "register", None)
        if callable(register):
            return register(alias, spec)
        raise BadRequestError(f"this hub cannot register aliases ({alias!r})", param="model")

    def open_stream(
        self,
        alias: str,
        request: dict[str, Any],
        tenant: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> tuple[Iterator[dict[str, Any]], bool]:
        opener = getattr(self.inner, "open_stream", None)
        if callable(opener):
            return opener(alias, request, tenant, on_ready)
        return iter(self.inner.stream_chat(alias, request, tenant=tenant)), False

    def warm_up(self, alias: str) -> None:
        warm = getattr(self.inner, "warm_up", None)
        if callable(warm):
            warm(alias)
        elif self.inner.card(alias).kind == "embeddings":
            self.inner.embed(alias, ["warm up"])
        else:
            self.inner.chat(alias, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})

    def loaded(self) -> list[str]:
        loaded = getattr(self.inner, "loaded", None)
        return list(loaded()) if callable(loaded) else []

    def add_observer(self, observer: Observer) -> None:
        add = getattr(self.inner, "add_observer", None)
        if callable(add):
            add(observer)
            return
        self._observers = [*self._observers, observer]
        if not self._chained:  # chain onto the inner hub's one ``observer`` slot, keeping what was there
            self._previous, self._chained = getattr(self.inner, "observer", None), True
            self.inner.observer = self._notify  # type: ignore[attr-defined]

    def remove_observer(self, observer: Observer) -> None:
        remove = getattr(self.inner, "remove_observer", None)
        if callable(remove):
            remove(observer)
            return
        self._observers = [o for o in self._observers if o != observer]
        if not self._observers and self._chained:
            self.inner.observer, self._chained = self._previous, False  # type: ignore[attr-defined]

    def _notify(self, record: CallRecord) -> None:
        for observer in [self._previous, *self._observers]:
            if observer is None:
                continue
            try:
                observer(record)
            except Exception:  # noqa: BLE001 - metering must never fail a model call
                log.exception("model call observer failed")


def as_hub(hub: ServingHub) -> Hub:
    """``hub`` itself when it is a full :class:`Hub` (a ModelHub), else a :class:`HubAdapter` over it."""
    if isinstance(hub, Hub):
        return hub
    if not isinstance(hub, ServingHub):
        missing = [m for m in ("chat", "stream_chat", "embed", "models", "card", "close") if not hasattr(hub, m)]
        raise TypeError(f"{type(hub).__name__} is not a model hub: it lacks {', '.join(missing)}")
    return HubAdapter(hub)
