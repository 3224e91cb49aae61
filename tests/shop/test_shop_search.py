"""Hybrid search: hard filters hold on every hit, persistence, incremental updates, more-like-this."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from concierge.shop.catalog import Catalog, Product, Variant
from concierge.shop.demo_store import generate_products
from concierge.shop.search import (
    PROBE_TEXT,
    HashingEmbedder,
    IndexMismatchError,
    SearchFilters,
    SearchIndex,
    index_folder,
    tokenize,
)
from concierge.shop.search import dense as search_mod
from concierge.store import db


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path / "home"
    db.reset_engines()


class SpyEmbedder:
    """The hashing embedder, recording every text it is asked to embed (probe excluded)."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(t for t in texts if t != PROBE_TEXT)
        return self.inner(texts)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_records(generate_products(seed=11, n_products=1500), tenant="acme", name="demo")


@pytest.fixture(scope="module")
def indexes(catalog: Catalog) -> dict[str, SearchIndex]:
    embed = HashingEmbedder()
    return {
        "flat": SearchIndex.build(catalog, embed, kind="flat"),
        "hnsw": SearchIndex.build(catalog, embed, kind="hnsw"),
    }


# --------------------------------------------------------------------------------------------------
# An independent oracle for the hard constraints (written from the spec, not from the index code).


def _values(product: Product, variant: Variant, key: str) -> set[str]:
    if key in variant.options:
        return {variant.options[key].lower()}
    if key == "brand" and "brand" not in product.attributes:
        return {product.brand.lower()}
    value = product.attributes.get(key)
    if value is None:
        return set()
    return {v.lower() for v in (value if isinstance(value, list) else [value])}


def oracle(product: Product, variant: Variant, spec: dict) -> bool:
    if "min" in spec and variant.price < spec["min"]:
        return False
    if "max" in spec and variant.price > spec["max"]:
        return False
    if spec.get("stock") and not (variant.stock is None or variant.stock > 0):
        return False
    if "cats" in spec:
        segs = [s.lower() for s in product.category.split(" > ")]
        if not any(segs[: len(c.split(" > "))] == [s.lower() for s in c.split(" > ")] for c in spec["cats"]):
            return False
    for key, allowed in spec.get("attrs", {}).items():
        if not _values(product, variant, key) & {a.lower() for a in allowed}:
            return False
    for key, banned in spec.get("not_attrs", {}).items():
        if _values(product, variant, key) & {b.lower() for b in banned}:
            return False
    if spec.get("not_terms"):
        attrs = " ".join(
            f"{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in product.attributes.items()
        )
        text = " ".join([product.title, product.description, product.category, product.brand, attrs])
        words = set(tokenize(text)) | set(tokenize(" ".join(variant.options.values())))
        for term in spec["not_terms"]:
            toks = set(tokenize(term))
            if toks and toks <= words:
                return False
    if product.id in spec.get("not_ids", ()) or variant.id in spec.get("not_ids", ()):
        return False
    if "only_ids" in spec and product.id not in spec["only_ids"] and variant.id not in spec["only_ids"]:
        return False
    return True


def _filters(spec: dict) -> SearchFilters:
    return SearchFilters(
        min_price=spec.get("min"),
        max_price=spec.get("max"),
        categories=spec.get("cats", ()),
        attributes=spec.get("attrs", {}),
        in_stock=spec.get("stock", False),
        exclude_attributes=spec.get("not_attrs", {}),
        exclude_terms=spec.get("not_terms", ()),
        exclude_ids=spec.get("not_ids", ()),
        product_ids=spec.get("only_ids"),
    )


