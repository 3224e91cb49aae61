"""The conversational shopping assistant: conversation -> structured query -> grounded products -> answer.

One turn (:meth:`ShopAssistant.answer`):

1. the shopper's latest message becomes a :class:`~concierge.shop.query.TurnDelta` (rules, plus the model
   by constrained decoding), applied to the previous turn's query carried in the conversation state;
   a vague request gets one clarifying question instead of products;
2. hybrid search under the query's hard constraints, re-ranked for a known shopper;
3. every card is validated against the catalogue (:mod:`concierge.shop.grounding`);
4. the model writes a short answer from the validated cards only; its text is checked for titles, ids,
   brands and prices the cards do not back -> one regeneration, then a deterministic template.

:meth:`ShopAssistant.stream_answer` yields a :class:`~concierge.shop.answer.ShopProducts` first (cards early), then text deltas
(``str``, released sentence by sentence once checked), then the final :class:`ShopAnswer`.

The conversation state is a JSON-able dict (store it with the conversation, pass it back next turn);
without it, earlier user turns are replayed with the rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from concierge.models.engine import ServingHub
from concierge.models.hub import as_hub
from concierge.shop.answer import ConversationState, ShopAnswer, ShopProducts, check_messages
from concierge.shop.catalog import Catalog, CatalogError, Product, Variant
from concierge.shop.grounding import (
    GroundingReport,
    HardConstraints,
    TextChecker,
    validate_products,
)
from concierge.shop.personalize import Personalizer, Ranked
from concierge.shop.query import (
    CatalogNotFoundError,
    ProductNotFoundError,
    ShopError,
    ShopperNotFoundError,
    ShopRequestError,
    ShopVocabulary,
    StructuredQuery,
    TurnDelta,
    consistent_query,
    constraints_for,
    is_vague,
    merge_deltas,
    model_request,
    parse_rules,
    present_matches,
    sanitize_model_output,
    search_text,
    update_query,
    validate_query_dict,
)
from concierge.shop.search import SearchFilters, SearchIndex, tokenize
from concierge.shop.writing import AnswerWriter, _money, _Plan

log = logging.getLogger(__name__)

__all__ = [
    "CatalogNotFoundError",
    "ConversationState",
    "ProductNotFoundError",
    "ShopAnswer",
    "ShopAssistant",
    "ShopError",
    "ShopProducts",
    "ShopRequestError",
    "ShopperNotFoundError",
    "hub_embedder",
]

def hub_embedder(
    hub: ServingHub, alias: str = "embed", tenant: str | None = None
) -> Callable[[list[str]], np.ndarray]:
    """A search-index embedder backed by the hub's embeddings alias."""

    def embed(texts: list[str]) -> np.ndarray:
        vectors, _ = hub.embed(alias, list(texts), tenant=tenant)
        return np.asarray(vectors, dtype=np.float32)

    return embed


# --------------------------------------------------------------------------------------------------
# The assistant (its answer text: concierge.shop.writing)


