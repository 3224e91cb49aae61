"""Shop turns over persisted conversations, for the API (``/v1/shop/*``) and the web page alike.

:class:`ShopSession` (the twin of :class:`concierge.support.session.SupportSession`) prepares a turn
(checks the request and loads its conversation, before any model call), answers it or streams it,
and persists it. Its answers are the assistant's own :class:`~concierge.shop.assistant.ShopAnswer`
with the conversation id filled in; ``ShopAnswer.to_public()`` is what the API sends (the
assistant's state stays on the server). :class:`AssistantFactory` keeps one assistant per (tenant,
catalogue), so the session serves every tenant's catalogues. No web framework imports.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from concierge.errors import NotFound, Unavailable
from concierge.models.engine import ServingHub
from concierge.models.hub import alias_option, as_hub
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


# A first start embeds products (spread over the catalogue) for at most FIRST_INDEX_SECONDS, and at
# most FIRST_INDEX of them, before the shop answers; the rest in the background. A time budget, not a
# count: on 2 busy cores one product took 0.03-0.23 s (scripts/bench_first_start.py).
FIRST_INDEX = 1000
FIRST_INDEX_SECONDS = 10.0
COMPLETION_BATCH = 32  # the background embeds in small batches, each after any running turn
COMPLETION_WAIT = 30.0  # ... waiting at most this long, so a busy shop still completes its index


class AssistantFactory:
    """One shop assistant per (tenant, catalogue), built on first use and kept.

    :meth:`ShopAssistant.open` loads the catalogue and its interactions (for personalisation and
    "complete the look"), and opens its search index, embedding with the hub's embedding alias the
    first time and reusing the saved index after. One build per key at a time: a request that
    arrives while another thread builds gets :class:`ShopWarming` at once (the API answers 503 with
    Retry-After) instead of holding a connection for minutes. A failed build is not cached.

    Without a saved index (a first start) only the products embedded within ``first_seconds`` (at
    most ``first_index``) are embedded before the assistant serves (BM25 and the filters cover all
    of them, the dense side those); the rest is embedded in a background thread, giving way to
    running turns, and the complete index, saved, is swapped in.

    A catalogue re-ingested while the server runs (``concierge shop ingest`` in another process, a
    feed re-read) is picked up without a restart: at most every ``refresh_every`` seconds a request
    for a catalogue starts a background check of its ``updated_at``; when it moved, a new assistant
    is opened beside the old one (the saved index is updated incrementally: only products whose
    text changed are embedded) and swapped in. Requests keep the old assistant until then.
    """

    def __init__(
        self, hub: ServingHub, *, model_alias: str | None = None, refresh_every: float = 10.0,
        first_index: int | None = FIRST_INDEX, first_seconds: float | None = FIRST_INDEX_SECONDS,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.hub = hub
        self.model_alias = model_alias or role_alias(hub, "shop", "shop-assistant")
        self.refresh_every = refresh_every
        self.first_index = first_index
        self.first_seconds = first_seconds
        self.progress = progress  # (phase, done, total): "embedding" (the first index), "completing"
        self.completions: list[threading.Thread] = []
        self._completing: dict[tuple[str, str], threading.Thread] = {}
        self._turns = 0  # shop turns in progress (the background completion gives way to them)
        self._idle = threading.Condition()
        self._stopping = False
        self._atexit = False
        self._built: dict[tuple[str, str], Any] = {}
        self._stamps: dict[tuple[str, str], Any] = {}  # the catalogue's updated_at the assistant was built at
        self._checked: dict[tuple[str, str], float] = {}
        self._refreshing: dict[tuple[str, str], threading.Thread] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, tenant: str, catalog: str) -> Any:
        key = (tenant, catalog)
        with self._lock:
            if key in self._built:
                self._maybe_refresh(key)
                return self._built[key]
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            raise ShopWarming(f"the shop for catalogue {catalog!r} is being prepared (building its search index)")
        try:
            if key not in self._built:
                stamp = _catalog_stamp(tenant, catalog)
                built = self._build(tenant, catalog)
                with self._lock:
                    self._built[key], self._stamps[key] = built, stamp
                    self._checked[key] = time.monotonic()
            return self._built[key]
        finally:
            lock.release()

    def _maybe_refresh(self, key: tuple[str, str]) -> None:
        """(with ``_lock`` held) Start a background staleness check when one is due."""
        now = time.monotonic()
        if now - self._checked.get(key, 0.0) < self.refresh_every or key in self._refreshing:
            return
        completing = self._completing.get(key)
        if completing is not None and completing.is_alive():
            return  # its first index is still being completed: check once that is saved
        self._checked[key] = now
        thread = threading.Thread(target=self._refresh, args=key, name="concierge-shop-refresh", daemon=True)
        self._refreshing[key] = thread
        thread.start()

    def _refresh(self, tenant: str, catalog: str) -> None:
        key = (tenant, catalog)
        try:
            stamp = _catalog_stamp(tenant, catalog)
            if stamp is None or stamp == self._stamps.get(key):
                return
            fresh = self._build(tenant, catalog)
            with self._lock:
                self._built[key], self._stamps[key] = fresh, stamp
            log.info("shop %s/%s: catalogue changed, assistant refreshed", tenant, catalog)
        except Exception:  # noqa: BLE001  (the old assistant keeps serving; the next check retries)
            log.exception("refreshing the shop assistant for %s/%s failed", tenant, catalog)
        finally:
            with self._lock:
                self._refreshing.pop(key, None)

    def refreshing(self, tenant: str, catalog: str) -> threading.Thread | None:
        """The background refresh under way for a catalogue, if any (tests and the console wait on it)."""
        with self._lock:
            return self._refreshing.get((tenant, catalog))

    def forget(self, tenant: str, catalog: str) -> None:
        """Drop a cached assistant (after the catalogue was re-ingested)."""
        with self._lock:
            self._built.pop((tenant, catalog), None)
            self._stamps.pop((tenant, catalog), None)

    def _build(self, tenant: str, catalog: str) -> Any:
        from concierge.shop.assistant import ShopAssistant, hub_embedder
        from concierge.shop.catalog import CatalogError

        embed = hub_embedder(self.hub, embed_alias(self.hub), tenant=tenant)
        report = self._reporter("embedding")
        try:
            assistant = ShopAssistant.open(
                self.hub, tenant, catalog, embed=embed, model_alias=self.model_alias, progress=report,
                first_index=self.first_index, first_seconds=self.first_seconds,
                query_model=alias_option(self.hub, self.model_alias, "query_model") or "auto",
                answer_model=alias_option(self.hub, self.model_alias, "answer_model") != "never",
            )
        except CatalogError as exc:
            raise CatalogUnavailable(str(exc)) from exc
        if getattr(assistant.index, "partial", False):
            thread = threading.Thread(
                target=self._complete, args=(assistant, tenant, catalog), name="concierge-shop-index", daemon=True
            )
            self.completions.append(thread)
            self._completing[(tenant, catalog)] = thread
            if not self._atexit:
                # A thread still inside the embedding runtime when the interpreter exits aborts the
                # process ("terminate called without an active exception"): stop it between batches.
                atexit.register(self.close)
                self._atexit = True
            thread.start()
        return assistant

    def _reporter(self, phase: str) -> Callable[[int, int], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(phase, done, total)

    def close(self, timeout: float = 30.0) -> None:
        """Stop background index completions (between two batches) and wait for them.

        A stopped completion saves nothing; the next start builds its first index again.
        """
        with self._idle:
            self._stopping = True
            self._idle.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self.completions:
            thread.join(max(0.0, deadline - time.monotonic()))

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Marks a shop turn in progress: background embedding waits for it (the cores are few)."""
        with self._idle:
            self._turns += 1
        try:
            yield
        finally:
            with self._idle:
                self._turns -= 1
                self._idle.notify_all()

    def _give_way(self, embed: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
        """``embed`` that first waits (up to ``COMPLETION_WAIT`` s) until no shop turn is running."""

        def polite(texts: list[str]) -> Any:
            with self._idle:
                self._idle.wait_for(lambda: self._turns == 0 or self._stopping, timeout=COMPLETION_WAIT)
                if self._stopping:
                    raise _Stopped
            return embed(texts)

        return polite

    def _complete(self, assistant: Any, tenant: str, catalog: str) -> None:
        """Embed the rest of a quick first index in the background, then swap the full one in."""
        from concierge.shop.search import index_folder

        index = assistant.index
        try:
            full = index.completed(
                index_folder(tenant, catalog), progress=self._reporter("completing"),
                embed=self._give_way(index.embed), batch_size=COMPLETION_BATCH,
            )
            assistant.index = full  # one reference swap: a search in flight finishes on the old index
            log.info("shop %s/%s: search index complete (%d products)", tenant, catalog, len(full.products))
        except _Stopped:
            log.info("shop %s/%s: search index completion stopped (shutting down)", tenant, catalog)
        except Exception:  # noqa: BLE001  (the first index keeps serving; the next start builds it whole)
            log.exception("completing the search index of %s/%s failed", tenant, catalog)


class _Stopped(Exception):
    """The factory is closing: a background completion stops between two batches."""


def _catalog_stamp(tenant: str, catalog: str) -> Any:
    """When the catalogue was last ingested (None if it does not exist)."""
    from concierge.shop.catalog import list_catalogs

    return next((c.updated_at for c in list_catalogs(None, tenant) if c.name == catalog), None)


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
    client_history: list[dict[str, Any]] | None = None  # a stateless client's earlier messages
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
        self, tenant: str, text: str | None, *, catalog: str | None = None, conversation_id: str | None = None,
        shopper_id: str | None = None, messages: list[dict[str, Any]] | None = None,
        query: dict[str, Any] | None = None,
    ) -> ShopTurn:
        """Check the request and load its conversation (if any). Raises before any model call.

        ``messages`` (instead of ``text`` and ``conversation_id``): a stateless client's whole
        conversation, ``[{role: user|assistant, content}]`` ending with the shopper's message. The
        assistant reads the earlier turns again (as it does for a stored conversation without
        state); the turn is stored as a new conversation holding that history, whose id the answer
        carries (the client may go on either way).

        ``query``: the structured query to search with instead of reading ``text`` (the filters of the
        last answer, edited by the shopper); ``text`` may then be empty (the conversation records
        :data:`EDITED_FILTERS`).

        Errors: ShopRequestError (400), ConversationNotFound, and the assistant's CatalogNotFoundError.
        An unknown shopper is found by the assistant when the turn starts (ShopperNotFoundError).
        """
        if query is not None:
            try:
                validate_query_dict(query)  # a 400 before anything is loaded
            except ShopRequestError as exc:
                raise ShopRequestError(exc.message, param="query") from None
        if messages is not None:
            turn = self._prepare_stateless(tenant, messages, catalog=catalog, shopper_id=shopper_id)
            turn.query = query
            return turn
        text = (text or "").strip()
        if query is not None:
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

    def _prepare_stateless(
        self, tenant: str, messages: list[dict[str, Any]], *, catalog: str | None, shopper_id: str | None
    ) -> ShopTurn:
        from concierge.shop.answer import check_messages

        convo = check_messages(messages)
        if any(m["role"] not in ("user", "assistant") for m in convo):
            raise ShopRequestError("messages: only user and assistant messages are accepted", param="messages")
        for i, m in enumerate(convo):
            if "\x00" in m["content"]:
                raise ShopRequestError(f"messages.{i}.content must not contain NUL (\\u0000) characters",
                                       param="messages")
        catalog = catalog or self.catalog
        assistant = self.assistant(tenant, catalog)
        return ShopTurn(
            conversation_id=None, version=0, tenant=tenant, catalog=catalog, shopper_id=shopper_id,
            text=convo[-1]["content"].strip(), messages=convo, state=None, assistant=assistant,
            client_history=convo[:-1],
        )

    def _open(self, turn: ShopTurn) -> str:
        # A conversation row is written only once the assistant accepted the turn: a request that fails
        # validation (an unknown shopper, say) leaves nothing behind.
        if turn.conversation_id is None:
            turn.conversation_id = self.conversations.start(
                turn.tenant, turn.catalog, turn.shopper_id, history=turn.client_history
            )
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

    def _serving(self) -> Any:
        serving = getattr(self.assistants, "serving", None)
        return serving() if serving is not None else nullcontext()

    def answer(self, turn: ShopTurn) -> ShopAnswer:
        """Answer the turn and save it; the answer carries its conversation id."""
        with self._serving():
            result = turn.assistant.answer(turn.messages, **turn.kwargs())
        return self._persist(turn, result)

    def stream(self, turn: ShopTurn) -> Iterator[ShopProducts | str | ShopAnswer]:
        """Start a streamed turn. Request errors (unknown shopper ...) raise here, before any event.

        Yields a :class:`ShopProducts` as soon as the cards are known, text deltas (``str``) while the
        answer is written, then the :class:`ShopAnswer`, saved before it is yielded.
        """
        with self._serving():  # the cards are found here, before the first event
            source = turn.assistant.stream_answer(turn.messages, **turn.kwargs())
        self._open(turn)
        return self._relay(turn, source)

    def _relay(self, turn: ShopTurn, source: Iterator[Any]) -> Iterator[ShopProducts | str | ShopAnswer]:
        with self._serving():
            yield from self._relay_items(turn, source)

    def _relay_items(self, turn: ShopTurn, source: Iterator[Any]) -> Iterator[ShopProducts | str | ShopAnswer]:
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

