"""Shop turns over persisted conversations, for the API (``/v1/shop/*``) and the web page alike.

:class:`ShopSession` (the twin of :class:`concierge.support.session.SupportSession`) prepares a turn
(checks the request and loads its conversation, before any model call), answers it or streams it,
and persists it. Its answers are the assistant's own :class:`~concierge.shop.assistant.ShopAnswer`
with the conversation id filled in; ``ShopAnswer.to_public()`` is what the API sends (the
assistant's state stays on the server). :class:`AssistantFactory` keeps one assistant per (tenant,
catalogue), so the session serves every tenant's catalogues. No web framework imports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from concierge.errors import NotFound, Unavailable
from concierge.models.engine import ServingHub
from concierge.models.hub import as_hub
from concierge.shop.assistant import ShopAnswer, ShopProducts
from concierge.shop.query import ShopRequestError, validate_query_dict
from concierge.store.conversations import ShopConversations, plain

log = logging.getLogger(__name__)

EDITED_FILTERS = "(changed the filters)"  # what a turn that only edited the filters records as its message

__all__ = [
    "AssistantFactory",
    "CatalogUnavailable",
    "ShopSession",
    "ShopTurn",
    "ShopWarming",
    "embed_alias",
    "role_alias",
]


class ShopWarming(Unavailable, RuntimeError):
    """The catalogue's assistant is being prepared (search index build) by another request or at start-up."""

    code = "warming_up"
    hint = "retry shortly."
    retry_after = 15


class CatalogUnavailable(NotFound, LookupError):
    """The catalogue could not be opened for the shop assistant."""

    code = "catalog_not_found"


def role_alias(hub: ServingHub, role: str, fallback: str) -> str:
    """The alias the deployment names for a role (``shop``, ``support``), else ``fallback``."""
    return as_hub(hub).deployment.role(role, fallback) or fallback


def embed_alias(hub: ServingHub, preferred: str = "embed") -> str:
    """The alias to embed with: the deployment's ``embed`` role, else ``preferred``, else any embedding model."""
    configured = as_hub(hub).deployment.role("embed")
    if configured:
        return configured
    cards = list(hub.models())
    if any(c.alias == preferred and c.kind == "embeddings" for c in cards):
        return preferred
    for card in cards:
        if card.kind == "embeddings":
            return card.alias
    raise ValueError("the deployment has no embedding model; the shop search needs one")


class AssistantFactory:
    """One shop assistant per (tenant, catalogue), built on first use and kept.

    :meth:`ShopAssistant.open` loads the catalogue and its interactions (for personalisation and
    "complete the look"), and opens its search index, embedding with the hub's embedding alias the
    first time and reusing the saved index after. One build per key at a time: a request that
    arrives while another thread builds gets :class:`ShopWarming` at once (the API answers 503 with
    Retry-After) instead of holding a connection for minutes. A failed build is not cached.
    """

    def __init__(self, hub: ServingHub, *, model_alias: str | None = None) -> None:
        self.hub = hub
        self.model_alias = model_alias or role_alias(hub, "shop", "shop-assistant")
        self._built: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, tenant: str, catalog: str) -> Any:
        key = (tenant, catalog)
        with self._lock:
            if key in self._built:
                return self._built[key]
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            raise ShopWarming(f"the shop for catalogue {catalog!r} is being prepared (building its search index)")
        try:
            if key not in self._built:
                self._built[key] = self._build(tenant, catalog)
            return self._built[key]
        finally:
            lock.release()

    def forget(self, tenant: str, catalog: str) -> None:
        """Drop a cached assistant (after the catalogue was re-ingested)."""
        with self._lock:
            self._built.pop((tenant, catalog), None)

    def _build(self, tenant: str, catalog: str) -> Any:
        from concierge.shop.assistant import ShopAssistant, hub_embedder
        from concierge.shop.catalog import CatalogError

        embed = hub_embedder(self.hub, embed_alias(self.hub), tenant=tenant)
        try:
            return ShopAssistant.open(self.hub, tenant, catalog, embed=embed, model_alias=self.model_alias)
        except CatalogError as exc:
            raise CatalogUnavailable(str(exc)) from exc


def products_list(result: Any) -> list[dict[str, Any]]:
    """Product cards from ``more_like_this`` / ``complete_the_look`` (a list or an answer object)."""
    data = plain(result)
    if isinstance(data, dict):
        data = data.get("products") or []
    return [p if isinstance(p, dict) else {"id": str(p)} for p in data or []]


@dataclass
class ShopTurn:
    """A prepared turn: the conversation it continues and what goes to the assistant."""

    conversation_id: str | None  # None until a new conversation's first turn is accepted
    version: int
    tenant: str
    catalog: str
    shopper_id: str | None
    text: str
    messages: list[dict[str, Any]]
    state: Any
    assistant: Any
    query: dict[str, Any] | None = None  # edited filters: searched as given (see ShopSession.prepare)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the assistant's ``answer``/``stream_answer`` for this turn."""
        out: dict[str, Any] = {"shopper_id": self.shopper_id, "state": self.state}
        if self.query is not None:
            out["query"] = self.query
        return out


