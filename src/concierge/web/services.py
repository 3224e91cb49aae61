"""What the web pages and the shop/support API routes run on (no web framework imports).

:class:`WebServices` bundles the model hub, a shop-assistant factory (one assistant per tenant and
catalogue, built lazily and cached), the support session, and the names the public pages use.
:func:`build_demo_services` prepares the demo store (generated and ingested once, its search index
cached under ``CONCIERGE_HOME/indexes``) and the homestay support domain.
:class:`ShopChat` runs one shop turn over a persisted conversation, for both the browser and the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concierge import config
from concierge.shop.query import ShopRequestError
from concierge.store.db import session_scope
from concierge.web.store import ConversationNotFound, ShopConversations, plain

log = logging.getLogger(__name__)


@dataclass
class WebServices:
    """Everything ``mount_web`` and the shop/support routers need.

    ``shop_assistant(tenant, catalog)`` returns the assistant for a catalogue (raising
    ``concierge.shop.catalog.CatalogError`` when there is none); ``support_session()`` the shared
    :class:`~concierge.support.session.SupportSession`.
    """

    hub: Any
    shop_assistant: Callable[[str, str], Any]
    support_session: Callable[[], Any]
    tenant: str = "demo"
    catalog: str = "demo"
    support_domain: str = "homestay"
    support_mode: str = "guided"
    db_url: str | None = None
    reports_dir: Path | None = None  # default: CONCIERGE_HOME/reports
    secret: bytes | None = None  # cookie-signing key; default: security.load_secret()
    extra_origins: tuple[str, ...] = ()  # public origins when a proxy rewrites Host
    cookie_secure: bool | None = None  # None: Secure cookies when the request came over https
    operator_session_s: int = 8 * 3600
    visitor_session_s: int = 30 * 24 * 3600
    warmers: list[threading.Thread] = field(default_factory=list)

    def reports_folder(self) -> Path:
        return self.reports_dir or (config.home() / "reports")


# --------------------------------------------------------------------------------------------------
# Building blocks


def role_alias(hub: Any, role: str, fallback: str) -> str:
    """The alias the deployment names for a role (``shop``, ``support``), else ``fallback``."""
    deployment = getattr(hub, "deployment", None)
    if deployment is not None and hasattr(deployment, "default"):
        return str(deployment.default(role))
    return fallback


def embed_alias(hub: Any, preferred: str = "embed") -> str:
    """The alias to embed with: the deployment's ``embed`` role, else ``preferred``, else any embedding model."""
    deployment = getattr(hub, "deployment", None)
    if deployment is not None and hasattr(deployment, "default"):
        try:
            return str(deployment.default("embed"))
        except Exception:  # noqa: BLE001  (a deployment without the role falls through to the cards)
            pass
    cards = list(hub.models())
    if any(c.alias == preferred and c.kind == "embeddings" for c in cards):
        return preferred
    for card in cards:
        if card.kind == "embeddings":
            return card.alias
    raise ValueError("the deployment has no embedding model; the shop search needs one")


class ShopWarming(RuntimeError):
    """The catalogue's assistant is being prepared (search index build) by another request or at start-up."""


class AssistantFactory:
    """One shop assistant per (tenant, catalogue), built on first use and kept.

    :meth:`ShopAssistant.open` loads the catalogue and its interactions (for personalisation and
    "complete the look"), and opens its search index, embedding with the hub's embedding alias the
    first time and reusing the saved index after. One build per key at a time: a request that
    arrives while another thread builds gets :class:`ShopWarming` at once (the API answers 503 with
    Retry-After) instead of holding a connection for minutes. A failed build is not cached.
    """

    def __init__(self, hub: Any, *, model_alias: str | None = None) -> None:
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

        embed = hub_embedder(self.hub, embed_alias(self.hub), tenant=tenant)
        return ShopAssistant.open(self.hub, tenant, catalog, embed=embed, model_alias=self.model_alias)


