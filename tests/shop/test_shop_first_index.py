"""A quick first index on a first start: a few products embedded before the shop answers, the rest
in the background, and the completed index the same as one built whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from concierge.shop import catalog as cat
from concierge.shop.demo_store import generate_demo_store
from concierge.shop.search import HashingEmbedder, SearchFilters, SearchIndex, index_folder
from concierge.store import db


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path / "home"
    db.reset_engines()


class Counting(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.embedded += len(texts)
        return super().__call__(texts)


@pytest.fixture(scope="module")
def catalog() -> cat.Catalog:
    products, _ = generate_demo_store(seed=3, n_products=120, n_shoppers=0)
    return cat.Catalog.from_records(products)


def test_first_index_embeds_a_spread_then_completes_to_the_whole_index(catalog: cat.Catalog, tmp_path: Path) -> None:
    embed = Counting()
    quick = SearchIndex.build(catalog, embed, tmp_path / "index", first=30)
    assert quick.partial and embed.embedded == 30 + 1  # 30 products and the probe
    assert not (tmp_path / "index").exists()  # a partial index is never saved
    # The 30 are spread over the catalogue, not its first 30.
    embedded = np.flatnonzero(quick._product_row >= 0)
    assert len(embedded) == 30 and embedded.max() > 90 and embedded.min() < 10
    assert max(np.diff(embedded)) <= 8
    # Every product is still found by its words (BM25 and the filters cover the whole catalogue).
    target = catalog.products[int(np.flatnonzero(quick._product_row < 0)[0])]
    assert target.id in {h.product_id for h in quick.search(target.title, k=10)}
    assert quick.count(SearchFilters()) == len(catalog.products)

    embed.embedded = 0
    full = quick.completed(tmp_path / "index")
    assert not full.partial and embed.embedded == 120 - 30 + 1  # only the rest (and the probe)
    whole = SearchIndex.build(catalog, HashingEmbedder())
    for query in ("waterproof hiking boots", "a warm jacket under $150", "yoga mat"):
        ours = [(h.product_id, h.variant_id) for h in full.search(query, k=10)]
        assert ours == [(h.product_id, h.variant_id) for h in whole.search(query, k=10)]
    reopened = SearchIndex.load(tmp_path / "index", HashingEmbedder(), catalog)
    assert [h.product_id for h in reopened.similar(target.id, k=5)] == [h.product_id for h in whole.similar(target.id, k=5)]


def test_a_time_budget_of_nothing_serves_by_keywords_and_completes(catalog: cat.Catalog) -> None:
    embed = Counting()
    quick = SearchIndex.build(catalog, embed, first_seconds=0.0)
    assert quick.partial and embed.embedded == 1  # the probe only
    target = catalog.products[7]
    assert target.id in {h.product_id for h in quick.search(target.title, k=10)}
    assert quick.similar(target.id) == []  # no vector yet: nothing to compare with
    embed.embedded = 0
    full = quick.completed()
    assert embed.embedded == 120 + 1 and not full.partial  # every product, and the probe
    assert full.similar(target.id, k=3)


def test_a_first_start_serves_from_the_quick_index_and_swaps_in_the_full_one() -> None:
    from concierge.shop.session import AssistantFactory
    from helpers.hubs import ShopHub

    products, _ = generate_demo_store(seed=3, n_products=120, n_shoppers=0)
    assert cat.ingest_catalog(None, "acme", "store", products).ok
    seen: list[tuple[str, int, int]] = []
    factory = AssistantFactory(ShopHub(), first_index=20, progress=lambda *step: seen.append(step))
    assistant = factory("acme", "store")
    for thread in factory.completions:
        thread.join(60)
    assert not assistant.index.partial and len(assistant.index.products) == 120
    assert (index_folder("acme", "store") / "meta.json").is_file()
    assert ("embedding", 20, 20) in seen and ("completing", 121, 121) not in seen
    assert seen[-1][0] == "completing" and seen[-1][1] == seen[-1][2] == 120
    # The next start loads the saved, complete index: no quick index, nothing to complete.
    again = AssistantFactory(ShopHub(), first_index=20)
    assert not again("acme", "store").index.partial and again.completions == []


def test_background_embedding_gives_way_to_a_running_turn() -> None:
    import threading
    import time

    from concierge.shop.session import AssistantFactory
    from helpers.hubs import ShopHub

    factory = AssistantFactory(ShopHub())
    calls: list[float] = []
    polite = factory._give_way(lambda texts: calls.append(time.monotonic()))
    with factory.serving():
        worker = threading.Thread(target=polite, args=(["a text"],))
        worker.start()
        time.sleep(0.3)
        assert calls == []  # waiting while a shop turn runs
        released = time.monotonic()
    worker.join(5)
    assert len(calls) == 1 and calls[0] >= released


def test_closing_the_factory_stops_a_completion_and_saves_nothing() -> None:
    from concierge.shop.session import AssistantFactory
    from helpers.hubs import ShopHub

    products, _ = generate_demo_store(seed=3, n_products=120, n_shoppers=0)
    assert cat.ingest_catalog(None, "acme", "store", products).ok
    factory = AssistantFactory(ShopHub(), first_index=20)
    with factory.serving():  # a turn in progress: the completion waits before its first batch
        assistant = factory("acme", "store")
        factory.close(timeout=10)
    assert not any(thread.is_alive() for thread in factory.completions)
    assert assistant.index.partial
    assert not (index_folder("acme", "store") / "meta.json").exists()


def test_the_alias_says_when_the_model_reads_a_request_and_writes_the_answer(tiny_gguf: Path) -> None:
    """``query_model`` on the shopping assistant's alias: ``auto`` (the default) leaves a request the
    rules read with certainty to the rules; ``always`` sends every request to the model too.
    ``answer_model: never``: the checked template answers and the model writes nothing."""
    from concierge.models.deployment import DeploymentError, parse_deployment
    from concierge.models.hub import ModelCard
    from concierge.shop.session import AssistantFactory
    from helpers.hubs import ShopHub, shop_cards

    with pytest.raises(DeploymentError, match="query_model must be one of auto, always, never, got 'often'"):
        parse_deployment({"models": {"a": {"gguf": str(tiny_gguf), "query_model": "often"}}})
    with pytest.raises(DeploymentError, match="answer_model must be one of always, never, got 'auto'"):
        parse_deployment({"models": {"a": {"gguf": str(tiny_gguf), "answer_model": "auto"}}})
    spec = parse_deployment({"models": {"a": {"gguf": str(tiny_gguf), "query_model": "always",
                                              "answer_model": "never"}}}).aliases["a"]
    assert (spec.query_model, spec.answer_model) == ("always", "never")
    products, _ = generate_demo_store(seed=3, n_products=120, n_shoppers=0)
    assert cat.ingest_catalog(None, "acme", "store", products).ok
    leaf = sorted({p["category"] for p in products})[0]
    text = f"I want {leaf.split(' > ')[-1].lower()}"
    reading: dict[tuple[str, str], tuple[int, int, str]] = {}
    for option in ("auto", "always"):
        for answer in ("always", "never"):
            cards = [ModelCard(**{**c.__dict__, "query_model": option, "answer_model": answer})
                     if c.alias == "shop-assistant" else c for c in shop_cards()]
            hub = ShopHub(cards=cards)
            assistant = AssistantFactory(hub)("acme", "store")
            assert assistant.query_model == option
            reply = assistant.answer([{"role": "user", "content": text}])
            assert leaf.startswith(reply.query["category"])  # read by the rules either way
            assert reply.products and reply.products[0]["title"] in reply.message
            reading[option, answer] = (
                sum(1 for request in hub.requests if request.get("response_format")),
                sum(1 for request in hub.requests if not request.get("response_format")),
                reply.grounding["text_source"],
            )
    assert reading[("auto", "never")] == (0, 0, "template")  # no model call at all
    assert reading[("always", "never")] == (1, 0, "template")
    # The model writes (the canned reply fails the checks: written again, then the template).
    assert reading[("auto", "always")][:2] == (0, 2) and reading[("always", "always")][:2] == (1, 2)