class ShopSession:
    """Shop turns over persisted conversations, for every tenant's catalogues.

    ``assistants(tenant, catalog)`` returns the assistant for a catalogue (an :class:`AssistantFactory`);
    ``catalog`` is the catalogue a new conversation uses when the request names none.
    """

    def __init__(
        self, assistants: Callable[[str, str], Any], *, catalog: str = "demo", db_url: str | None = None,
        model_alias: str | None = None,
    ) -> None:
        self.assistants = assistants
        self.catalog = catalog
        self.model_alias = model_alias or getattr(assistants, "model_alias", None) or "shop-assistant"
        self.conversations = ShopConversations(db_url)

    def assistant(self, tenant: str, catalog: str) -> Any:
        return self.assistants(tenant, catalog)

    def prepare(
        self, tenant: str, text: str, *, catalog: str | None = None, conversation_id: str | None = None,
        shopper_id: str | None = None, query: dict[str, Any] | None = None,
    ) -> ShopTurn:
        """Check the request and load its conversation (if any). Raises before any model call.

        ``query``: the structured query to search with instead of reading ``text`` (the filters of the
        last answer, edited by the shopper); ``text`` may then be empty (the conversation records
        :data:`EDITED_FILTERS`).

        Errors: ShopRequestError (400), ConversationNotFound, and the assistant's CatalogNotFoundError.
        An unknown shopper is found by the assistant when the turn starts (ShopperNotFoundError).
        """
        text = text.strip()
        if query is not None:
            try:
                validate_query_dict(query)  # a 400 before anything is loaded
            except ShopRequestError as exc:
                raise ShopRequestError(exc.message, param="query") from None
            text = text or EDITED_FILTERS
        if not text:
            raise ShopRequestError("message must not be empty", param="message")
        # NUL cannot be stored (PostgreSQL refuses it in text and JSON): a 400, not a 500 at the insert.
        for param, value in (("message", text), ("conversation_id", conversation_id)):
            if value and "\x00" in value:
                raise ShopRequestError(f"{param} must not contain NUL (\\u0000) characters", param=param)
        if conversation_id:
            state = self.conversations.load(conversation_id, tenant)  # ConversationNotFound
            if catalog and catalog != state.get("catalog"):
                raise ShopRequestError(
                    f"conversation {conversation_id} is about catalogue {state.get('catalog')!r}, not {catalog!r}",
                    param="catalog",
                )
            catalog = str(state.get("catalog"))
            if shopper_id and state.get("shopper_id") and shopper_id != state.get("shopper_id"):
                raise ShopRequestError(f"conversation {conversation_id} belongs to another shopper",
                                       param="shopper_id")
            shopper_id = shopper_id or state.get("shopper_id")
        else:
            catalog = catalog or self.catalog
            state = None
        assistant = self.assistant(tenant, catalog)
        state = state or {}
        history = [m for m in state.get("messages") or [] if m.get("role") in ("user", "assistant")]
        return ShopTurn(
            conversation_id=conversation_id or None, version=int(state.get("version", 0)), tenant=tenant,
            catalog=catalog, shopper_id=shopper_id, text=text,
            messages=[*history, {"role": "user", "content": text}], state=state.get("assistant_state"),
            assistant=assistant, query=query,
        )

    def _open(self, turn: ShopTurn) -> str:
        # A conversation row is written only once the assistant accepted the turn: a request that fails
        # validation (an unknown shopper, say) leaves nothing behind.
        if turn.conversation_id is None:
            turn.conversation_id = self.conversations.start(turn.tenant, turn.catalog, turn.shopper_id)
        return turn.conversation_id

    def _persist(self, turn: ShopTurn, answer: Any) -> ShopAnswer:
        answer = _as_answer(answer)
        answer.conversation_id = self._open(turn)
        self.conversations.record(
            answer.conversation_id, turn.version, turn.text, message=answer.message, state=plain(answer.state),
            data=plain({"query": answer.query, "products": answer.products, "alternatives": answer.alternatives,
                        "clarifying": answer.clarifying}),
        )
        return answer

    def answer(self, turn: ShopTurn) -> ShopAnswer:
        """Answer the turn and save it; the answer carries its conversation id."""
        result = turn.assistant.answer(turn.messages, **turn.kwargs())
        return self._persist(turn, result)

    def stream(self, turn: ShopTurn) -> Iterator[ShopProducts | str | ShopAnswer]:
        """Start a streamed turn. Request errors (unknown shopper ...) raise here, before any event.

        Yields a :class:`ShopProducts` as soon as the cards are known, text deltas (``str``) while the
        answer is written, then the :class:`ShopAnswer`, saved before it is yielded.
        """
        source = turn.assistant.stream_answer(turn.messages, **turn.kwargs())
        self._open(turn)
        return self._relay(turn, source)

    def _relay(self, turn: ShopTurn, source: Iterator[Any]) -> Iterator[ShopProducts | str | ShopAnswer]:
        final: Any = None
        try:
            for item in source:
                if isinstance(item, str | ShopProducts):
                    yield item
                else:
                    final = item
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if final is None:
            raise RuntimeError("the shop assistant's stream ended without an answer")
        yield self._persist(turn, final)

    def similar(self, tenant: str, catalog: str | None, item_id: str, k: int = 6) -> list[dict[str, Any]]:
        return products_list(self.assistant(tenant, catalog or self.catalog).more_like_this(item_id, k))

    def complete_the_look(self, tenant: str, catalog: str | None, product_id: str, k: int = 6) -> list[dict[str, Any]]:
        return products_list(self.assistant(tenant, catalog or self.catalog).complete_the_look(product_id, k))


def _as_answer(answer: Any) -> ShopAnswer:
    """The assistant's answer as a :class:`ShopAnswer` (an assistant stand-in may give a dict)."""
    if isinstance(answer, ShopAnswer):
        return answer
    data = plain(answer)
    if not isinstance(data, dict):
        data = {"message": str(data)}
    return ShopAnswer(
        message=str(data.get("message") or ""), query=data.get("query"), products=list(data.get("products") or []),
        clarifying=bool(data.get("clarifying")), state=data.get("state"),
    )
