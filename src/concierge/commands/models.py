"""``concierge models``: browse the model catalogue and check a deployment config."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from concierge.models.catalogue import CatalogueEntry, close_matches, filter_entries, load_catalogue
from concierge.models.deployment import DeploymentError, load_deployment

app = typer.Typer(help="The model catalogue and deployment checks.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit 2 (bad input never shows a traceback)."""
    typer.echo(message, err=True)  # plain echo: rich would wrap the line
    raise typer.Exit(2)


def _params(value: float) -> str:
    if value >= 1:
        return f"{value:g}B"
    return f"{value * 1000:g}M"


def _ctx(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:g}M"
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else f"{tokens / 1000:g}k"


@app.command("list")
def list_models(
    origin: str | None = typer.Option(None, "--origin", help="Country code of the lab, e.g. CN or US."),
    family: str | None = typer.Option(None, "--family", help="Model family, e.g. qwen3, llama3, glm."),
    kind: str | None = typer.Option(None, "--kind", help="chat or embeddings."),
) -> None:
    """List catalogue models (id, parameters, context, licence, origin, engine)."""
    entries = list(load_catalogue().values())
    if kind and kind.lower() not in ("chat", "embeddings"):
        _fail(f"unknown kind {kind!r}: use chat or embeddings")
    if family and not filter_entries(entries, family=family):
        families = sorted({e.family for e in entries})
        _fail(f"no model in family {family!r}; families: {', '.join(families)}")
    if origin and not filter_entries(entries, origin=origin):
        countries = sorted({e.origin.country for e in entries})
        _fail(f"no model from {origin!r}; origins: {', '.join(countries)}")
    rows = filter_entries(entries, origin=origin, family=family, kind=kind)
    table = Table(title=f"Model catalogue ({len(rows)} models)")
    for column in ("id", "params", "active", "ctx", "licence", "origin", "engine"):
        table.add_column(column, no_wrap=column in ("id", "params", "active", "ctx"))
    for e in rows:
        table.add_row(
            e.id,
            _params(e.parameters_total_b),
            _params(e.parameters_active_b) if e.is_moe else "-",
            _ctx(e.context_length),
            e.licence,
            f"{e.origin.country} ({e.origin.lab})",
            e.recommended_engine,
        )
    Console().print(table)


def _show(entry: CatalogueEntry) -> None:
    table = Table(show_header=False, title=entry.id)
    table.add_column("field", style="bold")
    table.add_column("value")
    data = entry.as_dict()
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                table.add_row(f"{key}.{sub}", "" if subvalue is None else str(subvalue))
        else:
            table.add_row(key, "-" if value in (None, "") else str(value))
    if entry.gguf:
        table.add_row("download", entry.gguf.download_hint("./models"))
    Console().print(table)


@app.command("show")
def show(model_id: str = typer.Argument(..., help="Catalogue id, e.g. qwen3-4b.")) -> None:
    """Every field of one catalogue entry."""
    catalogue = load_catalogue()
    entry = catalogue.get(model_id.strip().lower())
    if entry is None:
        hint = close_matches(model_id, list(catalogue))
        suffix = f"; did you mean {', '.join(hint)}?" if hint else "; see `concierge models list`"
        _fail(f"unknown model {model_id!r}{suffix}")
    _show(entry)


@app.command("check")
def check(
    config: Path | None = typer.Argument(None, help="Deployment file (default: the embedded default)."),
) -> None:
    """Validate a deployment config and check that its local model files exist."""
    try:
        deployment = load_deployment(config)
    except DeploymentError as exc:
        _fail(str(exc))
    console = Console()
    table = Table(title=f"Deployment {deployment.path}")
    for column in ("alias", "kind", "model", "source", "in-house"):
        table.add_column(column)
    for spec in deployment.aliases.values():
        table.add_row(
            spec.alias, spec.kind, spec.model or "-", spec.source_label, "yes" if spec.in_house else ""
        )
    console.print(table)
    for warning in deployment.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    problems = deployment.check_files()
    if problems:
        _fail(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    console.print("ok: configuration valid and local files present")
