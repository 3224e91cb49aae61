"""OpenAI-style error bodies: ``{"error": {"message", "type", "param", "code"}}`` (as vLLM sends)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from concierge.models.engine import ModelError


class GatewayError(Exception):
    """An error the gateway answers itself (auth, body, validation)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def is_expected(exc: BaseException) -> bool:
    """Errors whose message is meant for the caller: ours, and model errors with a known cause.

    A bare 500 ``ModelError`` wraps an engine crash ("engine failed: ..."): treated as unexpected,
    so its text is logged as a type only and the caller gets the generic message.
    """
    if isinstance(exc, GatewayError):
        return True
    return isinstance(exc, ModelError) and (exc.status_code < 500 or exc.code is not None)


def from_exception(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, body and headers for any exception; unknown ones become a generic 500."""
    if isinstance(exc, GatewayError):
        return exc.status_code, error_body(exc.message, exc.error_type, exc.param, exc.code), exc.headers
    if isinstance(exc, ModelError) and is_expected(exc):
        return exc.status_code, error_body(exc.message, exc.error_type, exc.param, exc.code), None
    # Never echo an unexpected exception's text: it may hold prompt text or internal paths.
    return 500, error_body("The server had an error while processing your request.", "server_error"), None


def error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = from_exception(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def sse_error(exc: BaseException) -> str:
    """The SSE event sent when a stream fails after it started."""
    _, body, _ = from_exception(exc)
    return f"data: {json.dumps(body)}\n\n"
