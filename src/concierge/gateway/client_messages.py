"""Stateless clients: the whole conversation in the request, as an OpenAI-style ``messages`` array.

``/v1/shop/chat`` and ``/v1/support/chat`` continue a conversation either by ``conversation_id``
(the server keeps it) or from ``messages`` (the client keeps it). A request gives exactly one of
``message`` and ``messages``; ``messages`` excludes ``conversation_id`` (the history is either
the server's or the client's, never a mix). Roles are ``user`` and ``assistant`` only: the
instructions are the server's, so ``system``, ``developer`` and ``tool`` messages are refused, not
silently dropped. ``content`` is a string or OpenAI text parts (``[{"type": "text", "text": ...}]``).
The last message is the customer's (``user``). Keys clients echo back from earlier answers
(``refusal``, ``annotations``, ``audio``) are dropped; any other key (``tool_calls`` ...) is refused.
Every problem is a 400 naming ``messages.<i>...``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concierge.gateway.errors import GatewayError

MAX_CLIENT_MESSAGES = 100
_ECHOED = {"refusal", "annotations", "audio"}
MAX_CONTENT_CHARS = 4000
_REFUSED_ROLES = {
    "system": "the assistant's instructions are the server's",
    "developer": "the assistant's instructions are the server's",
    "tool": "tools run on the server; their results are not taken from the client",
    "function": "tools run on the server; their results are not taken from the client",
}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ClientMessage(BaseModel):
    """One message of a client-kept conversation (``role`` is checked by :func:`conversation_of`)."""

    model_config = ConfigDict(extra="forbid")
    role: str
    content: str | list[TextPart]
    name: str | None = Field(default=None, max_length=64)  # OpenAI allows it; it is not used


def conversation_of(
    message: str | None, messages: list[Any] | None, conversation_id: str | None
) -> list[dict[str, str]] | None:
    """The client's conversation as ``[{role, content}]`` (None for a ``message`` request).

    Raises a 400 :class:`GatewayError` for both or neither of ``message``/``messages``, for
    ``messages`` with ``conversation_id``, a refused or unknown role, empty content, or a last
    message that is not the customer's.
    """
    if message is not None and messages is not None:
        raise GatewayError(
            400, "Give either message (one turn) or messages (the whole conversation), not both.", param="messages"
        )
    if message is None and messages is None:
        raise GatewayError(
            400, "message: required (or messages: the whole conversation, for a stateless client).",
            param="message",
        )
    if messages is None:
        return None
    if conversation_id is not None:
        raise GatewayError(
            400,
            "Give either conversation_id (the server keeps the conversation) or messages (the client "
            "keeps it), not both.",
            param="conversation_id",
        )
    if not messages:
        raise GatewayError(400, "messages: must hold at least the customer's message.", param="messages")
    if len(messages) > MAX_CLIENT_MESSAGES:
        raise GatewayError(
            400, f"messages: at most {MAX_CLIENT_MESSAGES} messages; continue longer chats by conversation_id.",
            param="messages",
        )
    out: list[dict[str, str]] = []
    for i, raw in enumerate(messages):
        param = f"messages.{i}.role"
        if isinstance(raw, dict) and raw.get("role") in _REFUSED_ROLES:
            role = raw["role"]
            raise GatewayError(400, f"{param}: {role!r} is not accepted: {_REFUSED_ROLES[role]}.", param=param)
        if isinstance(raw, dict):
            # Keys OpenAI clients echo back from earlier answers are dropped, as on /v1/chat/completions.
            raw = {k: v for k, v in raw.items() if k not in _ECHOED}
        try:
            m = ClientMessage.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and "[" in p))
            where = f"messages.{i}" + (f".{loc}" if loc else "")
            raise GatewayError(400, f"{where}: {first['msg']}", param=where) from None
        if m.role not in ("user", "assistant"):
            raise GatewayError(400, f"{param}: {m.role!r} is not a role; use 'user' or 'assistant'.", param=param)
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        if not text.strip():
            raise GatewayError(400, f"messages.{i}.content: must not be blank.", param=f"messages.{i}.content")
        if len(text) > MAX_CONTENT_CHARS:
            raise GatewayError(
                400, f"messages.{i}.content: at most {MAX_CONTENT_CHARS} characters.", param=f"messages.{i}.content"
            )
        if "\x00" in text:
            raise GatewayError(
                400, f"messages.{i}.content: must not contain NUL (\\u0000) characters.",
                param=f"messages.{i}.content",
            )
        out.append({"role": m.role, "content": text})
    if out[-1]["role"] != "user":
        raise GatewayError(
            400, f"messages.{len(out) - 1}.role: the last message must be the customer's ('user').",
            param=f"messages.{len(out) - 1}.role",
        )
    return out


def messages_schema() -> dict[str, Any]:
    """The JSON schema of ``messages`` (for the routes' OpenAPI bodies, which must stay flat)."""
    return {
        "type": "array",
        "maxItems": MAX_CLIENT_MESSAGES,
        "description": "The whole conversation, oldest first, ending with the customer's message "
        "(instead of message + conversation_id).",
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "object", "required": ["type", "text"],
                                                    "properties": {"type": {"const": "text"},
                                                                   "text": {"type": "string"}}}},
                    ]
                },
                "name": {"type": "string"},
            },
        },
    }
