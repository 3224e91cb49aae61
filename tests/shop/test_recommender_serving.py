"""The in-house SASRec served live: ONNX export, torch-free scoring, fallbacks, swap while serving, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from concierge.commands import shop as shop_cli
from concierge.shop.catalog import Catalog
from concierge.shop.demo_store import generate_demo_store
from concierge.shop.personalize import Personalizer
from concierge.shop.recommend import torch_available
from concierge.shop.recommend.base import Interactions, Split, leave_last_out
from concierge.shop.recommend.baselines import ItemKNN
from concierge.shop.recommend.blend import Blend, Ensemble, standardise
from concierge.shop.recommend.serving import ModelSlot, OnnxSASRec

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden": 16, "blocks": 1, "heads": 2, "max_len": 12, "epochs": 2, "batch_size": 64, "threads": 1}
needs_torch = pytest.mark.skipif(not torch_available(), reason="torch (training extra) not installed")


class _Store:
    def __init__(self, seed: int = 3) -> None:
        products, interactions = generate_demo_store(seed=seed, n_products=120, n_shoppers=60)
        self.catalog = Catalog.from_records(products, tenant="acme", name="tiny")
        # One product nobody has touched yet: in the catalogue, not in a model trained on these interactions.
        self.unseen = products[-1]["id"]
        self.products = products
        self.interactions = [r for r in interactions if self.catalog.resolve(r["item"])[0].id != self.unseen]

    def product_rows(self, extra: list[dict[str, Any]] | None = None) -> list[tuple[str, str, float]]:
        """(shopper, product id, unix time) per interaction, as the trainer reads the store."""
        out = []
        for row in [*self.interactions, *(extra or [])]:
            product, _ = self.catalog.resolve(row["item"])
            ts = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((row["user"], product.id, ts))
        return out


@pytest.fixture(scope="module")
def store() -> _Store:
    return _Store()


def _fit(store: _Store, seed: int = 0) -> tuple[Blend, Split]:
    split = leave_last_out(Interactions.from_records(store.product_rows()))
    from concierge.shop.recommend.sasrec import SASRec

    model = Blend(
        Ensemble([SASRec(seed=seed + k, **TINY) for k in range(2)]), ItemKNN(half_life=5.0), weights=(0.2,)
    )
    model.fit(split)
    return model, split


@pytest.fixture(scope="module")
def trained(store: _Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not torch_available():
        pytest.skip("torch (training extra) not installed")
    from concierge.shop.recommend.export import export_onnx

    folder = tmp_path_factory.mktemp("served")
    out: dict[str, Any] = {"folder": folder}
    for seed in (0, 10):
        model, split = _fit(store, seed)
        path = folder / f"model-{seed}.onnx"
        export_onnx(model, path, [str(i) for i in split.item_index])
        out[seed] = (model, split, path)
    return out


def _full_split(store: _Store, items: np.ndarray) -> Split:
    """Every shopper's whole product sequence as training data (what the shop fits co-occurrence on)."""
    seqs: dict[str, list[tuple[float, str]]] = {}
    for user, pid, ts in store.product_rows():
        seqs.setdefault(user, []).append((ts, pid))
    pos = {pid: i for i, pid in enumerate(items)}
    users = sorted(seqs)
    train = [
        np.asarray(list(dict.fromkeys(pos[p] for _, p in sorted(seqs[u]))), dtype=np.int64) for u in users
    ]
    none = np.full(len(users), -1, dtype=np.int64)
    return Split(np.asarray(users), items, train, none, none.copy())


