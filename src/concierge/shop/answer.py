"""What a shop turn gives back and carries over: the answer model, its state, the checked conversation.

:class:`ShopAnswer` is the one answer model from the assistant out to the API (``to_public``) and
the web page; :class:`ShopProducts` is a stream's first item (the cards, early);
:class:`ConversationState` is what the next turn needs. :func:`check_messages` validates a
conversation before a turn runs. No web framework imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from concierge.shop.query import ShopRequestError, validate_query_dict

ROLES = ("system", "user", "assistant")
MAX_MESSAGE_CHARS = 4000
MAX_MESSAGES = 200


@dataclass
class ConversationState:
    """What the next turn needs: the query so far, what was shown, whether a question was asked."""

    query: dict[str, Any] | None = None
    shown: list[dict[str, Any]] = field(default_factory=list)  # [{id, product_id, price}]
    clarifications: int = 0
    last_clarifying: bool = False
    turns: int = 0  # user messages handled so far

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ConversationState:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ShopRequestError(
                "state must be an object (the state of the previous answer)", param="state"
            )
        try:
            query = data.get("query")
            if query is not None:
                try:
                    validate_query_dict(query)
                except ShopRequestError as exc:
                    raise ShopRequestError(f"invalid state: {exc.message}", param="state") from None
            shown = [
                {"id": str(s["id"]), "product_id": str(s.get("product_id", "")), "price": float(s["price"])}
                for s in data.get("shown") or []
            ]
            return cls(
                query=dict(query) if query is not None else None,
                shown=shown,
                clarifications=int(data.get("clarifications", 0)),
                last_clarifying=bool(data.get("last_clarifying", False)),
                turns=int(data.get("turns", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ShopRequestError(f"invalid state: {exc}", param="state") from None


@dataclass
class ShopProducts:
    """First item of a stream: the validated cards (a UI can show them before the text arrives)."""

    products: list[dict[str, Any]]
    query: dict[str, Any]
    constraints: dict[str, Any]
    clarifying: bool
    alternatives: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ShopAnswer:
    message: str
    query: dict[str, Any]
    products: list[dict[str, Any]]
    clarifying: bool
    state: dict[str, Any]
    constraints: dict[str, Any] = field(default_factory=dict)
    grounding: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)  # mode, query source, timings, model usage
    conversation_id: str | None = None  # set once the turn is saved (concierge.shop.session)
    # Near alternatives (``match: "near"``, with the constraints each misses in ``unmet``): shown when a
    # card misses something the shopper stated, never among ``products`` (the exact matches).
    alternatives: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_public(self) -> dict[str, Any]:
        """The answer as the API sends it (``/v1/shop/chat``, the SSE ``answer`` event): the state stays here."""
        return _json_ready({
            "object": "shop.answer",
            "conversation_id": self.conversation_id,
            "message": str(self.message or ""),
            "query": self.query,
            "products": list(self.products or []),
            "alternatives": list(self.alternatives or []),
            "clarifying": bool(self.clarifying),
        })


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _content(message: Mapping[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        parts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ShopRequestError(f"messages[{index}].content parts must be text", param="messages")
            parts.append(part["text"])
        content = "\n".join(parts)
    if content is None and message.get("role") == "assistant":
        content = ""
    if not isinstance(content, str):
        raise ShopRequestError(f"messages[{index}].content must be a string", param="messages")
    if len(content) > MAX_MESSAGE_CHARS:
        raise ShopRequestError(
            f"messages[{index}] is longer than {MAX_MESSAGE_CHARS} characters", param="messages"
        )
    return content


def check_messages(messages: Any) -> list[dict[str, str]]:
    """The conversation as ``[{role, content}]``; ShopRequestError says what is wrong with it."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise ShopRequestError("messages must be a non-empty list of {role, content}", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise ShopRequestError(f"at most {MAX_MESSAGES} messages", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ShopRequestError(f"messages[{i}] must be an object with role and content", param="messages")
        role = m.get("role")
        if role not in ROLES:
            raise ShopRequestError(
                f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}", param="messages"
            )
        out.append({"role": str(role), "content": _content(m, i)})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise ShopRequestError("the last message must be a non-empty user message", param="messages")
    return out