ONLY = ["P000010", "P000020", "P000030", "P000040-01", "P000050-02"] + [f"P{i:06d}" for i in range(100, 130)]
CASES: list[tuple[str, dict]] = [
    ("dress", {"max": 50}),
    ("jacket", {"min": 100, "max": 200}),
    ("", {"min": 500}),
    ("sneakers", {"stock": True}),
    ("running sneakers", {"cats": ["Women > Shoes"]}),
    ("canvas", {"cats": ["Women > Shoes > Sneakers"]}),
    ("set", {"cats": ["Kitchen"], "max": 40}),
    ("boots", {"cats": ["women > SHOES"]}),
    ("boots", {"cats": ["Women > Sho"]}),  # segment-wise prefix: matches nothing
    ("gift", {"cats": ["Toys", "Beauty"]}),
    ("shirt", {"attrs": {"color": ["blue", "navy"]}}),
    ("shirt", {"attrs": {"color": ["BLUE"]}}),
    ("bag", {"attrs": {"material": ["leather"]}}),
    ("boot", {"attrs": {"material": ["leather"]}, "cats": ["Men > Shoes"], "stock": True, "max": 200}),
    ("t-shirt", {"attrs": {"size": ["M"], "color": ["black"]}}),
    ("jacket", {"attrs": {"brand": ["Northwind"]}}),
    ("boots", {"not_attrs": {"material": ["leather"]}}),
    ("leather boots", {"not_terms": ["leather"]}),
    ("sneaker", {"not_terms": ["vegan leather"]}),
    ("shirt", {"not_terms": ["cotton", "linen"]}),
    ("sneakers", {"not_attrs": {"color": ["black", "white"]}}),
    ("navy", {"cats": ["Men > Clothing"], "max": 80, "attrs": {"color": ["navy"]}, "stock": True,
              "not_attrs": {"material": ["wool"]}}),
    ("jacket", {"attrs": {"waterproof": ["yes"]}}),
    ("headphones", {"attrs": {"noise cancelling": ["yes"]}}),
    ("mint", {"attrs": {"flavour": ["mint"]}}),  # unknown attribute: nothing matches
    ("shirt", {"attrs": {"color": []}}),  # empty allowed set: nothing matches
    ("lamp", {"not_ids": ["P000001", "P000002", "P000003"]}),
    ("blue", {"only_ids": ONLY}),
    ("", {"only_ids": ONLY, "stock": True}),
    ("mug", {"max": 0}),
    ("sandal", {"min": 24.99, "max": 24.99}),
    ("zzzz qqqq", {"cats": ["Outdoor"]}),  # no lexical match: dense only, still filtered
    ("", {"cats": ["Home > Bedding"], "attrs": {"size": ["King"]}}),
    ("blue", {"attrs": {"color": ["red"]}}),  # the query says blue, the filter says red
    ("plush", {"cats": ["Toys > Plush"], "attrs": {"color": ["pink"], "size": ["small"]}, "stock": True}),
    ("tent", {"cats": ["Outdoor > Camping > Tents"], "attrs": {"capacity": ["2-person"]}, "stock": True, "max": 250}),
    ("serum", {"cats": ["Beauty"], "attrs": {"volume": ["50 ml"]}}),
    ("rain jacket", {"not_terms": ["waterproof"]}),
    ("shirt", {"not_terms": ["a", "the"]}),  # stopword-only terms exclude nothing
    ("bag", {"cats": ["Bags", "Men"], "min": 30, "max": 150, "stock": True, "not_attrs": {"color": ["black"]}}),
    ("sweater", {"attrs": {"gender": ["women"]}}),
    ("sneaker", {"not_attrs": {"brand": ["Stride", "Kinetic"]}}),
    ("bag", {"cats": ["Bags"], "not_terms": ["leather", "suede"]}),
    ("mug", {"min": 20}),
    ("lamp", {"cats": ["Home"], "not_terms": ["brass"], "attrs": {"color": ["black", "white"]}, "max": 150}),
    ("case", {"attrs": {"model": ["Pixel 8"]}, "stock": True, "max": 30}),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["flat", "hnsw", "hnsw-graph"])
