"""Catalogue feeds as stores have them: a Shopify product export and a Google Merchant Center feed
(TSV and XML), written by hand in tests/data/feeds/, ingested, searched, rejected row by row, and
re-ingested incrementally (only the changed product re-embedded, counted on the real MiniLM
embedder)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from concierge.commands import shop as shop_cli
from concierge.shop import catalog as cat
from concierge.shop.search import SearchFilters, SearchIndex, index_folder
from concierge.store import db

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"
SHOPIFY = FEEDS / "shopify_products.csv"
MERCHANT_TSV = FEEDS / "merchant_feed.tsv"
MERCHANT_XML = FEEDS / "merchant_feed.xml"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path / "home"
    db.reset_engines()


class CountingEmbedder:
    """The real all-MiniLM-L6-v2 ONNX embedder, counting the texts it is asked to embed."""

    _engine = None

    def __init__(self) -> None:
        from concierge.models import locate
        from concierge.models.embeddings import OnnxEmbeddingEngine
        from concierge.shop.search import PROBE_TEXT

        if CountingEmbedder._engine is None:
            CountingEmbedder._engine = OnnxEmbeddingEngine(locate.minilm_onnx(), locate.minilm_tokenizer())
        self.probe = PROBE_TEXT
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(t for t in texts if t != self.probe)  # the probe checks the embedder, per load
        return self._engine.embed_array(list(texts))


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    try:
        return CountingEmbedder()
    except Exception as exc:  # noqa: BLE001  (the model data packages are part of the default install)
        pytest.skip(f"all-MiniLM-L6-v2 is not installed: {exc}")


def _ingest(path: Path, catalog: str = "feed", **kw) -> cat.IngestReport:
    report = cat.ingest_catalog(None, "acme", catalog, path, **kw)
    assert report.ok, report.rejected
    return report


# ---------------------------------------------------------------------------------------------
# Shopify
# ---------------------------------------------------------------------------------------------
def test_shopify_export_maps_handles_to_products_and_option_columns_to_variants() -> None:
    report = _ingest(SHOPIFY, currency="eur")
    # 11 data rows, 5 handles: 4 active products (rows counts a feed's products); the draft one is
    # not for sale, and the image-only row is no variant.
    assert (report.rows, report.products, report.variants) == (4, 4, 9)
    catalog = cat.load_catalog(None, "acme", "feed")
    assert [p.id for p in catalog.products] == [
        "merino-crew-tee", "trail-runner-gtx", "ceramic-pour-over", "waxed-canvas-tote",
    ]
    tee = catalog.product("merino-crew-tee")
    assert tee.title == "Merino Crew Tee" and tee.brand == "Ridgeline" and tee.currency == "EUR"
    assert tee.category_path == ("Apparel & Accessories", "Clothing", "Shirts & Tops")
    assert "<" not in tee.description and "lightweight merino wool t-shirt" in tee.description
    assert tee.attributes["tags"] == ["merino", "hiking", "base layer"]
    assert tee.attributes["color"] == ["navy", "charcoal"]  # the color-pattern metafield column
    assert tee.image_url.endswith("tee-navy.jpg")
    assert [(v.id, v.options, v.price, v.stock) for v in tee.variants] == [
        ("RL-TEE-NVY-S", {"color": "Navy", "size": "S"}, 58.0, 12),
        ("RL-TEE-NVY-M", {"color": "Navy", "size": "M"}, 58.0, 7),
        ("RL-TEE-CHR-M", {"color": "Charcoal", "size": "M"}, 62.0, 0),
    ]
    assert tee.price == 58.0  # the lowest variant price
    shoe = catalog.product("trail-runner-gtx")
    assert [v.stock for v in shoe.variants] == [3, 0, 0]  # Shopify's oversold -2 means none left
    # "Title / Default Title": no options, one variant sold under its SKU.
    dripper = catalog.product("ceramic-pour-over")
    assert [(v.id, v.options, v.stock) for v in dripper.variants] == [("KC-CPO-01", {}, 25)]
    assert catalog.get_variant("KC-CPO-01").product_id == "ceramic-pour-over"
    # Inventory policy "continue" (and no tracker): sold when out of stock, so stock is not tracked.
    tote = catalog.product("waxed-canvas-tote")
    assert [v.stock for v in tote.variants] == [None, None] and tote.in_stock
    assert catalog.get_product("prototype-headlamp") is None


def test_shopify_catalogue_is_searched_with_its_variants(embedder: CountingEmbedder) -> None:
    _ingest(SHOPIFY)
    index = SearchIndex.build(cat.load_catalog(None, "acme", "feed"), embedder)
    assert index.search("merino wool t-shirt for hiking", k=1)[0].product_id == "merino-crew-tee"
    shoes = index.search("waterproof trail running shoes", k=1)
    assert shoes[0].product_id == "trail-runner-gtx"
    # Size 10 is sold out: the in-stock filter leaves the size 9 only, never the empty size 10.
    in_stock = SearchFilters(in_stock=True, attributes={"size": {"9", "10"}})
    hits = index.search("trail running shoes", in_stock, k=5)
    assert [(h.product_id, h.variant_id) for h in hits] == [("trail-runner-gtx", "RL-TRG-9")]
    # A named option value picks that variant of the product.
    charcoal = index.search("charcoal merino tee", k=1)[0]
    assert charcoal.variant_id == "RL-TEE-CHR-M"


def _rewrite(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    edit(header, body)
    with dst.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *body])
    return dst


def _lines_of(path: Path) -> dict[str, int]:
    """The physical line each row starts on (Body (HTML) cells span lines), by its Variant SKU."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        sku = header.index("Variant SKU")
        out, start = {}, 2
        for row in reader:
            out[row[sku] or f"row@{start}"] = start
            start = reader.line_num + 1
    return out


