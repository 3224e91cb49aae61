"""Request body of ``/v1/responses`` (OpenAI Responses API): an allow-list (docs/api.md).

Input items stay plain dicts here: the handler translates them one by one and refuses item types
it cannot honour by their index (``input.3.type``); keys that clients echo back on items
(``id``, ``status``, ``annotations``, ``logprobs``) are dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # the one we have


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None  # no-op: no obfuscation padding is sent


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    store: bool | None = True  # OpenAI's default: kept for previous_response_id, per tenant
    previous_response_id: str | None = None
    truncation: Literal["disabled"] | None = None
    include: list[str] | None = None  # only [] (nothing extra to include)
    reasoning: dict[str, Any] | None = None  # only empty / all-null
    service_tier: str | None = None
    background: bool | None = None  # only false
    # Documented no-ops.
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
