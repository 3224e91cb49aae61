"""Request bodies of ``/v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic Messages API).

An allow-list like every family (docs/api.md): unknown fields are refused by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(_Strict):
    type: Literal["ephemeral"] = "ephemeral"
    ttl: str | None = None


class ContentBlock(_Strict):
    type: Literal["text", "tool_use", "tool_result"]
    text: str | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    # tool_result
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None  # accepted, no effect (no prompt cache to steer)
    citations: list[dict[str, Any]] | None = None  # echoed back by clients; dropped


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDef(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_Strict):
    user_id: str | None = None  # documented no-op


class MessagesRequest(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    service_tier: str | None = None  # "auto" / "standard_only" accepted (one tier); checked in the handler


class CountTokensRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
