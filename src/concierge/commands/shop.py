"""`concierge shop ...`: catalogue commands (thin shells over :mod:`concierge.shop`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Shop catalogues: ingest products and shopper interactions.", no_args_is_help=True)
console = Console()
MAX_REJECTED_SHOWN = 50


class _Rejected(Exception):
    """Raised inside the transaction so nothing of a failed ingest is committed."""

    def __init__(self, what: str, report: object) -> None:
        self.what = what
        self.report = report


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def _show_rejected(what: str, rejected: list) -> None:
    table = Table(title=f"Rejected {what} rows", show_lines=False)
    table.add_column("line", justify="right")
    table.add_column("id")
    table.add_column("reason")
    for row in rejected[:MAX_REJECTED_SHOWN]:
        table.add_row(str(row.line), row.id or "", row.reason)
    console.print(table)
    if len(rejected) > MAX_REJECTED_SHOWN:
        console.print(f"... and {len(rejected) - MAX_REJECTED_SHOWN} more")


@app.command()
def ingest(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name (created if missing)."),
    catalog: str = typer.Option(..., "--catalog", help="Catalogue name; re-ingesting replaces it."),
    file: Path | None = typer.Option(
        None, "--file",
        help="Products file: the catalogue's own .csv, .jsonl or .parquet, a Shopify product export (.csv) "
        "or a Google Merchant Center feed (.tsv or .xml).",
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="Format of --file: auto (from the extension and header), catalog, shopify, merchant."
    ),
    currency: str = typer.Option("USD", "--currency", help="Currency of a feed that carries none (Shopify)."),
    interactions: Path | None = typer.Option(
        None, "--interactions", help="Interactions file (user,item,event,timestamp), with --file."
    ),
    tau2_retail: Path | None = typer.Option(
        None, "--tau2-retail", help="τ²-bench retail folder or its db.json."
    ),
    demo: bool = typer.Option(False, "--demo", help="Generate and ingest the demo store."),
    seed: int = typer.Option(7, help="Demo store seed."),
    products: int = typer.Option(3000, min=1, help="Demo store product count."),
    shoppers: int = typer.Option(500, min=0, help="Demo store shopper count."),
) -> None:
    """Validate and ingest a catalogue (and its interactions) in one all-or-nothing transaction."""
    from concierge.shop.catalog import CatalogError, ingest_catalog, ingest_interactions
    from concierge.store.db import session_scope

    sources = [x for x in (file is not None, tau2_retail is not None, demo) if x]
    if len(sources) != 1:
        _fail("give exactly one of --file, --tau2-retail or --demo")
    if interactions is not None and file is None:
        _fail("--interactions goes with --file")
    if fmt not in ("auto", "catalog", "shopify", "merchant"):
        _fail(f"--format must be auto, catalog, shopify or merchant, not {fmt!r}")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            label: str
            if demo:
                from concierge.shop.demo_store import generate_demo_store

                task = progress.add_task(f"generating demo store ({products} products, {shoppers} shoppers)")
                product_src, event_src = generate_demo_store(
                    seed=seed, n_products=products, n_shoppers=shoppers
                )
                progress.remove_task(task)
                label = f"demo(seed={seed}, products={products}, shoppers={shoppers})"
            elif tau2_retail is not None:
                from concierge.shop.tau2_adapter import load_tau2_retail, resolve_db_path

                product_src, event_src = load_tau2_retail(tau2_retail)
                label = str(resolve_db_path(tau2_retail))
            else:
                product_src, event_src = file, interactions
                label = str(file)
            with session_scope() as session:
                task = progress.add_task("validating and writing products")
                report = ingest_catalog(
                    session, tenant, catalog, product_src, source_label=label, fmt=fmt, currency=currency
                )
                progress.remove_task(task)
                if not report.ok:
                    raise _Rejected("product", report)
                event_report = None
                if event_src is not None:
                    task = progress.add_task("validating and writing interactions")
                    event_report = ingest_interactions(
                        session, tenant, catalog, event_src, source_label=label
                    )
                    progress.remove_task(task)
                    if not event_report.ok:
                        raise _Rejected("interaction", event_report)
    except _Rejected as exc:
        _show_rejected(exc.what, exc.report.rejected)  # type: ignore[attr-defined]
        _fail(f"{exc.report.summary()} ({exc.what}s)")  # type: ignore[attr-defined]
    except CatalogError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot read input: {exc}")

    table = Table(title=f"Catalogue {tenant}/{catalog}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in (
        ("products", report.products),
        ("variants", report.variants),
        ("added", report.added),
        ("updated", report.updated),
        ("removed", report.removed),
        ("unchanged", report.unchanged),
    ):
        table.add_row(name, str(value))
    if event_report is not None:
        table.add_row("interactions", str(event_report.inserted))
        table.add_row("interactions replaced", str(event_report.replaced))
    console.print(table)


@app.command("train-recommender")
def train_recommender(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name."),
    catalog: str = typer.Option(..., "--catalog", help="Catalogue whose stored interactions to train on."),
    members: int = typer.Option(2, min=1, help="SASRec models in the ensemble (the evaluated default is 2)."),
    epochs: int = typer.Option(
        200, min=1, help="Most epochs per SASRec; early stopping on validation decides."
    ),
    seed: int = typer.Option(0, help="Seed of the first SASRec (the others take the next ones)."),
) -> None:
    """Refit the in-house SASRec recommender and swap it in; running servers pick it up without a restart."""
    from concierge.shop.catalog import CatalogError
    from concierge.shop.personalize import train_recommender as refit
    from concierge.shop.recommend import torch_available
    from concierge.shop.recommend.sasrec import TORCH_MISSING

    if not torch_available():
        _fail(TORCH_MISSING)
    columns = (TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            summary = refit(tenant, catalog, members=members, epochs=epochs, seed=seed, progress=progress)
    except (CatalogError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    table = Table(title=f"Recommender {tenant}/{catalog}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name in ("interactions", "shoppers", "items", "weight", "valid_NDCG@10", "trained_at", "path"):
        table.add_row(name, str(summary[name]))
    console.print(table)
