"""Any OpenAI-compatible HTTP server as an engine: vLLM, SGLang, llama-server, a cluster
router, or a proprietary API kept for comparison.

One pooled ``httpx.Client`` per engine (thread-safe). Upstream failures become the
``ModelError`` family: unreachable, timed out, 5xx, 429 or rejected credentials ->
:class:`EngineUnavailableError` naming the URL (our problem, not the caller's); a 400
about the context window -> :class:`ContextLengthError`; other 4xx -> :class:`BadRequestError`
carrying the upstream's message.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from concierge.models.engine import (
    BadRequestError,
    ContextLengthError,
    EngineInfo,
    EngineUnavailableError,
    ModelError,
    ModelNotFoundError,
)

# How vLLM, SGLang, llama-server and OpenAI word "the prompt does not fit".
_CONTEXT_PATTERNS = re.compile(
    r"context[ _]length|context window|maximum context|context size|exceed_context|"
    r"prompt is too long|too many tokens|reduce the length",
    re.IGNORECASE,
)


def _normalise_base_url(base_url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is kept as given."""
    url = base_url.rstrip("/")
    if not urlsplit(url).path:
        url += "/v1"
    return url


class OpenAIUpstreamEngine:
    """Chat and embeddings forwarded to ``{base_url}/chat/completions`` and ``/embeddings``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        context_length: int | None = None,
    ) -> None:
        self.base_url = _normalise_base_url(base_url)
        self.model = model
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self.info = EngineInfo(
            kind="openai-upstream",
            model=model,
            context_length=context_length,
            capabilities={"chat", "embeddings"},
            extra={"base_url": self.base_url},
        )

    # -- errors -------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        if isinstance(exc, httpx.TimeoutException):
            return EngineUnavailableError(f"upstream {self.base_url} timed out after {self.timeout:g}s")
        reason = str(exc) or type(exc).__name__
        return EngineUnavailableError(f"upstream {self.base_url} is unreachable: {reason}")

    def _http_error(self, status: int, body: bytes) -> ModelError:
        """Map an upstream error response to the right ModelError."""
        message, code, kind = body.decode("utf-8", "replace").strip()[:2000], None, None
        try:
            payload = json.loads(body)
            err = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("detail") or message)
                code, kind = err.get("code"), err.get("type")
            elif isinstance(err, str):
                message = err
        except ValueError:
            pass
        where = f"upstream {self.base_url}"
        if status >= 500 or status == 429:
            return EngineUnavailableError(f"{where} returned HTTP {status}: {message}")
        if status in (401, 403):
            return EngineUnavailableError(f"{where} rejected our credentials (HTTP {status}): {message}")
        if status == 404:
            return ModelNotFoundError(f"{where}: {message}")
        if (
            code == "context_length_exceeded"
            or kind == "exceed_context_size_error"
            or _CONTEXT_PATTERNS.search(message)
        ):
            limit = f" ({self.info.context_length} tokens)" if self.info.context_length else ""
            return ContextLengthError(
                f"the request does not fit the context of {self.model}{limit}: {message}"
            )
        return BadRequestError(message)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code >= 400:
            raise self._http_error(response.status_code, response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise EngineUnavailableError(f"upstream {self.base_url} sent a body that is not JSON") from exc

    def _body(self, request: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        body = copy.deepcopy(request)
        body["model"] = self.model
        body["stream"] = stream
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        else:
            body.pop("stream_options", None)
        return body

    # -- Engine protocol ----------------------------------------------------------------------

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        result = self._post("/chat/completions", self._body(request, stream=False))
        if "choices" not in result:
            raise ModelError(f"upstream {self.base_url} answered without choices")
        result["model"] = request.get("model") or result.get("model") or self.model
        return result

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Chunks parsed from the upstream's SSE; closing the iterator closes the connection."""
        body = self._body(request, stream=True)
        model = request.get("model") or self.model
        usage: dict[str, Any] | None = None
        last: dict[str, Any] = {}
        n_deltas = 0
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, response.read())
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": ping" comments, "event:" lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk:
                        code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
                        status = code if isinstance(code, int) else 500
                        raise self._http_error(status, json.dumps(chunk).encode())
                    chunk["model"] = model
                    last = chunk
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        if not chunk.get("choices"):
                            continue  # re-emitted last
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    for choice in chunk.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            n_deltas += 1
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if usage is None:
            # Some upstreams ignore include_usage: count streamed deltas (≈ tokens) instead.
            usage = {"prompt_tokens": 0, "completion_tokens": n_deltas, "total_tokens": n_deltas}
        yield {
            "id": last.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": last.get("created") or int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise BadRequestError("input must be a list of strings", param="input")
        if not texts:
            return [], 0
        result = self._post("/embeddings", {"model": self.model, "input": list(texts)})
        rows = sorted(result.get("data") or [], key=lambda row: row.get("index", 0))
        if len(rows) != len(texts):
            raise ModelError(f"upstream {self.base_url} returned {len(rows)} vectors for {len(texts)} inputs")
        vectors = []
        for row in rows:
            vec = [float(v) for v in row["embedding"]]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vectors.append([v / norm for v in vec])
        return vectors, int((result.get("usage") or {}).get("prompt_tokens") or 0)

    def list_models(self) -> list[str]:
        """Model ids the upstream serves (``GET /models``); a cheap health check too."""
        try:
            response = self._client.get("/models")
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code >= 400:
            raise self._http_error(response.status_code, response.content)
        return [m.get("id") for m in (response.json().get("data") or []) if isinstance(m, dict)]

    def close(self) -> None:
        self._client.close()
