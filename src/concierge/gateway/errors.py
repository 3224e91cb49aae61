"""The one exception translation: any error into an OpenAI-style body (as vLLM sends).

``{"error": {"message", "type", "param", "code"}}``. Errors of the core carry their own status and
code (:class:`concierge.errors.ConciergeError`), so no route keeps a mapping table of its own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse

from concierge.errors import ConciergeError


class GatewayError(ConciergeError):
    """An error the gateway answers itself (auth, body, validation), its status given per instance."""

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
        super().__init__(message, param=param)
        self.status = status_code
        self.error_type = error_type
        self.code = code
        self._headers = headers

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def headers(self) -> dict[str, str] | None:  # type: ignore[override]
        return self._headers


def _carries_status(exc: BaseException) -> bool:
    """Errors of the core that carry their HTTP status the older way (``status_code``, ``code``).

    ``ModelError`` and the shop's ``ShopError`` do; a bare 500 without a code is an engine crash.
    """
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and isinstance(getattr(exc, "message", None), str) and (
        status < 500 or getattr(exc, "code", None) is not None
    )


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def is_expected(exc: BaseException) -> bool:
    """Errors whose message is meant for the caller: ours, and model errors with a known cause.

    A bare 500 ``ModelError`` wraps an engine crash ("engine failed: ..."): treated as unexpected,
    so its text is logged as a type only and the caller gets the generic message.
    """
    if isinstance(exc, ConciergeError) or storage_unavailable(exc):
        return True
    return _carries_status(exc)


# SQLite's and PostgreSQL's ways of saying the store cannot take writes (full disk, read-only file
# or server in recovery): a condition of the deployment the operator must fix, not a server bug.
_STORAGE_TROUBLE = (
    "database or disk is full",
    "disk is full",
    "readonly database",
    "read-only transaction",
    "no space left on device",
    "could not extend file",
)


def storage_unavailable(exc: BaseException) -> bool:
    """True for database errors that mean "the store cannot be written right now"."""
    try:
        from sqlalchemy.exc import InternalError, OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a core dependency
        return False
    if not isinstance(exc, OperationalError | InternalError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    return any(marker in text for marker in _STORAGE_TROUBLE)


def from_exception(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, body and headers for any exception; unknown ones become a generic 500."""
    if storage_unavailable(exc):
        # The operator must hear of it (a full disk does not fix itself); the caller gets a 503.
        logging.getLogger("concierge.gateway").error("storage unavailable: %s", getattr(exc, "orig", exc))
        body = error_body(
            "Storage is unavailable (the database is full or read-only); nothing was saved. "
            "Try again later.",
            "server_error",
            code="storage_unavailable",
        )
        return 503, body, {"Retry-After": "30"}
    if isinstance(exc, ConciergeError):
        return exc.status, error_body(exc.public_message, exc.error_type, exc.param, exc.code), exc.headers
    if _carries_status(exc):  # ModelError, ShopError
        body = error_body(exc.message, exc.error_type, exc.param, exc.code)  # type: ignore[attr-defined]
        return exc.status_code, body, None  # type: ignore[attr-defined]
    # Never echo an unexpected exception's text: it may hold prompt text or internal paths.
    return 500, error_body("The server had an error while processing your request.", "server_error"), None


def error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = from_exception(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def sse_error(exc: BaseException) -> str:
    """The SSE event sent when a stream fails after it started."""
    _, body, _ = from_exception(exc)
    return f"data: {json.dumps(body)}\n\n"
