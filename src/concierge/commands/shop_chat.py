"""`concierge shop chat`: talk to the shopping assistant over a stored catalogue (a thin shell)."""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def _show(answer: Any) -> None:
    console.print(f"[bold cyan]assistant:[/bold cyan] {answer.message}")
    if answer.products:
        table = Table(show_header=True, header_style="bold")
        for column in ("variant", "title", "price", "options", "why"):
            table.add_column(column)
        for p in answer.products:
            options = ", ".join(f"{k} {v}" for k, v in p["options"].items())
            table.add_row(p["id"], p["title"], f"{p['price']:.2f}", options, p["reason"])
        console.print(table)
    alternatives = getattr(answer, "alternatives", None) or []
    if alternatives:
        near = Table(show_header=True, header_style="bold", title="close, but not exact matches")
        for column in ("variant", "title", "price", "options", "misses"):
            near.add_column(column)
        for p in alternatives:
            options = ", ".join(f"{k} {v}" for k, v in p["options"].items())
            near.add_row(p["id"], p["title"], f"{p['price']:.2f}", options, "; ".join(p.get("unmet") or []))
        console.print(near)


def shop_chat(
    catalog: str = typer.Option(..., "--catalog", help="Catalogue name (see `concierge shop ingest`)."),
    tenant: str = typer.Option(..., "--tenant", help="Tenant that owns the catalogue."),
    message: list[str] | None = typer.Option(
        None, "--message", "-m", help="A shopper message; repeat for a multi-turn conversation."
    ),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Chat on the terminal until EOF."),
    shopper_id: str | None = typer.Option(None, "--shopper-id", help="Personalise for this shopper."),
    json: bool = typer.Option(False, "--json", help="Print each answer as one JSON line."),
    config: Path | None = typer.Option(
        None, "--config", help="Deployment config (default: embedded models)."
    ),
    query_model: str | None = typer.Option(
        None, "--query-model",
        help="Use the model to read requests: auto (only when the rules find no certain category), always or "
        "never. Default: the shop alias's query_model (auto).",
    ),
    answer_model: str | None = typer.Option(
        None, "--answer-model",
        help="Let the model write the answer (always) or answer from the checked template (never). "
        "Default: the shop alias's answer_model.",
    ),
) -> None:
    """Ask the shopping assistant; every product shown is checked against the catalogue."""
    from concierge.models.engine import ModelError
    from concierge.models.hub import ModelHub, alias_option
    from concierge.shop.assistant import ShopAssistant, ShopError

    if not message and not interactive:
        _fail("give --message (repeatable) or --interactive")
    if query_model not in (None, "always", "auto", "never"):
        _fail("--query-model must be always, auto or never")
    if answer_model not in (None, "always", "never"):
        _fail("--answer-model must be always or never")
    try:
        hub = ModelHub.from_config(config)
    except (ModelError, ValueError, OSError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
        with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as progress:
            task = progress.add_task("search index (embedding products)", total=None)

            def step(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            alias = hub.deployment.role("shop", "shop-assistant")
            assistant = ShopAssistant.open(
                hub, tenant, catalog, progress=step,
                query_model=query_model or alias_option(hub, alias, "query_model") or "auto",
                answer_model=(answer_model or alias_option(hub, alias, "answer_model")) != "never",
            )
        history: list[dict[str, str]] = []
        state: dict[str, Any] | None = None

        def turn(text: str) -> None:
            nonlocal state
            history.append({"role": "user", "content": text})
            answer = assistant.answer(history, shopper_id=shopper_id, state=state)
            history.append({"role": "assistant", "content": answer.message})
            state = answer.state
            if json:
                print(jsonlib.dumps(answer.to_dict(), ensure_ascii=False, default=str), flush=True)
            else:
                _show(answer)

        for text in message or []:
            turn(text)
        if interactive:
            while True:
                try:
                    text = console.input("[bold green]you:[/bold green] ") if not json else input()
                except (EOFError, KeyboardInterrupt):
                    break
                if text.strip().lower() in ("", "quit", "exit"):
                    break
                turn(text)
    except ShopError as exc:
        _fail(exc.message)
    except ModelError as exc:
        _fail(exc.message)
    finally:
        hub.close()