def ensure_demo_store(
    tenant: str = "demo", catalog: str = "demo", *, n_products: int = 3000, n_shoppers: int = 500, seed: int = 7,
    db_url: str | None = None,
) -> bool:
    """Generate and ingest the demo store unless ``tenant/catalog`` exists; True when it was written."""
    from concierge.shop.catalog import CatalogError, ingest_catalog, ingest_interactions, list_catalogs
    from concierge.shop.demo_store import generate_demo_store

    with session_scope(db_url) as db:
        if any(c.name == catalog for c in list_catalogs(db, tenant)):
            return False
    products, events = generate_demo_store(seed=seed, n_products=n_products, n_shoppers=n_shoppers)
    label = f"demo(seed={seed}, products={n_products}, shoppers={n_shoppers})"
    with session_scope(db_url) as db:
        report = ingest_catalog(db, tenant, catalog, products, source_label=label)
        if not report.ok:
            raise CatalogError(f"demo store rejected: {report.summary()}")
        if events:
            events_report = ingest_interactions(db, tenant, catalog, events, source_label=label)
            if not events_report.ok:
                raise CatalogError(f"demo interactions rejected: {events_report.summary()}")
    return True


def build_demo_services(
    hub: Any,
    *,
    tenant: str = "demo",
    catalog: str = "demo",
    n_products: int = 3000,
    n_shoppers: int = 500,
    support_mode: str = "guided",
    use_model: bool = True,
    warm: bool = True,
    db_url: str | None = None,
) -> WebServices:
    """Services for ``concierge serve``: the demo store and the homestay support desk.

    The demo store is generated and ingested on first start only. With ``warm`` the shop assistant
    (catalogue, search index: built once with the hub's embedding model, then reused from disk) is
    prepared in a background thread so the first shopper does not wait for it.
    """
    from concierge import tenancy
    from concierge.support.session import SupportSession

    tenancy.create_tenant(tenant, db_url=db_url)
    ensure_demo_store(tenant, catalog, n_products=n_products, n_shoppers=n_shoppers, db_url=db_url)
    assistants = AssistantFactory(hub)
    support = SupportSession(hub, alias=role_alias(hub, "support", "support-agent"), default_mode=support_mode,
                             use_model=use_model, db_url=db_url)
    services = WebServices(
        hub=hub, shop_assistant=assistants, support_session=lambda: support, tenant=tenant, catalog=catalog,
        support_mode=support_mode, db_url=db_url,
    )
    if warm:

        def prepare() -> None:
            try:
                assistants(tenant, catalog)
                support.domain(services.support_domain)
            except Exception:  # noqa: BLE001  (the first request will report the error to its caller)
                log.exception("preparing the demo shop and support failed")

        thread = threading.Thread(target=prepare, name="concierge-web-warm", daemon=True)
        thread.start()
        services.warmers.append(thread)
    return services


# --------------------------------------------------------------------------------------------------
# One shop turn


def answer_dict(answer: Any) -> dict[str, Any]:
    """The assistant's answer as a JSON-ready dict with the documented fields."""
    data = plain(answer)
    if not isinstance(data, dict):
        data = {"message": str(data)}
    return {
        "message": str(data.get("message") or ""),
        "query": data.get("query"),
        "products": list(data.get("products") or []),
        "clarifying": bool(data.get("clarifying")),
        "state": data.get("state"),
    }


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