@pytest.mark.train
def test_onnx_scores_equal_the_evaluated_torch_model(trained: dict[str, Any]) -> None:
    model, split, path = trained[0]
    served = OnnxSASRec(path)
    assert served.info.items == tuple(str(i) for i in split.item_index) and served.info.weight == 0.2
    users = split.eval_users("test")
    # Histories shorter and longer than max_len (12), as the evaluation feeds them.
    histories = split.histories("test", users)
    assert min(map(len, histories)) < 12 < max(map(len, histories))
    import torch

    member = model.base.members[1]
    with torch.no_grad():
        for history in histories[:5]:
            ref = member.score([history])[0]
            np.testing.assert_allclose(served.member_scores(history)[1], ref, rtol=1e-4, atol=1e-4)
    # The whole blend: ONNX ensemble in place of the torch one, the same co-occurrence helper and weight.
    serving = Blend(served, model.helper, weights=(served.info.weight,))
    serving.weight = served.info.weight
    np.testing.assert_allclose(serving.score(histories), model.score(histories), rtol=1e-4, atol=1e-4)


@pytest.mark.train
def test_personalizer_serves_the_blend_with_fallbacks(store: _Store, trained: dict[str, Any]) -> None:
    model, split, path = trained[0]
    shop = Personalizer(store.catalog, store.interactions, served=ModelSlot(path), known_shoppers=["new"])
    assert shop.items == [str(i) for i in split.item_index]  # same vocabulary here
    # Evaluation's blend over the shop's data: the trained ensemble + ItemKNN on every shopper's sequence.
    helper = ItemKNN(half_life=5.0)
    full = _full_split(store, split.item_index)
    helper.fit(full)
    expected = Blend(model.base, helper, weights=(0.2,))
    expected.weight = 0.2
    for u in range(0, full.n_users, 7):
        got = shop.scores(str(full.user_index[u]))
        assert got is not None
        np.testing.assert_allclose(got, expected.score([full.train[u]])[0], rtol=1e-4, atol=1e-4)
    assert shop.scores("new") is None  # a shopper without history: the search / popularity order stands

    # A product the model never saw (added after training), viewed with one the model knows.
    new_pid = store.unseen
    assert new_pid not in shop.items
    known_pid = shop.items[0]
    extra = [
        {"user": "late", "item": known_pid, "event": "view", "timestamp": "2025-01-01T00:00:00Z"},
        {"user": "late", "item": new_pid, "event": "view", "timestamp": "2025-01-01T00:01:00Z"},
        {"user": "late2", "item": new_pid, "event": "cart", "timestamp": "2025-01-01T00:02:00Z"},
    ]
    grown = Personalizer(store.catalog, [*store.interactions, *extra], served=ModelSlot(path))
    plain = Personalizer(
        store.catalog, [*store.interactions, *extra], model=ItemKNN(half_life=5.0), served=None
    )
    co_only = standardise(plain.scores("late2")[None])[0]  # type: ignore[index]
    # Only unseen products in the history: co-occurrence alone.
    np.testing.assert_allclose(grown.scores("late2"), co_only, rtol=1e-5, atol=1e-5)
    # A known history: the new product's co-occurrence z-score stands in for the model's score.
    row = grown.scores("late")
    co = standardise(plain.scores("late")[None])[0]  # type: ignore[index]
    j = grown.items.index(new_pid)
    assert row is not None and row[j] == pytest.approx(1.2 * co[j], abs=1e-5)
    k = grown.items.index(shop.items[3])
    assert row[k] != pytest.approx(1.2 * co[k], abs=1e-3)  # known products carry the model's part


_NO_TORCH = """
import importlib.abc, json, sys
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            tried.append(name)
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
from concierge.shop.catalog import Catalog
from concierge.shop.personalize import Personalizer
from concierge.shop.recommend.serving import ModelSlot
data = json.load(open(sys.argv[3]))
shop = Personalizer(Catalog.from_records(data["products"]), data["interactions"], served=ModelSlot(sys.argv[1]))
assert shop.served.current() is not None
row = shop.scores(sys.argv[2])
print(json.dumps({"tried": tried, "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
                  "row": [float(x) for x in row]}))
"""


@pytest.mark.train
def test_serving_runs_without_torch(store: _Store, trained: dict[str, Any], tmp_path: Path) -> None:
    _, _, path = trained[0]
    data = tmp_path / "store.json"
    data.write_text(json.dumps({"products": store.products, "interactions": store.interactions}))
    shop = Personalizer(store.catalog, store.interactions, served=ModelSlot(path))
    user = "U00020"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(path), user, str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tried"] == [] and out["loaded"] == []
    np.testing.assert_allclose(out["row"], shop.scores(user), rtol=1e-5, atol=1e-5)


