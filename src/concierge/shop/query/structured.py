"""The structured query: what a shopper's conversation asks for, as validated fields."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from concierge.shop.query.errors import ShopRequestError

Sort = Literal["relevance", "price_asc", "price_desc"]
SORTS = ("relevance", "price_asc", "price_desc")


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


def validate_query_dict(data: Any) -> StructuredQuery:
    """A StructuredQuery from a dict (e.g. conversation state); ShopRequestError if it does not fit."""
    try:
        jsonschema.validate(data, STRUCTURED_QUERY_SCHEMA)
        return StructuredQuery.model_validate(data)
    except (jsonschema.ValidationError, ValueError) as exc:
        raise ShopRequestError(
            f"invalid structured query: {str(exc).splitlines()[0]}", param="state"
        ) from None