class ShopChat:
    """Shop turns over persisted conversations, shared by the browser page and ``/v1/shop/chat``."""

    def __init__(self, services: WebServices) -> None:
        self.services = services
        self.conversations = ShopConversations(services.db_url)

    def assistant(self, tenant: str, catalog: str) -> Any:
        return self.services.shop_assistant(tenant, catalog)

    def prepare(
        self, tenant: str, text: str, *, catalog: str | None = None, conversation_id: str | None = None,
        shopper_id: str | None = None,
    ) -> ShopTurn:
        """Check the request and load its conversation (if any). Raises before any model call.

        Errors: ShopRequestError (400), ConversationNotFound, and the assistant's CatalogNotFoundError.
        An unknown shopper is found by the assistant when the turn starts (ShopperNotFoundError).
        """
        text = text.strip()
        if not text:
            raise ShopRequestError("message must not be empty", param="message")
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
            catalog = catalog or self.services.catalog
            state = None
        assistant = self.assistant(tenant, catalog)
        state = state or {}
        history = [m for m in state.get("messages") or [] if m.get("role") in ("user", "assistant")]
        return ShopTurn(
            conversation_id=conversation_id or None, version=int(state.get("version", 0)), tenant=tenant,
            catalog=catalog, shopper_id=shopper_id, text=text,
            messages=[*history, {"role": "user", "content": text}], state=state.get("assistant_state"),
            assistant=assistant,
        )

    def _open(self, turn: ShopTurn) -> str:
        # A conversation row is written only once the assistant accepted the turn: a request that fails
        # validation (an unknown shopper, say) leaves nothing behind.
        if turn.conversation_id is None:
            turn.conversation_id = self.conversations.start(turn.tenant, turn.catalog, turn.shopper_id)
        return turn.conversation_id

    def answer(self, turn: ShopTurn) -> dict[str, Any]:
        result = answer_dict(turn.assistant.answer(turn.messages, shopper_id=turn.shopper_id, state=turn.state))
        self.conversations.record(self._open(turn), turn.version, turn.text, result)
        return result

    def start_stream(self, turn: ShopTurn) -> Iterator[tuple[str, Any]]:
        """Start a streamed turn. Request errors (unknown shopper ...) raise here, before any event.

        The events: ``("products", [cards])`` as soon as the cards are known, ``("delta", text)``
        while the answer is written, then ``("answer", dict)``, saved before it is yielded.
        """
        source = turn.assistant.stream_answer(turn.messages, shopper_id=turn.shopper_id, state=turn.state)
        self._open(turn)
        return self._relay(turn, source)

    def _relay(self, turn: ShopTurn, source: Iterator[Any]) -> Iterator[tuple[str, Any]]:
        from concierge.shop.assistant import ShopProducts

        final: dict[str, Any] | None = None
        try:
            for item in source:
                if isinstance(item, str):
                    yield "delta", item
                elif isinstance(item, ShopProducts):
                    yield "products", plain(item.products)
                else:
                    final = answer_dict(item)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if final is None:
            raise RuntimeError("the shop assistant's stream ended without an answer")
        self.conversations.record(self._open(turn), turn.version, turn.text, final)
        yield "answer", final

    def similar(self, tenant: str, catalog: str, item_id: str, k: int = 6) -> list[dict[str, Any]]:
        return products_list(self.assistant(tenant, catalog).more_like_this(item_id, k))

    def complete_the_look(self, tenant: str, catalog: str, product_id: str, k: int = 6) -> list[dict[str, Any]]:
        return products_list(self.assistant(tenant, catalog).complete_the_look(product_id, k))


# --------------------------------------------------------------------------------------------------
# One support turn


def awaiting_confirmation(state: dict[str, Any], message: str) -> bool:
    """Whether the agent's last turn asks the customer to approve a change (the page shows Yes / No).

    Guided mode says so exactly (its flow waits on a ``confirm`` step); in agent mode the model's
    wording is all there is, read with the same cue the guardrails use.
    """
    if state.get("status") not in (None, "open"):
        return False
    if state.get("mode") == "guided":
        active = (state.get("flow") or {}).get("active") or {}
        return active.get("awaiting") == "confirm"
    from concierge.support.guardrails import asks_confirmation

    return asks_confirmation(message)


def support_turn(
    services: WebServices, tenant: str, text: str, *, conversation_id: str | None = None,
    domain: str | None = None, mode: str | None = None,
) -> dict[str, Any]:
    """One customer message: ``{conversation_id, message, actions, status, confirm}``.

    Raises ``concierge.support.session.ConversationNotFound`` for an id this tenant does not own,
    ValueError for an empty message, an unknown domain or mode.
    """
    session = services.support_session()
    if conversation_id is None:
        domain = domain or services.support_domain
        mode = mode or services.support_mode
    result = session.chat(text, conversation_id=conversation_id, domain=domain, mode=mode, tenant=tenant)
    state = session.state(result["conversation_id"])
    return {**plain(result), "confirm": awaiting_confirmation(state, str(result.get("message") or ""))}


__all__ = [
    "AssistantFactory",
    "ConversationNotFound",
    "ShopChat",
    "ShopTurn",
    "ShopWarming",
    "WebServices",
    "awaiting_confirmation",
    "build_demo_services",
    "embed_alias",
    "role_alias",
    "ensure_demo_store",
    "support_turn",
]