@pytest.mark.train
def test_a_new_model_file_is_swapped_in_while_serving(store: _Store, trained: dict[str, Any]) -> None:
    import shutil

    live = trained["folder"] / "live.onnx"
    shutil.copy(trained[0][2], live)
    shop = Personalizer(store.catalog, store.interactions, served=ModelSlot(live))
    users = ["U00020", "U00001", "U00033"]
    before = {u: shop.scores(u) for u in users}
    after_expected = {
        u: Personalizer(store.catalog, store.interactions, served=ModelSlot(trained[10][2])).scores(u)
        for u in users
    }
    assert not np.allclose(before[users[0]], after_expected[users[0]], atol=1e-3)
    errors: list[BaseException] = []
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for u in users:
                try:
                    row = shop.scores(u)
                    assert row is not None
                    if np.allclose(row, before[u], atol=1e-5):
                        seen.append("old")
                    elif np.allclose(row, after_expected[u], atol=1e-5):
                        seen.append("new")
                    else:
                        seen.append("mixed")
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    # What the trainer does: a temporary file beside the live one, then os.replace.
    tmp = live.with_name(".live.onnx.tmp")
    shutil.copy(trained[10][2], tmp)
    os.replace(tmp, live)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and seen[-3:] != ["new"] * 3:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and "mixed" not in seen
    assert seen[0] == "old" and seen[-1] == "new"
    # A broken file does not take serving down: the last good model stays.
    bad = live.with_name(".bad.tmp")
    bad.write_bytes(b"not an onnx model")
    os.replace(bad, live)
    np.testing.assert_allclose(shop.scores(users[0]), after_expected[users[0]], atol=1e-5)


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(shop_cli.app, name="shop")

    @root.command()
    def version() -> None:  # a second command keeps "shop" a group, as in the real CLI
        pass

    return root


def test_train_recommender_without_torch_is_one_line(isolated_home: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from concierge.cli import app\n"
        "app(['shop', 'train-recommender', '--tenant', 'acme', '--catalog', 'tiny'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CONCIERGE_HOME": str(isolated_home)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: SASRec needs torch, which is in the training extra: pip install 'concierge[train]'"
    ]


@pytest.mark.train
@needs_torch
def test_cli_refits_from_stored_interactions_and_the_shop_picks_it_up(isolated_home: Path) -> None:
    runner = CliRunner()
    args = ["--tenant", "acme", "--catalog", "tiny"]
    res = runner.invoke(_cli(), ["shop", "train-recommender", *args])
    assert (
        res.exit_code == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    )
    ok = runner.invoke(_cli(), ["shop", "ingest", *args, "--demo", "--products", "120", "--shoppers", "60"])
    assert ok.exit_code == 0, ok.output
    from concierge.shop.catalog import load_catalog

    shop = Personalizer.from_store(load_catalog(None, "acme", "tiny"))
    assert shop.served is not None and shop.served.current() is None  # nothing trained yet
    user = sorted(shop.known)[0]
    co_only = shop.scores(user)
    res = runner.invoke(_cli(), ["shop", "train-recommender", *args, "--epochs", "1", "--members", "1"])
    assert res.exit_code == 0, res.output
    served = shop.served.current()
    assert served is not None and served.info.extra["interactions"] == len(shop_interactions())
    assert served.path == isolated_home / "recommenders" / "acme" / "tiny" / "sasrec.onnx"
    assert served.path.stat().st_mode & 0o044  # readable by a server running as another user
    assert [p.name for p in served.path.parent.iterdir()] == ["sasrec.onnx"]  # no temporary left behind
    row = shop.scores(user)  # the running Personalizer, not rebuilt
    assert row is not None and co_only is not None and not np.allclose(row, co_only)


def shop_interactions() -> list[Any]:
    from concierge.shop.catalog import load_interactions

    return load_interactions(None, "acme", "tiny")
