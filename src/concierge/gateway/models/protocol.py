"""Response bodies of ``/v1/models`` (OpenAI's model object, with vLLM's and concierge's extra fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str | None = None
    kind: str
    engine: str
    context_length: int | None = None
    max_model_len: int | None = None  # vLLM's name for the context length
    catalogue_id: str | None = None
    in_house: bool | None = None
    source: str | None = None  # paths and upstream URLs: for operators only


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