def test_shopify_bad_rows_are_rejected_with_line_and_column_and_nothing_is_written(tmp_path: Path) -> None:
    _ingest(SHOPIFY)
    before = [p.to_record() for p in cat.load_catalog(None, "acme", "feed").products]

    def edit(header: list[str], body: list[list[str]]) -> None:
        price, qty, title = header.index("Variant Price"), header.index("Variant Inventory Qty"), header.index("Title")
        body[1][price] = "58,00 EUR"  # RL-TEE-NVY-M: a variant row, not the product's first row
        body[6][qty] = "lots"  # RL-TRG-11
        body[7][title] = ""  # ceramic-pour-over: the first row of its handle lost its title

    bad = _rewrite(SHOPIFY, tmp_path / "export.csv", edit)
    lines = _lines_of(bad)
    report = cat.ingest_catalog(None, "acme", "feed", bad)
    assert not report.ok and not report.written
    assert [(r.line, r.id) for r in report.rejected] == [
        (lines["RL-TEE-NVY-M"], "merino-crew-tee"),
        (lines["RL-TRG-11"], "trail-runner-gtx"),
        (lines["KC-CPO-01"], "ceramic-pour-over"),
    ]
    reasons = [r.reason for r in report.rejected]
    assert reasons[0].startswith("Variant Price: '58,00 EUR'")
    assert reasons[1].startswith("Variant Inventory Qty: 'lots'")
    assert reasons[2].startswith("Title: required")
    # All or nothing: the catalogue is exactly as the good ingest left it.
    assert [p.to_record() for p in cat.load_catalog(None, "acme", "feed").products] == before


# ---------------------------------------------------------------------------------------------
# Google Merchant Center
# ---------------------------------------------------------------------------------------------
def test_merchant_tsv_and_xml_give_the_same_catalogue_grouped_by_item_group_id() -> None:
    _ingest(MERCHANT_TSV, "tsv")
    _ingest(MERCHANT_XML, "xml")
    tsv, xml = cat.load_catalog(None, "acme", "tsv"), cat.load_catalog(None, "acme", "xml")
    assert [p.content_hash for p in tsv.products] == [p.content_hash for p in xml.products]
    jacket = xml.product("NW-RJ")
    assert jacket.title == "Northwind Rain Jacket"  # the words the variants' titles share
    assert jacket.category == "Apparel > Outerwear > Rain Jackets"
    assert jacket.description == "Packable 2.5-layer waterproof rain jacket with pit zips."
    assert [(v.id, v.options["color"], v.options["size"], v.price, v.in_stock) for v in jacket.variants] == [
        ("NW-RJ-BLU-M", "Blue", "M", 129.0, True),
        ("NW-RJ-BLU-L", "Blue", "L", 129.0, False),  # out_of_stock
        ("NW-RJ-RED-M", "Red", "M", 99.0, True),  # sale_price, no effective dates: always
    ]
    assert jacket.variants[0].options["material"] == "Recycled nylon"
    skillet = xml.product("NW-SKIL-10")  # no group: a product of its own, its fields attributes
    assert skillet.price == 39.95 and skillet.attributes["material"] == "Cast iron"
    assert [v.id for v in skillet.variants] == ["NW-SKIL-10"]
    assert "google_product_category" not in skillet.attributes  # a bare taxonomy number says nothing
    assert not xml.product("NW-KETTLE").in_stock  # preorder: not in stock now
    assert xml.product("NW-LAMP-01").in_stock  # "in stock" (the spaced form) as in_stock


