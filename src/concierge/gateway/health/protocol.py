"""Response body of ``/healthz``."""

from __future__ import annotations

from pydantic import BaseModel


class ModelHealth(BaseModel):
    alias: str
    kind: str
    engine: str
    loaded: bool | None  # None: the hub does not say


class Health(BaseModel):
    status: str = "ok"
    warm_up: str  # off | pending | running | done | failed
    models: list[ModelHealth]
