"""Shop catalogue: validated all-or-nothing ingest, replace, interactions, demo store, τ² adapter, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from concierge.commands import shop as shop_cli
from concierge.shop import catalog as cat
from concierge.shop.demo_store import LEAVES, generate_demo_store, write_demo_store
from concierge.shop.store_tables import ShopCatalog, ShopInteraction, ShopProduct, ShopVariant
from concierge.store import db
from concierge.store.tables import Tenant


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path / "home"
    db.reset_engines()


def _counts() -> dict[str, int]:
    with db.session_scope() as s:
        return {
            table.__name__: s.scalar(select(func.count()).select_from(table)) or 0
            for table in (Tenant, ShopCatalog, ShopProduct, ShopVariant, ShopInteraction)
        }


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


GOOD = [
    {
        "id": "tee-1",
        "title": "Organic Cotton Tee",
        "description": "A soft everyday tee.",
        "category": " Women >Clothing>  Tops ",
        "brand": "Northwind",
        "currency": "eur",
        "attributes": {"Material": "cotton", "fit": "relaxed", "tags": ["organic", "basics"], "gsm": 180},
        "variants": [
            {"id": "tee-1-s", "options": {"Color": "white", "size": "S"}, "price": 19.5, "stock": 4},
            {"id": "tee-1-m", "options": {"color": "white", "size": "M"}, "price": 21, "stock": 0},
        ],
    },
    {"id": "mug-1", "title": "Stoneware Mug", "price": 12, "category": "Kitchen > Tableware"},
    {"id": 1001, "title": "Gift Card", "price": "25.00", "stock": 10},
]


# --------------------------------------------------------------------------------------------------
# Ingest: good rows


def test_ingest_jsonl_good_rows(tmp_path: Path) -> None:
    report = cat.ingest_catalog(None, "acme", "main", _write_jsonl(tmp_path / "p.jsonl", GOOD))
    assert report.ok and report.written
    assert (report.rows, report.products, report.variants, report.added) == (3, 3, 4, 3)
    catalog = cat.load_catalog(None, "acme", "main")
    assert [p.id for p in catalog] == ["tee-1", "mug-1", "1001"]
    tee = catalog.product("tee-1")
    assert tee.category == "Women > Clothing > Tops" and tee.category_path == ("Women", "Clothing", "Tops")
    assert tee.price == 19.5  # lowest variant price when the product has none
    assert tee.currency == "EUR"
    assert tee.attributes == {
        "material": "cotton",
        "fit": "relaxed",
        "tags": ["organic", "basics"],
        "gsm": "180",
    }
    assert catalog.variant("tee-1-s").options == {"color": "white", "size": "S"}
    assert not catalog.variant("tee-1-m").in_stock and catalog.variant("tee-1-s").in_stock
    # A product without variants is sold as one variant with the product's id, price and stock.
    mug = catalog.variant("mug-1")
    assert (mug.product_id, mug.price, mug.stock, mug.in_stock) == ("mug-1", 12.0, None, True)
    assert catalog.variant("1001").stock == 10
    assert catalog.resolve("tee-1-m")[0].id == "tee-1" and catalog.resolve("tee-1")[1] is None
    assert "tee-1-s" in catalog and "nope" not in catalog
    assert catalog.categories()["Women > Clothing"] == 1
    assert catalog.attribute_values()["color"] == {"white"}
    infos = cat.list_catalogs(None, "acme")
    assert [(i.name, i.products, i.variants) for i in infos] == [("main", 3, 4)]


def test_ingest_csv_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "title", "description", "price", "category", "attributes", "attr_color", "variants"]
        )
        w.writerow(
            [
                "a",
                "Linen Shirt",
                "Line one\nline two",
                "49.9",
                "Men > Shirts",
                '{"material": "linen"}',
                "blue",
                "",
            ]
        )
        w.writerow(
            [
                "b",
                "Boot",
                "",
                "",
                "Men > Shoes",
                "",
                "",
                json.dumps([{"id": "b-42", "options": {"size": 42}, "price": 120}]),
            ]
        )
    report = cat.ingest_catalog(None, "acme", "csv", path)
    assert report.ok, report.rejected
    catalog = cat.load_catalog(None, "acme", "csv")
    assert catalog.product("a").attributes == {"color": "blue", "material": "linen"}
    assert catalog.product("a").description == "Line one\nline two"
    assert catalog.product("b").price == 120 and catalog.variant("b-42").options == {"size": "42"}


def test_catalog_from_records_raises_on_bad_rows() -> None:
    built = cat.Catalog.from_records(GOOD)
    assert len(built) == 3 and built.variant_count == 4
    with pytest.raises(cat.CatalogValidationError) as info:
        cat.Catalog.from_records([*GOOD, {"id": "x", "title": "", "price": 1}])
    assert info.value.rejected[0].line == 4 and "title" in info.value.rejected[0].reason


# --------------------------------------------------------------------------------------------------
# Ingest: rejected rows -> nothing written


def test_rejected_rows_are_all_reported_and_nothing_is_written(tmp_path: Path) -> None:
    rows = [
        GOOD[0],  # 1 ok
        {"id": "p2", "title": "Cheap", "price": -1},  # 2 negative price
        "",  # 3 blank line: skipped, still counted as a line
        {"id": "p4", "price": 3},  # 4 no title
        "{not json",  # 5
        {"id": "tee-1", "title": "Again", "price": 2},  # 6 duplicate product id
        {"id": "p7", "title": "Typo", "price": 2, "stok": 3},  # 7 unknown field
        {"id": "p8", "title": "Var", "variants": [{"id": "tee-1-s", "price": 2}]},  # 8 duplicate variant id
        {
            "id": "p9",
            "title": "Clash",
            "price": 1,
            "variants": [{"id": "tee-1"}],
        },  # 9 variant id = product id
        GOOD[1],  # 10 ok
        {"id": "p11", "title": "No price", "variants": [{"id": "p11-a"}]},  # 11 no price anywhere
        {"id": "p12", "title": "Both", "price": 1, "stock": 2, "variants": [{"id": "p12-a"}]},  # 12
        {"id": "p13", "title": "Cur", "price": 1, "currency": "dollars"},  # 13
        {"id": "p14", "title": "Nested", "price": 1, "attributes": {"dims": {"w": 1}}},  # 14
        [1, 2],  # 15 not an object
        {"id": "p16", "title": "Twice", "price": 1, "variants": [{"id": "p16-a"}, {"id": "p16-a"}]},  # 16
    ]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    report = cat.ingest_catalog(None, "acme", "main", path)
    assert not report.ok and not report.written and report.rows == 15
    by_line = {r.line: r for r in report.rejected}
    assert sorted(by_line) == [2, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16]
    assert "price" in by_line[2].reason and "greater than or equal to 0" in by_line[2].reason
    assert by_line[2].id == "p2"
    assert by_line[4].reason.startswith("title")
    assert "invalid JSON" in by_line[5].reason
    assert "duplicate product id (first on line 1)" in by_line[6].reason
    assert by_line[7].reason.startswith("stok: unknown field")
    assert "duplicate variant id tee-1-s (first on line 1)" in by_line[8].reason
    assert "variant id tee-1 is also the id of the product on line 1" in by_line[9].reason
    assert "price: required" in by_line[11].reason
    assert "stock" in by_line[12].reason
    assert "currency" in by_line[13].reason
    assert by_line[14].reason.startswith("attributes.dims")
    assert by_line[15].reason == "not a JSON object"
    assert by_line[16].reason == "duplicate variant id p16-a (twice in this product)"
    assert "13 of 15 rows rejected" in report.summary()
    assert _counts() == {
        "Tenant": 0,
        "ShopCatalog": 0,
        "ShopProduct": 0,
        "ShopVariant": 0,
        "ShopInteraction": 0,
    }


def test_csv_rejections_report_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "id,title,description,price,variants\n"
        'a,Shirt,"two\nlines",10,\n'  # lines 2-3
        "b,,x,5,\n"  # line 4: no title
        'c,Hat,,x,"[{""id"": 1}"\n'  # line 5: broken JSON cell (id still reported)
        "d,Cap,,abc,\n"  # line 6: price not a number
        "e,Sock,,1,,extra\n",  # line 7: too many cells
        encoding="utf-8",
    )
    report = cat.ingest_catalog(None, "acme", "main", path)
    assert [(r.line, r.id) for r in report.rejected] == [(4, "b"), (5, "c"), (6, "d"), (7, None)]
    assert "variants: invalid JSON" in report.rejected[1].reason
    assert report.rejected[2].reason.startswith("price")
    assert report.rejected[3].reason == "more cells than header columns"
    assert _counts()["ShopProduct"] == 0


def test_csv_unknown_column_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,title,price,sku\na,Shirt,1,X\n", encoding="utf-8")
    with pytest.raises(cat.CatalogError, match="unknown column"):
        cat.ingest_catalog(None, "acme", "main", path)
    with pytest.raises(cat.CatalogError, match="unknown file type"):
        cat.ingest_catalog(None, "acme", "main", _write_jsonl(tmp_path / "p.txt", GOOD))
    with pytest.raises(cat.CatalogError, match="no such file"):
        cat.ingest_catalog(None, "acme", "main", tmp_path / "missing.jsonl")
    with pytest.raises(cat.CatalogError, match="bad catalogue name"):
        cat.ingest_catalog(None, "acme", "../x", GOOD)


def test_rejected_reingest_keeps_the_old_catalogue() -> None:
    cat.ingest_catalog(None, "acme", "main", GOOD)
    before = cat.load_catalog(None, "acme", "main").to_records()
    report = cat.ingest_catalog(None, "acme", "main", [GOOD[0], {"id": "z", "title": "Bad", "price": "free"}])
    assert [r.line for r in report.rejected] == [2]
    assert cat.load_catalog(None, "acme", "main").to_records() == before


def test_ingest_is_part_of_the_callers_transaction() -> None:
    cat.ingest_catalog(None, "acme", "main", GOOD)
    with pytest.raises(RuntimeError), db.session_scope() as s:
        report = cat.ingest_catalog(s, "acme", "main", GOOD[:1])
        assert report.removed == 2
        raise RuntimeError("crash after the ingest, before commit")
    assert len(cat.load_catalog(None, "acme", "main")) == 3


# --------------------------------------------------------------------------------------------------
# Re-ingest replaces


def test_reingest_replaces_atomically_with_counts() -> None:
    v1 = [
        {"id": "a", "title": "A", "price": 1, "variants": [{"id": "a-1"}, {"id": "moving"}]},
        {"id": "b", "title": "B", "price": 2},
        {"id": "c", "title": "C", "price": 3},
    ]
    first = cat.ingest_catalog(None, "acme", "main", v1)
    assert (first.added, first.updated, first.removed, first.unchanged) == (3, 0, 0, 0)
    v2 = [
        {
            "id": "d",
            "title": "D",
            "price": 4,
            "variants": [{"id": "moving", "stock": 1}],
        },  # new, takes a variant id
        {"id": "c", "title": "C", "price": 3},  # unchanged (moved to the front)
        {"id": "b", "title": "B renamed", "price": 2},  # updated
        {"id": "a", "title": "A", "price": 1, "variants": [{"id": "a-1"}]},  # updated (lost a variant)
    ]
    second = cat.ingest_catalog(None, "acme", "main", v2)
    assert (second.added, second.updated, second.removed, second.unchanged) == (1, 2, 0, 1)
    catalog = cat.load_catalog(None, "acme", "main")
    assert [p.id for p in catalog] == ["d", "c", "b", "a"]
    assert catalog.variant("moving").product_id == "d" and catalog.product("b").title == "B renamed"
    third = cat.ingest_catalog(None, "acme", "main", [v2[1]])
    assert (third.added, third.updated, third.removed, third.unchanged) == (0, 0, 3, 1)
    assert _counts()["ShopProduct"] == 1 and _counts()["ShopVariant"] == 1
    # A second tenant's catalogue of the same name is separate.
    cat.ingest_catalog(None, "globex", "main", GOOD)
    assert (
        len(cat.load_catalog(None, "acme", "main")) == 1
        and len(cat.load_catalog(None, "globex", "main")) == 3
    )
    with pytest.raises(cat.CatalogError, match="no catalogue"):
        cat.load_catalog(None, "acme", "other")


# --------------------------------------------------------------------------------------------------
# Parquet


def test_parquet_ingest(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "id": ["a", "b"],
            "title": ["Shirt", "Bag"],
            "price": [10.0, None],
            "attributes": [json.dumps({"color": "red"}), None],
            "variants": [None, [{"id": "b-1", "options": {"color": "tan"}, "price": 30.0, "stock": 2}]],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    report = cat.ingest_catalog(None, "acme", "pq", tmp_path / "p.parquet")
    assert report.ok, report.rejected
    catalog = cat.load_catalog(None, "acme", "pq")
    assert catalog.product("a").attributes == {"color": "red"} and catalog.variant("b-1").options == {
        "color": "tan"
    }


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(cat.CatalogError, match="pip install pyarrow"):
        cat.ingest_catalog(None, "acme", "pq", path)


# --------------------------------------------------------------------------------------------------
# Interactions


def test_interactions_ingest_validate_replace_append(tmp_path: Path) -> None:
    cat.ingest_catalog(None, "acme", "main", GOOD)
    path = tmp_path / "events.csv"
    path.write_text(
        "user,item,event,timestamp\n"
        "u1,tee-1,view,2024-03-01T10:00:00Z\n"
        "u1,tee-1-s,cart,2024-03-01T10:01:00\n"  # naive = UTC
        "u2,mug-1,PURCHASE,1709280000\n",  # epoch seconds (08:00 UTC)
        encoding="utf-8",
    )
    report = cat.ingest_interactions(None, "acme", "main", path)
    assert report.ok and report.inserted == 3
    events = cat.load_interactions(None, "acme", "main")
    assert [(e.user, e.item, e.product_id, e.event) for e in events] == [
        ("u2", "mug-1", "mug-1", "purchase"),
        ("u1", "tee-1", "tee-1", "view"),
        ("u1", "tee-1-s", "tee-1", "cart"),
    ]
    assert events[0].timestamp == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert events[2].timestamp == datetime(2024, 3, 1, 10, 1, tzinfo=UTC)

    bad = [
        {"user": "u3", "item": "tee-1", "event": "view", "timestamp": "2024-03-02T00:00:00Z"},
        {"user": "u3", "item": "ghost", "event": "view", "timestamp": "2024-03-02T00:00:00Z"},
        {"user": "u3", "item": "tee-1", "event": "wishlist", "timestamp": "2024-03-02T00:00:00Z"},
        {"user": "u3", "item": "tee-1", "event": "view", "timestamp": "yesterday"},
        {"user": "", "item": "tee-1", "event": "view", "timestamp": 1},
    ]
    report = cat.ingest_interactions(None, "acme", "main", bad, replace=False)
    assert [r.line for r in report.rejected] == [2, 3, 4, 5] and not report.written
    assert "neither a variant nor a product" in report.rejected[0].reason
    assert report.rejected[1].reason.startswith("event")
    assert report.rejected[2].reason.startswith("timestamp")
    assert len(cat.load_interactions(None, "acme", "main")) == 3

    appended = cat.ingest_interactions(None, "acme", "main", bad[:1], replace=False)
    assert appended.inserted == 1 and len(cat.load_interactions(None, "acme", "main")) == 4
    replaced = cat.ingest_interactions(None, "acme", "main", bad[:1])
    assert replaced.replaced == 4 and len(cat.load_interactions(None, "acme", "main")) == 1
    assert [e.user for e in cat.load_interactions(None, "acme", "main", user="u3")] == ["u3"]

    with db.session_scope() as s:
        live = cat.record_interaction(s, "acme", "main", "u9", "mug-1", "cart")
        assert live.product_id == "mug-1"
        with pytest.raises(cat.CatalogError, match="neither"):
            cat.record_interaction(s, "acme", "main", "u9", "nope", "cart")
        assert cat.count_interactions(s, "acme", "main") == 2
    with pytest.raises(cat.CatalogError, match="no catalogue"):
        cat.ingest_interactions(None, "acme", "nope", bad[:1])


# --------------------------------------------------------------------------------------------------
# Demo store


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_demo_store_is_deterministic_fast_and_shaped() -> None:
    t0 = time.perf_counter()
    products, events = generate_demo_store(seed=7, n_products=3000, n_shoppers=500)
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, f"demo store took {elapsed:.1f}s"  # ~1.5 s alone; the CPU is shared in CI
    again = generate_demo_store(seed=7, n_products=3000, n_shoppers=500)
    assert _digest([products, events]) == _digest(list(again))
    assert _digest(generate_demo_store(seed=8, n_products=200, n_shoppers=20)) != _digest(
        generate_demo_store(seed=7, n_products=200, n_shoppers=20)
    )

    catalog = cat.Catalog.from_records(products)  # every record validates
    assert len(catalog) == 3000 and 3 * 3000 < catalog.variant_count < 12 * 3000
    departments = {p.category_path[0] for p in catalog}
    assert {
        "Women",
        "Men",
        "Bags",
        "Home",
        "Kitchen",
        "Electronics",
        "Beauty",
        "Outdoor",
        "Toys",
    } <= departments
    assert len({p.category for p in catalog}) == len(LEAVES)
    assert len({p.brand for p in catalog}) >= 30
    assert len({p.title for p in catalog}) > 2000  # template-based but varied
    out = sum(not v.in_stock for v in catalog.variants()) / catalog.variant_count
    assert 0.05 < out < 0.25
    colours = Counter(v.options.get("color") for v in catalog.variants())
    assert len(colours) >= 15
    assert all(p.description.count(".") >= 3 for p in catalog.products[:200])

    kinds = Counter(e["event"] for e in events)
    assert kinds["view"] > kinds["cart"] > kinds["purchase"] > 1000
    assert len({e["user"] for e in events}) == 500
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    for e in events:
        product, variant = catalog.resolve(e["item"])
        assert (variant is None) == (e["event"] == "view")
        if e["event"] != "view":
            assert variant is not None and variant.in_stock  # shoppers only cart what is in stock

    # Latent tastes: a shopper's views concentrate on a few categories, far above chance.
    per_user: dict[str, Counter] = defaultdict(Counter)
    for e in events:
        if e["event"] == "view":
            per_user[e["user"]][catalog.resolve(e["item"])[0].category] += 1
    top_share = [max(c.values()) / sum(c.values()) for c in per_user.values() if sum(c.values()) >= 10]
    assert sum(top_share) / len(top_share) > 0.4  # uniform browsing over 36 categories would give ~0.1


def test_demo_store_files_ingest_cleanly(tmp_path: Path) -> None:
    products_path, events_path = write_demo_store(tmp_path / "demo", seed=3, n_products=300, n_shoppers=40)
    assert products_path.name == "products.jsonl" and events_path.name == "interactions.csv"
    report = cat.ingest_catalog(None, "acme", "demo", products_path)
    assert report.ok and report.products == 300
    events = cat.ingest_interactions(None, "acme", "demo", events_path)
    assert events.ok and events.inserted == sum(1 for _ in events_path.open()) - 1


# --------------------------------------------------------------------------------------------------
# τ² adapter


def test_tau2_retail_adapter(shared_data: Path) -> None:
    from concierge.shop.tau2_adapter import load_tau2_retail, tau2_catalog

    retail = shared_data / "tau2" / "retail"
    if not (retail / "db.json").is_file():
        pytest.skip(f"{retail}/db.json not found")
    raw = json.loads((retail / "db.json").read_text())
    products, events = load_tau2_retail(retail)
    catalog = tau2_catalog(retail / "db.json")
    assert len(catalog) == len(raw["products"])
    for pid, product in raw["products"].items():
        mine = catalog.product(pid)
        assert mine.title == product["name"] and mine.category.endswith(f"> {product['name']}")
        assert mine.price == min(v["price"] for v in product["variants"].values())
        for vid, v in product["variants"].items():
            variant = catalog.variant(vid)
            assert variant.price == v["price"] and variant.in_stock == v["available"]
            assert variant.options == {k.lower(): str(x) for k, x in v["options"].items()}
    expected = sum(len(o["items"]) for o in raw["orders"].values() if o["status"] != "cancelled")
    assert len(events) == expected and {e["event"] for e in events} == {"purchase"}
    assert cat.ingest_catalog(None, "acme", "tau2", products).ok
    report = cat.ingest_interactions(None, "acme", "tau2", events)
    assert report.ok and report.inserted == expected


# --------------------------------------------------------------------------------------------------
# CLI


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(shop_cli.app, name="shop")

    @root.command()
    def version() -> None:  # a second command keeps "shop" a group, as in the real CLI
        pass

    return root


def test_cli_ingest_demo_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["shop", "ingest", "--tenant", "acme", "--catalog", "demo"]
    ok = runner.invoke(_cli(), [*args, "--demo", "--products", "150", "--shoppers", "10"])
    assert ok.exit_code == 0, ok.output
    assert "150" in ok.stdout and len(cat.load_catalog(None, "acme", "demo")) == 150

    bad = _write_jsonl(tmp_path / "bad.jsonl", [GOOD[1], {"id": "x", "title": "X", "price": -3}])
    res = runner.invoke(_cli(), [*args, "--file", str(bad)])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == ["error: 1 of 2 rows rejected; nothing written (products)"]
    assert "greater than or equal to 0" in res.stdout and "Traceback" not in res.output
    assert len(cat.load_catalog(None, "acme", "demo")) == 150  # untouched

    for extra in ([], ["--demo", "--file", str(bad)], ["--file", str(tmp_path / "nope.csv")]):
        res = runner.invoke(_cli(), [*args, *extra])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
        assert res.stderr.startswith("error: ")
