"""The structured query: what a shopper's conversation asks for, as validated fields."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from concierge.shop.query.errors import ShopRequestError

Sort = Literal["relevance", "price_asc", "price_desc"]
SORTS = ("relevance", "price_asc", "price_desc")


class OptionRange(BaseModel):
    """A numeric bound on one option ("battery life" >= 6 h), in the dimension's base unit (h, l, in,
    gb, lb, mm, w, ...). It lives on the turn (``TurnDelta.ranges``); the query itself carries the same
    constraint in ``attributes`` as the exact catalogue values inside the range, so the query's schema
    and the conversation state stay as they were and every filter downstream is an exact value filter."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None
    unit: str = ""
    min_inclusive: bool = True
    max_inclusive: bool = True

    def holds(self, lo: float, hi: float) -> bool:
        """Whether a value spanning [lo, hi] (one number: lo == hi) satisfies the range."""
        if self.min is not None and (hi < self.min or (hi == self.min and not self.min_inclusive)):
            return False
        if self.max is not None and (hi > self.max or (hi == self.max and not self.max_inclusive)):
            return False
        if self.min is not None and self.max is not None and lo < self.min:
            return False  # "between 30 and 50 lbs": the whole span inside
        return True

    def describe(self) -> str:
        u = f" {self.unit}" if self.unit else ""

        def f(x: float) -> str:
            return f"{x:g}"

        if self.min is not None and self.max is not None:
            return f"{f(self.min)}{u}" if self.min == self.max else f"{f(self.min)}-{f(self.max)}{u}"
        if self.min is not None:
            return f"{'at least' if self.min_inclusive else 'over'} {f(self.min)}{u}"
        if self.max is not None:
            return f"{'up to' if self.max_inclusive else 'under'} {f(self.max)}{u}"
        return "any"


class StructuredQuery(BaseModel):
    """What the shopper wants, in catalogue terms.

    ``category`` is a category path ("Women > Shoes > Boots"), a run of path segments that may occur in
    several places ("Boots" = women's and men's boots), or alternatives joined by " | ".
    """

    model_config = ConfigDict(extra="forbid")

    keywords: str = ""
    category: str | None = None
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    occasion: str | None = None
    exclusions: list[str] = Field(default_factory=list)
    sort: Sort = "relevance"


STRUCTURED_QUERY_SCHEMA: dict[str, Any] = StructuredQuery.model_json_schema()
# Checked once here, not on every call (jsonschema.validate re-checks the schema itself each time).
_QUERY_VALIDATOR = jsonschema.validators.validator_for(STRUCTURED_QUERY_SCHEMA)(STRUCTURED_QUERY_SCHEMA)


def validate_query_dict(data: Any) -> StructuredQuery:
    """A StructuredQuery from a dict (e.g. conversation state); ShopRequestError if it does not fit."""
    try:
        _QUERY_VALIDATOR.validate(data)
        return StructuredQuery.model_validate(data)
    except (jsonschema.ValidationError, ValueError) as exc:
        raise ShopRequestError(
            f"invalid structured query: {str(exc).splitlines()[0]}", param="state"
        ) from None