class ShopAssistant(AnswerWriter):
    """Answers shoppers over one catalogue. Stateless between calls: the conversation state is passed in."""

    def __init__(
        self,
        hub: ServingHub,
        catalog: Catalog,
        index: SearchIndex,
        recommender: Personalizer | None = None,
        model_alias: str = "shop-assistant",
        *,
        tenant: str | None = None,
        max_products: int = 5,
        query_model: str = "auto",
        answer_model: bool = True,
    ) -> None:
        if catalog is None:
            raise CatalogNotFoundError("no catalogue given to the shop assistant", param="catalog")
        if not isinstance(catalog, Catalog) or not len(catalog):
            raise ShopRequestError("the catalogue is empty; ingest products first", param="catalog")
        if index is None:
            raise ShopRequestError("no search index given to the shop assistant", param="index")
        if query_model not in ("always", "auto", "never"):
            raise ValueError("query_model must be always, auto or never")
        self.hub = hub
        self.catalog = catalog
        self.index = index
        self.recommender = recommender
        self.model_alias = model_alias
        self.tenant = tenant
        self.max_products = max(1, int(max_products))
        self.query_model = query_model
        self.answer_model = answer_model
        self.vocab = ShopVocabulary(catalog)
        self.checker = TextChecker(catalog)

    @classmethod
    def open(
        cls,
        hub: ServingHub,
        tenant: str,
        catalog_name: str,
        *,
        embed: Callable[[list[str]], np.ndarray] | None = None,
        session: Any = None,
        progress: Callable[[int, int], None] | None = None,
        first_index: int | None = None,
        first_seconds: float | None = None,
        **kwargs: Any,
    ) -> ShopAssistant:
        """The assistant for a stored catalogue: catalogue, interactions and search index (built if needed).

        ``embed`` defaults to the hub's ``embed`` role alias. CatalogNotFoundError if the catalogue is absent.
        """
        from concierge.shop.catalog import load_catalog, load_interactions
        from concierge.shop.search import IndexMismatchError, index_folder

        try:
            catalog = load_catalog(session, tenant, catalog_name)
            interactions = load_interactions(session, tenant, catalog_name)
        except CatalogError as exc:
            raise CatalogNotFoundError(str(exc), param="catalog") from None
        if embed is None:
            embed = hub_embedder(hub, hub.deployment.default("embed"), tenant=tenant)
        folder = index_folder(tenant, catalog_name)
        try:
            index = SearchIndex.load(folder, embed, catalog)
        except IndexMismatchError:
            # first_index: a quick first index (see SearchIndex.build); the caller completes it.
            index = SearchIndex.build(
                catalog, embed, folder, progress=progress, first=first_index, first_seconds=first_seconds
            )
        recommender = Personalizer(catalog, interactions) if interactions else None
        kwargs.setdefault("model_alias", as_hub(hub).deployment.role("shop", "shop-assistant"))
        return cls(hub, catalog, index, recommender, tenant=tenant, **kwargs)

    # -- public API ---------------------------------------------------------------------------

    def answer(
        self,
        messages: Any,
        shopper_id: str | None = None,
        state: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> ShopAnswer:
        """One assistant turn for the conversation ``messages`` (the last one is the shopper's).

        ``query``: a structured query to search with instead of reading the last message -- the filters
        the previous answer showed, as the shopper edited them (one removed, a price changed)."""
        started = time.perf_counter()
        plan = self._plan(messages, shopper_id, state, query)
        t0 = time.perf_counter()
        message = self._write(plan)
        plan.trace["timings_ms"]["answer"] = round((time.perf_counter() - t0) * 1000, 1)
        return self._finish(plan, message, started)

    def stream_answer(
        self,
        messages: Any,
        shopper_id: str | None = None,
        state: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[ShopProducts | str | ShopAnswer]:
        """:class:`ShopProducts`, then text deltas (``str``), then the final :class:`ShopAnswer`.

        Request errors (bad messages, unknown shopper) raise at the call, before anything is yielded.
        """
        started = time.perf_counter()
        plan = self._plan(messages, shopper_id, state, query)
        return self._stream(plan, started)

    def _stream(self, plan: _Plan, started: float) -> Iterator[ShopProducts | str | ShopAnswer]:
        yield ShopProducts(
            products=[dict(c) for c in plan.cards],
            query=plan.query.model_dump() if plan.query else {},
            constraints=plan.constraints.to_dict(),
            clarifying=plan.clarifying,
            alternatives=[dict(c) for c in plan.alternatives],
        )
        t0 = time.perf_counter()
        parts: list[str] = []
        for delta in self._stream_text(plan):
            parts.append(delta)
            yield delta
        plan.trace["timings_ms"]["answer"] = round((time.perf_counter() - t0) * 1000, 1)
        yield self._finish(plan, "".join(parts).strip(), started)

    def more_like_this(self, item_id: str, k: int = 6) -> list[dict[str, Any]]:
        """In-stock products most similar to a product (or a variant's product), by dense vectors."""
        product, _ = self._resolve(item_id)
        k = max(1, int(k))
        try:
            hits = self.index.similar(product.id, k=k * 2, filters=SearchFilters(in_stock=True))
        except KeyError:
            hits = []  # the index predates this product; nothing to compare with yet
        cards = []
        for hit in hits:
            card = self._card(hit.product.id, hit.variant.id)
            if card is None:
                continue
            shared = self._shared(product, hit.product)
            card["reason"] = f"similar to {product.title}" + (f" ({shared})" if shared else "")
            cards.append(card)
        kept, _ = validate_products(cards, self.catalog, HardConstraints(in_stock=True))
        return kept[:k]

    def complete_the_look(self, product_id: str, k: int = 4) -> list[dict[str, Any]]:
        """Complementary in-stock items from other categories, from the catalogue's own data: products bought
        with this one, then categories its buyers buy more than shoppers at large, then the category tree
        (other branches of its department, then its sibling categories, then other departments). At most
        two items per category, preferring a shared colour and, where interactions exist, popular items."""
        product, variant = self._resolve(product_id)
        k = max(1, int(k))
        colours = self._colours([variant] if variant else product.variants)
        picks: list[dict[str, Any]] = []
        taken: set[str] = {product.id}
        per_category: dict[str, int] = {}

        def add(other: Product, reason: str) -> None:
            if other.id in taken or other.category == product.category:
                return
            if per_category.get(other.category, 0) >= 2:
                return
            chosen = self._pick_variant(other, colours)
            if chosen is None:
                return
            card = self._card(other.id, chosen.id)
            if card is not None:
                card["reason"] = reason
                picks.append(card)
                taken.add(other.id)
                per_category[other.category] = per_category.get(other.category, 0) + 1

        if self.recommender is not None:
            for pid, _ in self.recommender.co_purchases(product.id):
                other = self.catalog.get_product(pid)
                if other is not None:
                    add(other, f"often bought together with {product.title}")
                if len(picks) >= k:
                    break
        name = product.category.split(" > ")[-1].lower()
        # One item per category per round, so the look spans several categories before any repeats.
        categories = self._complement_categories(product)
        for _round in range(2):
            for category in categories:
                if len(picks) >= k:
                    break
                pool = [p for p in self.catalog.products if p.category == category and p.id not in taken]
                if self.recommender is not None:
                    pop = self.recommender.popularity
                    pool.sort(key=lambda p: -pop.get(p.id, 0))
                pool.sort(key=lambda p: not (self._colours(p.variants) & colours))  # a shared colour first
                before = len(picks)
                for other in pool:
                    add(other, f"goes with {name}: {category.split(' > ')[-1].lower()}")
                    if len(picks) > before:
                        break
        kept, _ = validate_products(picks, self.catalog, HardConstraints(in_stock=True))
        return kept[:k]

    # -- planning -----------------------------------------------------------------------------

    def _plan(
        self,
        messages: Any,
        shopper_id: str | None,
        state_in: Mapping[str, Any] | None,
        edited: Mapping[str, Any] | None = None,
    ) -> _Plan:
        t_start = time.perf_counter()
        convo = check_messages(messages)
        if shopper_id is not None:
            if self.recommender is None:
                raise ShopperNotFoundError(
                    f"unknown shopper {shopper_id!r}: catalogue {self.catalog.tenant}/{self.catalog.name} "
                    "has no shopper interactions",
                    param="shopper_id",
                )
            self.recommender.require_shopper(shopper_id)
        state = ConversationState.from_dict(state_in)
        user_turns = [i for i, m in enumerate(convo) if m["role"] == "user"]
        if state.turns != len(user_turns) - 1:
            # No state, or state from another point of the conversation: replay earlier turns (rules only).
            state = self._replay(convo, user_turns[:-1])
        trace: dict[str, Any] = {"timings_ms": {}, "model_calls": 0, "model_errors": []}
        text = convo[-1]["content"]
        parsed = None  # the rules' reading of the message, reused by the exact-match check
        if edited is not None:
            # The shopper edited the filters shown with the last answer: search with them as given.
            query = consistent_query(validate_query_dict(dict(edited)), self.vocab)
            delta_source, dropped, mode = "edited", [], "edited"
            text = ""  # the filters say it all: no words left for the matcher to check
        else:
            query, delta_source, dropped, mode, parsed = self._understand(convo, text, state, trace, use_model=True)
        trace.update(query_source=delta_source, model_dropped=dropped, mode=mode)
        trace["timings_ms"]["understand"] = round((time.perf_counter() - t_start) * 1000, 1)
        report = GroundingReport()
        constraints = constraints_for(query, self.vocab)
        new_state = ConversationState(
            query=query.model_dump(),
            shown=[],
            clarifications=state.clarifications,
            last_clarifying=False,
            turns=len(user_turns),
        )
        if edited is None and is_vague(query, self.vocab) and state.clarifications == 0:
            new_state.clarifications += 1
            new_state.last_clarifying = True
            validate_products([], self.catalog, constraints, report)  # nothing shown; the audit is uniform
            report.text_source = "clarifying"
            trace["mode"] = "clarify"
            return _Plan(
                query, constraints, [], True, new_state, report, trace, text, question=self._question(query)
            )
        t0 = time.perf_counter()
        ranked = self._retrieve(query, constraints, shopper_id)
        trace["timings_ms"]["search"] = round((time.perf_counter() - t0) * 1000, 1)
        cards = []
        for r in ranked:
            hit = r.item
            card = self._card(hit.product.id, hit.variant.id, fallback=hit)
            if card is not None:
                card["reason"] = self._reason(hit.product, hit.variant, query, constraints, r)
                cards.append(card)
        cards, report = validate_products(cards, self.catalog, constraints, report)
        cards = cards[: self.max_products]
        # Exact matches, and -- where a card misses something or nothing is exact -- near alternatives,
        # each marked with what it meets and misses: never shown as a match.
        t0 = time.perf_counter()
        marked = present_matches(
            cards, self.catalog, self.index, text, query, constraints, self.vocab, k=self.max_products,
            parsed=parsed,
        )
        exact = [c for c in marked if c["match"] == "exact"]
        near = [c for c in marked if c["match"] == "near"]
        for c in near:
            c["reason"] = "close, but " + "; ".join(c["unmet"])
        # Alternatives are grounded like cards (real, in stock, title and price), not on the constraints.
        near, _ = validate_products(near, self.catalog, HardConstraints(in_stock=True), report)
        trace["timings_ms"]["match"] = round((time.perf_counter() - t0) * 1000, 1)
        new_state.shown = [
            {"id": c["id"], "product_id": c["product_id"], "price": c["price"]} for c in exact + near
        ]
        personalised = any(r.personal > 0 for r in ranked[: len(exact)])
        return _Plan(
            query, constraints, exact, False, new_state, report, trace, text, personalised=personalised,
            alternatives=near,
        )

    def _understand(
        self,
        convo: list[dict[str, str]],
        text: str,
        state: ConversationState,
        trace: dict[str, Any] | None,
        use_model: bool,
    ) -> tuple[StructuredQuery, str, list[str], str, TurnDelta]:
        """The conversation's query after ``text``, how it was read, and the rules' own reading."""
        previous = StructuredQuery.model_validate(state.query) if state.query else None
        context = self.vocab.resolve_category(previous.category) if previous else []
        rules = parse_rules(text, self.vocab, context)
        model_delta = None
        dropped: list[str] = []
        ask_model = use_model and (
            self.query_model == "always"
            or (self.query_model == "auto" and not ({"category"} <= rules.certain or rules.cheaper))
        )
        if ask_model and trace is not None:
            t0 = time.perf_counter()
            try:
                response = self.hub.chat(
                    self.model_alias, model_request(convo, self.vocab, previous), tenant=self.tenant
                )
                trace["model_calls"] += 1
                content = ((response.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                model_delta, dropped = sanitize_model_output(content, self.vocab, text)
            except Exception as exc:  # noqa: BLE001 - the rules still answer when the model fails
                trace["model_errors"].append(f"query: {type(exc).__name__}: {str(exc)[:200]}")
            trace["timings_ms"]["query_model"] = round((time.perf_counter() - t0) * 1000, 1)
        delta = merge_deltas(rules, model_delta)
        query, mode = update_query(
            previous,
            delta,
            self.vocab,
            shown_prices=[s["price"] for s in state.shown],
            after_clarifying=state.last_clarifying,
        )
        return query, delta.source, dropped, mode, rules

    def _replay(self, convo: list[dict[str, str]], earlier: list[int]) -> ConversationState:
        state = ConversationState()
        for n, i in enumerate(earlier, 1):
            query, _, _, _, _ = self._understand(
                convo[: i + 1], convo[i]["content"], state, None, use_model=False
            )
            nxt = ConversationState(query=query.model_dump(), clarifications=state.clarifications, turns=n)
            if is_vague(query, self.vocab) and state.clarifications == 0:
                nxt.clarifications += 1
                nxt.last_clarifying = True
            else:
                constraints = constraints_for(query, self.vocab)
                ranked = self._retrieve(query, constraints, None)[: self.max_products]
                nxt.shown = [
                    {"id": r.item.variant.id, "product_id": r.item.product.id, "price": r.item.variant.price}
                    for r in ranked
                ]
            state = nxt
        return state

    def _retrieve(
        self, query: StructuredQuery, constraints: HardConstraints, shopper_id: str | None
    ) -> list[Ranked]:
        text = search_text(query, self.vocab)
        personal = shopper_id is not None and self.recommender is not None and query.sort == "relevance"
        wide = personal or query.sort != "relevance" or not text
        k = max(self.max_products * 6, 30) if wide else self.max_products * 2
        hits = self.index.search(text, constraints.to_filters(), k=k if text else 200)
        if query.sort == "price_asc":
            hits = sorted(hits, key=lambda h: (h.variant.price, h.product.id))
        elif query.sort == "price_desc":
            hits = sorted(hits, key=lambda h: (-h.variant.price, h.product.id))
        elif not text and self.recommender is not None:
            # Nothing to rank by: popular items first.
            pop = self.recommender.popularity
            hits = sorted(hits, key=lambda h: -pop.get(h.product.id, 0))
        if personal:
            assert self.recommender is not None and shopper_id is not None
            return self.recommender.rerank(hits, shopper_id)
        return [Ranked(h, 0.0, 0.0, None, None) for h in hits]

    # -- cards and reasons --------------------------------------------------------------------

    def _card(self, product_id: str, variant_id: str, fallback: Any = None) -> dict[str, Any] | None:
        """A card from the catalogue (the truth); from the index hit only if the catalogue lacks it, so
        that grounding can report it as dropped."""
        product = self.catalog.get_product(product_id)
        variant = self.catalog.get_variant(variant_id)
        if product is None or variant is None:
            if fallback is None:
                return None
            product, variant = fallback.product, fallback.variant
        return {
            "id": variant.id,
            "product_id": product.id,
            "title": product.title,
            "price": variant.price,
            "currency": product.currency,
            "options": dict(variant.options),
            "category": product.category,
            "brand": product.brand,
            "image_url": product.image_url,
            "reason": "",
        }

    def _reason(
        self, product: Product, variant: Variant, q: StructuredQuery, c: HardConstraints, r: Ranked
    ) -> str:
        parts: list[str] = []
        values = {k.lower(): v for k, v in variant.options.items()}
        for key in c.attributes:
            if key == "brand":
                parts.append(f"by {product.brand}")
                continue
            have = values.get(key)
            if have is None:
                attr = product.attributes.get(key)
                have = ", ".join(attr) if isinstance(attr, list) else attr
            if not have:
                continue
            if key in self.vocab.bool_keys:
                parts.append(key if str(have).lower() == "yes" else f"not {key}")
            elif key in ("size", "capacity", "volume", "model"):
                parts.append(f"{key} {have}")
            else:
                parts.append(str(have).lower())
        if c.price_min is not None and c.price_max is not None:
            parts.append(f"{_money(variant.price)}, within {_money(c.price_min)}-{_money(c.price_max)}")
        elif c.price_max is not None:
            parts.append(f"under {_money(c.price_max)}")
        elif c.price_min is not None:
            parts.append(f"over {_money(c.price_min)}")
        excluded = [v for vals in c.exclude_attributes.values() for v in vals] + list(c.exclude_terms)
        if excluded:
            parts.append("no " + " or ".join(excluded))
        if q.sort == "price_asc":
            parts.append("low price first")
        if not parts and q.keywords:
            words = set(tokenize(f"{product.title} {' '.join(variant.options.values())}"))
            matched = [w for w in q.keywords.split() if w in words]
            if matched:
                parts.append("matches " + ", ".join(matched[:3]))
        if r.because is not None:
            verb = "bought" if r.because_event in ("cart", "purchase") else "viewed"
            parts.append(f"similar to items you {verb}")
        if not parts:
            parts.append(f"{product.category.split(' > ')[-1].lower()} in stock")
        return ", ".join(parts[:5])

    def _shared(self, a: Product, b: Product) -> str:
        """What two products have in common, in words: the category, then shared attribute values."""
        shared = []
        if a.category == b.category:
            shared.append(f"also {a.category.split(' > ')[-1].lower()}")
        for key, value in a.attributes.items():
            other = b.attributes.get(key)
            if key != "brand" and value and other == value and isinstance(value, str) and len(shared) < 3:
                shared.append(f"{key} {value}".lower() if key not in ("color", "colour", "material") else value)
        return ", ".join(shared)

    def _colours(self, variants: Any) -> set[str]:
        key = self.vocab.color_key
        if not key:
            return set()
        return {str(v.options.get(key, "")).lower() for v in variants} - {""}

    def _pick_variant(self, product: Product, colours: set[str]) -> Variant | None:
        in_stock = [v for v in product.variants if v.in_stock]
        if not in_stock:
            return None
        return next((v for v in in_stock if self._colours([v]) & colours), in_stock[0])

    def _complement_categories(self, product: Product) -> list[str]:
        """Other leaf categories to complete a look with, best first: those the product's buyers buy more
        than shoppers at large (interactions), then the category tree -- other branches of the product's
        department ("Electronics > Phones" for "Electronics > Audio > Earbuds"), its siblings, and last the
        other departments. No category is named in code: any catalogue's tree works."""
        out: list[str] = []
        if self.recommender is not None:
            out += [c for c, _ in self.recommender.category_complements(product.category)]
        segs = product.category.split(" > ")
        top, parent = segs[0], " > ".join(segs[:-1])

        def under(prefix: str) -> list[str]:
            return [leaf for leaf in self.vocab.leaves if leaf.startswith(prefix + " > ")]

        siblings = under(parent) if len(segs) > 1 else []
        department = under(top) if len(segs) > 1 else []
        cousins = [leaf for leaf in department if leaf not in siblings]
        out += cousins + siblings + [leaf for leaf in self.vocab.leaves if leaf not in department]
        return [c for c in dict.fromkeys(out) if c != product.category]

    def _resolve(self, item_id: str) -> tuple[Product, Variant | None]:
        if not isinstance(item_id, str) or not item_id:
            raise ShopRequestError("a product or variant id is required", param="id")
        try:
            return self.catalog.resolve(item_id)
        except KeyError:
            raise ProductNotFoundError(
                f"no product or variant {item_id!r} in catalogue {self.catalog.tenant}/{self.catalog.name}",
                param="id",
            ) from None
