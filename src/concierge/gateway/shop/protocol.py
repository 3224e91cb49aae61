"""Request and response bodies of the shop API (``/v1/shop/chat``, ``/similar``, ``/complete-the-look``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from concierge.gateway.client_messages import messages_schema
from concierge.shop.query.structured import STRUCTURED_QUERY_SCHEMA

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Strict(BaseModel):
    # Unknown fields are refused: a typo such as "conversation" must not silently start a new chat.
    model_config = ConfigDict(extra="forbid")


class ShopChatRequest(_Strict):
    # A request carries a message, a stateless client's messages, or the edited filters (OpenAPI says so).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["message"]}, {"required": ["messages"]}, {"required": ["query"]}]},
    )
    # The filters to search with instead of reading the message: the ``query`` of the last answer as
    # the shopper edited it (a filter removed, a price changed). The message may then be left out.
    query: dict[str, Any] | None = Field(default=None, json_schema_extra=STRUCTURED_QUERY_SCHEMA)
    # One of message (a turn; with conversation_id to continue) or messages (a stateless client's
    # whole conversation): checked by concierge.gateway.client_messages.conversation_of.
    message: str | None = Field(default=None, max_length=4000)
    messages: list[Any] | None = Field(default=None, json_schema_extra=messages_schema())
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64)
    catalog: str | None = Field(default=None, pattern=NAME_PATTERN)
    shopper_id: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False

    @field_validator("message")
    @classmethod
    def _message_or_query(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.strip() and info.data.get("query") is None:
            raise ValueError("message must not be empty (or send the edited query)")
        return value


class ShopItemRequest(_Strict):
    product_id: str = Field(min_length=1, max_length=200)
    catalog: str | None = Field(default=None, pattern=NAME_PATTERN)
    k: int = Field(default=6, ge=1, le=50)


class ShopAnswerBody(BaseModel):
    """``/v1/shop/chat``'s answer (``ShopAnswer.to_public()``), also the SSE ``answer`` event's fields."""

    object: Literal["shop.answer"] = "shop.answer"
    conversation_id: str
    message: str
    query: dict[str, Any] | None
    products: list[dict[str, Any]]
    alternatives: list[dict[str, Any]] = []
    clarifying: bool


class ShopItems(BaseModel):
    object: Literal["list"] = "list"
    product_id: str
    data: list[dict[str, Any]]
