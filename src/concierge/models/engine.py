"""The one interface every model runtime implements.

Requests and responses are OpenAI-shaped dicts (the same JSON the gateway speaks), so an
engine can be llama.cpp in-process, a vLLM cluster, or any OpenAI-compatible URL, and the
gateway, shop and support code never know which. Engines are synchronous (llama.cpp calls
block in C); async callers run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the protocols below only name these in annotations
    from concierge.models.deployment import AliasSpec
    from concierge.models.hub import CallRecord, ModelCard


class ModelError(Exception):
    """Base for errors the gateway maps to an OpenAI-style error body."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequestError(ModelError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(BadRequestError):
    code = "context_length_exceeded"


class ModelNotFoundError(ModelError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class EngineUnavailableError(ModelError):
    """The engine is down, crashed or timed out (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "engine_unavailable"


class ModelFileMissingError(ModelError):
    """A configured GGUF/ONNX file is absent; the message names the path and how to get it."""

    status_code = 503
    error_type = "service_unavailable"
    code = "model_file_missing"


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


# Yielded by a pushed stream (see ``LlamaCppEngine.stream_chat(on_ready=...)``) when no chunk is
# ready yet: the consumer stops advancing it until the engine calls ``on_ready`` again.
PENDING: Any = _Pending()


@dataclass
class EngineInfo:
    """What an engine reports about itself (for /v1/models, metrics and the catalogue)."""

    kind: str  # "llama.cpp" | "openai-upstream" | "onnx-embedding"
    model: str  # the file path or upstream model name actually served
    context_length: int | None = None
    capabilities: set[str] = field(default_factory=set)  # subset of {"chat", "embeddings"}
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI chat.completion dict for an OpenAI chat request dict (``stream`` ignored)."""
        ...

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """OpenAI chat.completion.chunk dicts; the last one carries ``usage`` (and no choices)."""
        ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit-normalised vectors and the number of input tokens consumed."""
        ...

    def close(self) -> None: ...


# -- the hub side ------------------------------------------------------------------------------
#
# Three layers, so a caller asks for exactly what it uses and a test fake implements only that:
#
#   ChatHub     chat(alias, request, tenant)                  support agent, guided mode, knowledge
#                                                             answers, simulated users, distillation,
#                                                             command accuracy
#   ServingHub  + stream_chat, embed, models(), card(), close()   what a gateway or shop fake serves
#   Hub         + deployment (Roles), spec, register, open_stream,  the real ModelHub: the gateway,
#                 warm_up, loaded, add_observer, remove_observer    the web services, the report
#
# ``concierge.models.hub.as_hub`` turns any ServingHub into a Hub (defaults for the rest), so code
# that takes a Hub never probes with hasattr/getattr.


@runtime_checkable
class Roles(Protocol):
    """Role -> alias lookup (``support``, ``shop``, ``embed``, ``chat``): a Deployment satisfies it."""

    def default(self, role: str) -> str:
        """The alias configured for ``role``; the role's own name when none is configured."""
        ...

    def role(self, role: str, fallback: str | None = None) -> str | None:
        """The alias configured for ``role``, else ``fallback`` (None: not configured)."""
        ...


@runtime_checkable
class ChatHub(Protocol):
    """The least a model hub offers: one chat completion per call (OpenAI-shaped dicts)."""

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]: ...


@runtime_checkable
class ServingHub(ChatHub, Protocol):
    """A hub that can serve the OpenAI API: chat, streamed chat, embeddings and its model cards."""

    def stream_chat(
        self, alias: str, request: dict[str, Any], tenant: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """chat.completion.chunk dicts; the last carries ``usage``. A bad alias raises here."""
        ...

    def embed(
        self, alias: str, texts: list[str], tenant: str | None = None
    ) -> tuple[list[list[float]], int]: ...

    def models(self) -> list[ModelCard]: ...

    def card(self, alias: str) -> ModelCard:
        """The alias's card; :class:`ModelNotFoundError` if unknown."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Hub(ServingHub, Protocol):
    """Everything :class:`~concierge.models.hub.ModelHub` offers its callers."""

    deployment: Roles

    def spec(self, alias: str) -> AliasSpec:
        """The alias's deployment spec; :class:`ModelNotFoundError` if unknown."""
        ...

    def register(self, alias: str, spec: Any) -> ModelCard:
        """Serve a new (or replaced) alias from now on (``spec``: an AliasSpec or its mapping)."""
        ...

    def open_stream(
        self,
        alias: str,
        request: dict[str, Any],
        tenant: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> tuple[Iterator[dict[str, Any]], bool]:
        """Like ``stream_chat``; the bool says whether the stream is pushed (yields PENDING)."""
        ...

    def warm_up(self, alias: str) -> None: ...

    def loaded(self) -> list[str]:
        """Aliases whose engine is already built."""
        ...

    def add_observer(self, observer: Callable[[CallRecord], None]) -> None: ...

    def remove_observer(self, observer: Callable[[CallRecord], None]) -> None: ...