def test_merchant_feed_is_searched(embedder: CountingEmbedder) -> None:
    _ingest(MERCHANT_XML)
    index = SearchIndex.build(cat.load_catalog(None, "acme", "feed"), embedder)
    red = index.search("red rain jacket", SearchFilters(in_stock=True), k=1)[0]
    assert (red.product_id, red.variant_id) == ("NW-RJ", "NW-RJ-RED-M")
    assert index.search("skillet for searing steak", k=1)[0].product_id == "NW-SKIL-10"
    lantern = index.search("camping light", SearchFilters(in_stock=True, max_price=30), k=3)
    assert [h.product_id for h in lantern] == ["NW-LAMP-01"]


def test_merchant_bad_items_are_rejected_with_line_and_field(tmp_path: Path) -> None:
    lines = MERCHANT_TSV.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    rows[1][header.index("price")] = "cheap"  # line 3: a jacket variant
    rows[3][header.index("id")] = ""  # line 5: the skillet lost its id
    rows[4][header.index("availability")] = "soon"  # line 6: the kettle
    bad = tmp_path / "feed.tsv"
    bad.write_text("\n".join(["\t".join(header), *("\t".join(r) for r in rows)]) + "\n", encoding="utf-8")
    report = cat.ingest_catalog(None, "acme", "feed", bad)
    assert not report.written
    assert [(r.line, r.id, r.reason.split(":")[0]) for r in report.rejected] == [
        (3, "NW-RJ-BLU-L", "price"),
        (5, None, "id"),
        (6, "NW-KETTLE", "availability"),
    ]
    assert cat.list_catalogs(None, "acme") == []

    xml = MERCHANT_XML.read_text(encoding="utf-8").replace(
        "<g:price>39.95 USD</g:price>", "<g:price>39.95 dollars</g:price>"
    )
    (tmp_path / "feed.xml").write_text(xml, encoding="utf-8")
    item_line = next(
        i for i, line in enumerate(xml.splitlines(), 1) if line == "<item>"
        and "NW-SKIL-10" in xml.splitlines()[i]
    )
    report = cat.ingest_catalog(None, "acme", "feed", tmp_path / "feed.xml")
    assert [(r.line, r.id) for r in report.rejected] == [(item_line, "NW-SKIL-10")]
    assert report.rejected[0].reason.startswith("price: '39.95 dollars'")


def test_xml_with_entities_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "feed.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]>'
        '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>&a;</g:id></item></channel></rss>',
        encoding="utf-8",
    )
    with pytest.raises(cat.CatalogError, match="refused XML"):
        cat.ingest_catalog(None, "acme", "feed", bomb)


# ---------------------------------------------------------------------------------------------
# Re-ingest: incremental in the catalogue and its index
# ---------------------------------------------------------------------------------------------
def test_reingesting_a_feed_with_one_product_changed_re_embeds_only_that_product(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    from concierge.shop.assistant import ShopAssistant
    from helpers.hubs import ShopHub

    feed = tmp_path / "feed.xml"
    shutil.copy(MERCHANT_XML, feed)
    _ingest(feed)
    embedder.texts.clear()
    first = ShopAssistant.open(ShopHub(), "acme", "feed", embed=embedder)
    assert len(embedder.texts) == 4  # the first open embeds every product once
    assert (index_folder("acme", "feed") / "dense.faiss").is_file()

    # The store renames the lantern and drops the skillet's price; the rest of the feed is unchanged.
    text = feed.read_text(encoding="utf-8")
    text = text.replace("Rechargeable Camping Lantern", "Rechargeable Camping Lantern with Power Bank")
    text = text.replace("<g:price>39.95 USD</g:price>", "<g:price>34.95 USD</g:price>")
    feed.write_text(text, encoding="utf-8")
    report = _ingest(feed)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 2, 0, 2)

    embedder.texts.clear()
    second = ShopAssistant.open(ShopHub(), "acme", "feed", embed=embedder)
    # The price change is searchable data but not embedded text: only the renamed lantern is embedded.
    assert len(embedder.texts) == 1 and embedder.texts[0].startswith("Rechargeable Camping Lantern with Power Bank")
    assert second.catalog.product("NW-SKIL-10").price == 34.95
    assert second.index.search("lantern with power bank", k=1)[0].product_id == "NW-LAMP-01"
    # The new price is in the index's filters without any embedding.
    under_36 = SearchFilters(max_price=36)
    assert "NW-SKIL-10" in {h.product_id for h in second.index.search("cast iron skillet", under_36, k=5)}
    assert "NW-SKIL-10" not in {h.product_id for h in first.index.search("cast iron skillet", under_36, k=5)}

    # A new product and a removed one: one more embedding, the removed one is gone from search.
    text = text.replace("<g:id>NW-KETTLE</g:id>", "<g:id>NW-KETTLE-2</g:id>")
    feed.write_text(text, encoding="utf-8")
    report = _ingest(feed)
    assert (report.added, report.removed) == (1, 1)
    embedder.texts.clear()
    third = ShopAssistant.open(ShopHub(), "acme", "feed", embed=embedder)
    assert len(embedder.texts) == 1
    assert {h.product_id for h in third.index.search("gooseneck kettle", k=5)} >= {"NW-KETTLE-2"}
    assert "NW-KETTLE" not in {h.product_id for h in third.index.search("gooseneck kettle", k=5)}


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(shop_cli.app, name="shop")
    return root


