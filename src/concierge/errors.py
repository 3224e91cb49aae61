"""Errors the core raises for its callers, each carrying the HTTP status and code it answers with.

A low layer (no web framework imports): shop, support and store errors subclass
:class:`ConciergeError`, and the gateway's single exception translation
(:func:`concierge.gateway.errors.from_exception`) turns any of them into an OpenAI-style error body.
"""

from __future__ import annotations


class ConciergeError(Exception):
    """A caller-facing error: ``status`` (HTTP), ``code``, ``error_type``, ``param`` and ``headers``.

    ``hint`` is added to the message the HTTP layer shows (e.g. "send the message again").
    """

    status: int = 400
    code: str | None = None
    error_type: str = "invalid_request_error"
    param: str | None = None
    hint: str = ""
    retry_after: int | None = None

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        if param is not None:
            self.param = param

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def public_message(self) -> str:
        """The message as an API caller reads it."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


class NotFound(ConciergeError):
    status = 404
    error_type = "not_found_error"


class Conflict(ConciergeError):
    status = 409


class Unavailable(ConciergeError):
    status = 503
    error_type = "service_unavailable"
