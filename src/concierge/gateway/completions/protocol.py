"""Request body of ``/v1/completions`` (legacy text completions): an allow-list (docs/api.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from concierge.gateway.chat.protocol import StreamOptions


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for this endpoint
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=1, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    top_k: int | None = Field(default=None, ge=-1, le=1000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    # Accepted only with the values we honour (handler): no echo, no suffix, best_of == n.
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    user: str | None = None  # documented no-op