@pytest.mark.parametrize("query,spec", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_every_hit_meets_the_hard_constraints(
    indexes: dict[str, SearchIndex],
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    query: str,
    spec: dict,
) -> None:
    if mode == "hnsw-graph":
        # Force the filtered HNSW graph search (and its exact fallback) instead of the small-set scan.
        monkeypatch.setattr(search_mod, "BRUTE_FORCE_MAX", 0)
    index = indexes[mode.split("-")[0]]
    f = _filters(spec)
    k = 20
    hits = index.search(query, f, k=k)
    for hit in hits:
        assert hit.variant in hit.product.variants
        assert oracle(hit.product, hit.variant, spec), (hit.product.id, hit.variant.id)
    assert len({h.product_id for h in hits}) == len(hits)  # one hit per product
    matching = [p for p in catalog if any(oracle(p, v, spec) for v in p.variants)]
    # The masks are exact both ways: same count, and the result fills up when enough products match.
    assert index.count(f) == len(matching)
    assert len(hits) == min(k, len(matching))
    if not query:
        assert [h.product_id for h in hits] == [p.id for p in matching[:k]]


class _BlindGraph:
    """An HNSW stand-in whose graph search finds nothing: the exact fallback must take over."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.storage = real.storage
        self.ntotal = real.ntotal
        self.calls = 0

    def search(self, q: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return np.zeros((1, k), np.float32), np.full((1, k), -1, np.int64)


def test_hnsw_falls_back_to_an_exact_scan(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    index = SearchIndex.build(catalog, HashingEmbedder(), kind="hnsw")
    flat = SearchIndex.build(catalog, HashingEmbedder(), kind="flat")
    monkeypatch.setattr(search_mod, "BRUTE_FORCE_MAX", 0)
    blind = _BlindGraph(index._dense)
    monkeypatch.setattr(index, "_dense", blind)
    spec = {"cats": ["Women"], "stock": True, "max": 120}
    hits = index.search("cotton dress", _filters(spec), k=15)
    assert blind.calls == 1 and len(hits) == 15
    assert all(oracle(h.product, h.variant, spec) for h in hits)
    # The fallback is exact: the dense ranking equals the flat index's.
    q = HashingEmbedder()(["cotton dress"])[0]
    mask = flat._filters.product_mask(flat._filters.variant_mask(_filters(spec)))
    assert [p for p, _ in index._dense_ranked(q, mask, 15)] == [p for p, _ in flat._dense_ranked(q, mask, 15)]


def test_constraint_cases_cover_enough_ground(catalog: Catalog) -> None:
    sizes = [sum(1 for p in catalog if any(oracle(p, v, s) for v in p.variants)) for _, s in CASES]
    assert len(CASES) >= 40
    assert sum(1 for n in sizes if 0 < n < 20) >= 5  # selective filters that leave fewer than k
    assert sum(1 for n in sizes if n == 0) >= 4  # and some that leave nothing
    assert sum(1 for n in sizes if n >= 100) >= 15


def test_variant_choice_and_retrievers(indexes: dict[str, SearchIndex]) -> None:
    index = indexes["flat"]
    hits = index.search("cast iron frying pan", k=5)
    assert hits and "bm25" in hits[0].retrievers and "dense" in hits[0].retrievers
    assert (
        "cast iron" in hits[0].product.title.lower()
        or hits[0].product.attributes.get("material") == "cast iron"
    )
    assert all(h.score > 0 and h.ranks for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # The query names a colour: products offering it return that colour's variant.
    for hit in index.search("red sneaker", k=10):
        colours = {v.options.get("color") for v in hit.product.variants}
        if "red" in colours:
            assert hit.variant.options.get("color") == "red"
    # In stock is preferred when it is not required.
    for hit in index.search("dress", k=20):
        if any(v.in_stock for v in hit.product.variants):
            assert hit.variant.in_stock


def test_filters_matches_agrees_with_the_oracle(catalog: Catalog) -> None:
    for _, spec in CASES:
        f = _filters(spec)
        for product in catalog.products[:300]:
            for variant in product.variants:
                assert f.matches(product, variant) == oracle(product, variant, spec)


def test_persistence_round_trip(catalog: Catalog, home: Path) -> None:
    embed = HashingEmbedder()
    folder = index_folder("acme", "demo")
    assert folder == home / "indexes" / "acme" / "demo"
    built = SearchIndex.build(catalog, embed, folder)
    assert {p.name for p in folder.iterdir()} == {"meta.json", "dense.faiss", "bm25", "catalog.jsonl"}
    loaded = SearchIndex.load(folder, HashingEmbedder())
    queries = [
        ("leather boots", None),
        ("blue shirt", SearchFilters(max_price=60, in_stock=True)),
        ("", None),
    ]
    for query, f in queries:
        a, b = built.search(query, f, k=10), loaded.search(query, f, k=10)
        assert [(h.variant_id, round(h.score, 9), h.retrievers) for h in a] == [
            (h.variant_id, round(h.score, 9), h.retrievers) for h in b
        ]
    assert [h.product_id for h in built.similar("P000005", 5)] == [
        h.product_id for h in loaded.similar("P000005", 5)
    ]
    assert loaded.catalog.to_records() == catalog.to_records()
    with pytest.raises(IndexMismatchError, match="different embedder"):
        SearchIndex.load(folder, HashingEmbedder(dim=256))
    with pytest.raises(IndexMismatchError, match="no search index"):
        SearchIndex.load(home / "nowhere", embed)
    # open(): an unusable index is rebuilt with the embedder given.
    reopened = SearchIndex.open(catalog, HashingEmbedder(dim=128))
    assert reopened.dim == 128 and SearchIndex.load(folder, HashingEmbedder(dim=128)).dim == 128


def _edited(catalog: Catalog) -> tuple[Catalog, dict[str, str]]:
    """A new version: one retitled, one repriced, two removed, two added."""
    products = list(catalog.products)
    retitled = dataclasses.replace(products[0], title="Quokka Expedition Parka")
    first = products[1].variants[0]
    repriced = dataclasses.replace(
        products[1],
        variants=(dataclasses.replace(first, price=first.price + 1000), *products[1].variants[1:]),
    )
    new = []
    for i, source in enumerate(products[10:12]):
        pid = f"NEW{i}"
        variants = tuple(
            dataclasses.replace(v, id=f"{pid}-{j}", product_id=pid) for j, v in enumerate(source.variants)
        )
        new.append(dataclasses.replace(source, id=pid, title=f"Wombat Trail Kit {i}", variants=variants))
    edited = [retitled, repriced, *products[2:5], *products[7:], *new]
    ids = {
        "retitled": retitled.id,
        "repriced": repriced.id,
        "removed": products[5].id,
        "removed2": products[6].id,
        "repriced_variant": first.id,
    }
    return Catalog(edited, tenant=catalog.tenant, name=catalog.name), ids


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_incremental_update_embeds_only_changed_text(catalog: Catalog, tmp_path: Path, kind: str) -> None:
    spy = SpyEmbedder()
    index = SearchIndex.build(catalog, spy, tmp_path / "idx", kind=kind)
    assert len(spy.texts) == len(catalog)
    spy.texts.clear()
    assert index.update(catalog).embedded == 0 and spy.texts == []

    edited, ids = _edited(catalog)
    report = index.update(edited)
    # The price change needs no new vector; the retitled and the two new products do.
    assert (report.added, report.changed, report.removed, report.embedded) == (2, 2, 2, 3)
    assert len(spy.texts) == 3 and sum("Quokka" in t for t in spy.texts) == 1
    assert sum("Wombat" in t for t in spy.texts) == 2
    assert report.compacted == (kind == "flat")  # HNSW appends and tombstones instead

    # A filter small enough for the exact vector scan: the new vector must be found, HNSW or not.
    same_category = SearchFilters(categories=[edited.product(ids["retitled"]).category])
    assert index.search("quokka expedition parka", same_category, k=3)[0].product_id == ids["retitled"]
    assert ids["retitled"] in {h.product_id for h in index.search("quokka expedition parka", k=10)}
    if kind == "flat":
        assert index.search("quokka expedition parka", k=3)[0].product_id == ids["retitled"]
    new_categories = SearchFilters(
        categories=[edited.product("NEW0").category, edited.product("NEW1").category]
    )
    assert {h.product_id for h in index.search("wombat trail kit", new_categories, k=2)} == {"NEW0", "NEW1"}
    everything = index.search("", k=len(edited) + 10)
    assert ids["removed"] not in {h.product_id for h in everything} and len(everything) == len(edited)
    for query in ("parka", "boots", "dress"):
        assert not {ids["removed"], ids["removed2"]} & {h.product_id for h in index.search(query, k=50)}
    # The repriced variant now fails a price filter it used to pass.
    cheap = SearchFilters(product_ids=[ids["repriced_variant"]], max_price=900)
    assert index.count(cheap) == 0

    # Saved after the update: a fresh load sees the same thing, without embedding the catalogue again.
    spy.texts.clear()
    loaded = SearchIndex.load(tmp_path / "idx", spy)
    assert spy.texts == []
    assert [h.variant_id for h in loaded.search("quokka", k=3)] == [
        h.variant_id for h in index.search("quokka", k=3)
    ]
    # load() with a newer catalogue brings it up to date on the way in.
    newer = Catalog([dataclasses.replace(edited.products[2], title="Platypus Lamp"), *edited.products[3:]])
    spy.texts.clear()
    updated = SearchIndex.load(tmp_path / "idx", spy, newer)
    assert len(spy.texts) == 1 and "Platypus" in spy.texts[0]
    assert updated.search("platypus", k=1)[0].product_id == edited.products[2].id


def test_hnsw_compacts_when_many_rows_are_dead(catalog: Catalog) -> None:
    spy = SpyEmbedder()
    index = SearchIndex.build(catalog, spy, kind="hnsw")
    spy.texts.clear()
    half = [dataclasses.replace(p, title=p.title + " Mk II") for p in catalog.products[:600]]
    report = index.update(Catalog(half + catalog.products[600:]))
    assert report.compacted and report.embedded == 600 and len(spy.texts) == 600
    assert index._dense.ntotal == len(catalog)
    assert all(
        h.product.title.endswith("Mk II")
        for h in index.search("mk ii", SearchFilters(categories=["Toys"]), k=5)
    )


def test_similar(indexes: dict[str, SearchIndex], catalog: Catalog) -> None:
    for kind in ("flat", "hnsw"):
        index = indexes[kind]
        source = catalog.products[42]
        hits = index.similar(source.id, k=8)
        assert len(hits) == 8 and source.id not in {h.product_id for h in hits}
        assert all(h.retrievers == ("dense",) for h in hits)
        same = sum(h.product.category == source.category for h in hits)
        assert same >= 4  # the hashing embedder shares words within a category
        by_variant = index.similar(source.variants[0].id, k=8)
        assert [h.product_id for h in by_variant] == [h.product_id for h in hits]
        f = SearchFilters(max_price=60, in_stock=True, categories=["Women"])
        for hit in index.similar(source.id, k=10, filters=f):
            assert (
                hit.variant.price <= 60 and hit.variant.in_stock and hit.product.category.startswith("Women")
            )
    with pytest.raises(KeyError):
        indexes["flat"].similar("no-such-id")


def test_hashing_embedder() -> None:
    embed = HashingEmbedder()
    vecs = embed(["blue cotton shirt", "blue cotton shirt", "cast iron pan", ""])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0) and not vecs[3].any()
    assert np.array_equal(vecs[0], vecs[1]) and np.array_equal(
        vecs[0], HashingEmbedder()(["blue cotton shirt"])[0]
    )
    assert float(vecs[0] @ embed(["navy cotton shirts"])[0]) > float(vecs[0] @ vecs[2])
    assert tokenize("The Sneakers, dresses & batteries!") == ["sneaker", "dress", "battery"]


def test_empty_and_tiny_catalogues() -> None:
    embed = HashingEmbedder()
    tiny = Catalog.from_records([{"id": "a", "title": "Red Mug", "price": 5}])
    index = SearchIndex.build(tiny, embed)
    assert [h.variant_id for h in index.search("mug", k=5)] == ["a"]
    assert index.search("mug", SearchFilters(min_price=6)) == []
    assert index.similar("a", k=3) == []
    assert index.search("mug", k=0) == []


def test_open_from_the_database_updates_incrementally(home: Path) -> None:
    from concierge.shop.catalog import ingest_catalog, load_catalog

    records = generate_products(seed=5, n_products=300)
    assert ingest_catalog(None, "acme", "shop", records).ok
    spy = SpyEmbedder()
    first = SearchIndex.open(load_catalog(None, "acme", "shop"), spy)
    assert first.folder == home / "indexes" / "acme" / "shop" and len(spy.texts) == 300
    records[3] = {**records[3], "title": "Capybara Lounge Chair"}
    report = ingest_catalog(None, "acme", "shop", records[:-1])
    assert (report.updated, report.removed) == (1, 1)
    spy.texts.clear()
    again = SearchIndex.open(load_catalog(None, "acme", "shop"), spy)
    assert len(spy.texts) == 1 and "Capybara" in spy.texts[0]
    assert again.search("capybara", k=1)[0].product_id == records[3]["id"]
    assert len(again.products) == 299
