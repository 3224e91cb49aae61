"""The result of one reward evaluator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("DB", "ENV_ASSERTION", "ACTION", "COMMUNICATE", "NL_ASSERTION")


@dataclass
class Component:
    """One reward component: ``reward`` is 1.0 or 0.0 when ``scored``, None when it could not be."""

    kind: str
    reward: float | None
    checks: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def scored(self) -> bool:
        return self.reward is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scored": self.scored}
