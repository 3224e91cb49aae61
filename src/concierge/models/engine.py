"""The one interface every model runtime implements.

Requests and responses are OpenAI-shaped dicts (the same JSON the gateway speaks), so an
engine can be llama.cpp in-process, a vLLM cluster, or any OpenAI-compatible URL, and the
gateway, shop and support code never know which. Engines are synchronous (llama.cpp calls
block in C); async callers run them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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
