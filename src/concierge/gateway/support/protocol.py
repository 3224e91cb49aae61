"""Request and response bodies of ``POST /v1/support/chat``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from concierge.gateway.client_messages import messages_schema


class SupportChatRequest(BaseModel):
    # A request carries a message or a stateless client's messages (OpenAPI says so).
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["message"]}, {"required": ["messages"]}]}
    )
    # One of message (a turn; with conversation_id to continue) or messages (a stateless client's
    # whole conversation): checked by concierge.gateway.client_messages.conversation_of.
    message: str | None = Field(default=None, min_length=1, max_length=4000)
    messages: list[Any] | None = Field(default=None, json_schema_extra=messages_schema())
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    domain: str | None = Field(default=None, min_length=1, max_length=50)
    mode: Literal["agent", "guided"] | None = None


class SupportTurnBody(BaseModel):
    object: Literal["support.turn"] = "support.turn"
    conversation_id: str
    message: str
    actions: list[dict[str, Any]]
    status: str  # open | handoff | human | closed
    confirm: bool
