"""Request and response bodies of ``POST /v1/support/chat``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SupportChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=4000)
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