def test_cli_ingests_a_feed_and_reports_rejected_rows(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(_cli(), ["shop", "ingest", "--tenant", "acme", "--catalog", "feed", "--file", str(SHOPIFY)])
    assert ok.exit_code == 0, ok.output
    assert "4" in ok.output and cat.list_catalogs(None, "acme")[0].products == 4
    bad = tmp_path / "feed.tsv"
    bad.write_text(MERCHANT_TSV.read_text(encoding="utf-8").replace("129.00 USD", "free", 1), encoding="utf-8")
    failed = runner.invoke(
        _cli(), ["shop", "ingest", "--tenant", "acme", "--catalog", "feed", "--file", str(bad), "--format", "merchant"]
    )
    assert failed.exit_code == 2
    assert "price: 'free' is not a price" in failed.output and "nothing written" in failed.output
    assert "Traceback" not in failed.output
    assert cat.list_catalogs(None, "acme")[0].products == 4


def _wait(factory) -> None:  # noqa: ANN001
    thread = factory.refreshing("acme", "feed")
    if thread is not None:
        thread.join(30)


def test_a_running_shop_picks_up_a_reingested_feed_without_a_restart(tmp_path: Path) -> None:
    from concierge.shop.session import AssistantFactory
    from helpers.hubs import ShopHub

    feed = tmp_path / "feed.tsv"
    shutil.copy(MERCHANT_TSV, feed)
    _ingest(feed)
    factory = AssistantFactory(ShopHub(), refresh_every=0)
    before = factory("acme", "feed")
    _wait(factory)
    assert factory("acme", "feed") is before  # nothing changed: the same assistant keeps serving

    feed.write_text(
        feed.read_text(encoding="utf-8").replace("Gooseneck Pour-Over Kettle", "Gooseneck Electric Kettle"),
        encoding="utf-8",
    )
    _ingest(feed)
    served = factory("acme", "feed")  # this request starts the check and is served by the old one
    assert served is before
    _wait(factory)
    after = factory("acme", "feed")
    assert after is not before
    assert after.catalog.product("NW-KETTLE").title == "Gooseneck Electric Kettle"
    assert after.index.search("electric kettle", k=1)[0].product_id == "NW-KETTLE"
    assert before.catalog.product("NW-KETTLE").title == "Gooseneck Pour-Over Kettle"


def test_merchant_atom_feed_and_a_sale_outside_its_dates(tmp_path: Path) -> None:
    feed = tmp_path / "feed.atom"
    feed.write_text(
        """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
  <title>Northwind</title>
  <entry>
    <g:id>NW-MUG</g:id>
    <title>Enamel Camp Mug</title>
    <summary>A 350 ml enamel mug for the campfire.</summary>
    <link href="https://northwind.example/products/mug"/>
    <g:price>12.00 EUR</g:price>
    <g:sale_price>9.00 EUR</g:sale_price>
    <g:sale_price_effective_date>2020-01-01T00:00+0000/2020-01-31T23:59+0000</g:sale_price_effective_date>
    <g:availability>in_stock</g:availability>
  </entry>
  <entry>
    <g:id>NW-SPORK</g:id>
    <title>Titanium Spork</title>
    <g:price>8.50 EUR</g:price>
    <g:sale_price>6.00 EUR</g:sale_price>
    <g:availability>out_of_stock</g:availability>
  </entry>
</feed>
""",
        encoding="utf-8",
    )
    _ingest(feed)
    catalog = cat.load_catalog(None, "acme", "feed")
    mug, spork = catalog.product("NW-MUG"), catalog.product("NW-SPORK")
    assert (mug.title, mug.description, mug.currency) == ("Enamel Camp Mug", "A 350 ml enamel mug for the campfire.", "EUR")
    assert mug.price == 12.0  # the sale ended in 2020
    assert spork.price == 6.0 and not spork.in_stock  # a sale without dates always holds
