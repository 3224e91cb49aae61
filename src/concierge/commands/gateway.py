"""CLI for the gateway: ``serve``, API keys (``keys create|list|revoke``) and ``usage``.

Thin shells over :mod:`concierge.tenancy` and :func:`concierge.server.build_app`.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from concierge import tenancy

keys_app = typer.Typer(help="Create, list and revoke tenant API keys.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)


def _bad(message: str) -> typer.Exit:
    """One clear line on stderr, exit status 2."""
    _err.print(f"error: {message}", highlight=False, markup=False)
    return typer.Exit(2)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to accept outside connections).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    config: Annotated[
        Path | None,
        typer.Option(help="Deployment YAML (default: CONCIERGE_CONFIG, else the embedded default)."),
    ] = None,
    warm_up: Annotated[bool, typer.Option(help="Load chat models at startup (faster first answer).")] = True,
    log_requests: Annotated[bool, typer.Option(help="Keep a redacted log of requests and answers.")] = False,
    metrics_public: Annotated[
        bool, typer.Option(help="Serve /metrics without an operator key (only where the port is private).")
    ] = False,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted, in MiB.")] = 1.0,
    web: Annotated[
        bool, typer.Option(help="Also serve the web app (on the demo store); the shop and support APIs are served either way.")
    ] = True,
    workers: Annotated[
        int,
        typer.Option(help="Gateway processes sharing the port (past one Python process's GIL). Each loads its own "
                          "models; keys, limits, budgets, usage and conversations are shared through the database."),
    ] = 1,
) -> None:
    """Serve the OpenAI-compatible gateway (/v1/...) and the web app (/, /support, /console)."""
    import uvicorn

    from concierge import config as cfg
    from concierge.gateway.settings import GatewaySettings
    from concierge.models.engine import ModelError
    from concierge.models.hub import ModelHub
    from concierge.server import build_app

    if not 0 < port < 65536:
        raise _bad(f"port must be 1-65535, not {port}")
    if max_body_mb <= 0:
        raise _bad("--max-body-mb must be positive")
    if workers < 1:
        raise _bad(f"--workers must be at least 1, not {workers}")
    if workers > 1:
        from sqlalchemy import make_url

        url = cfg.database_url()
        if url.startswith("sqlite") and make_url(url).database in (None, "", ":memory:"):
            raise _bad("--workers needs a database the processes share (a file or a server), not an in-memory SQLite")
    config = config or cfg.deployment_path()
    if config is not None and not config.is_file():
        raise _bad(f"deployment config not found: {config}")
    try:
        hub = ModelHub.from_config(config)
    except (ModelError, ValueError, OSError) as exc:
        raise _bad(f"cannot load deployment {config or '(embedded default)'}: {exc}") from None
    settings = GatewaySettings(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        log_requests=log_requests,
        warm_up=warm_up,
        metrics_public=metrics_public,
    )
    if workers > 1:
        _serve_workers(hub, settings, host=host, port=port, workers=workers, config=config, web=web)
        return
    try:
        app = build_app(hub, settings, web=web)
    except ValueError as exc:  # the deployment's support: section (a domain folder, a tenant's domain)
        hub.close()
        raise _bad(str(exc)) from None
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    _out.print(f"concierge gateway on [bold]http://{shown}:{port}/v1[/bold]")
    for card in hub.models():
        ctx = f", context {card.context_length}" if card.context_length else ""
        _out.print(f"  {card.alias:<20} {card.kind:<11} {card.engine}{ctx}", highlight=False)
    _out.print("Keys: concierge keys create --tenant NAME   (Ctrl+C stops)")
    from concierge.commands import stop_on_sigterm

    restore = stop_on_sigterm()  # uvicorn raises SIGTERM again once shut down: then the finally below runs
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        restore()
        from concierge.server import close_services

        close_services(app)
        hub.close()


def _serve_workers(
    hub: Any, settings: Any, *, host: str, port: int, workers: int, config: Path | None, web: bool
) -> None:
    """``serve --workers N``: check the deployment and prepare the database here, once, then hand over."""
    from concierge import config as cfg
    from concierge.server import build_services, ensure_demo_store, serve_workers
    from concierge.store.db import get_engine

    try:
        build_services(hub)  # the deployment's support: section, checked before any worker starts
        get_engine()  # the schema migrated once, not by N workers at once
        if web:
            tenancy.create_tenant("demo")
            ensure_demo_store("demo", "demo")
    except ValueError as exc:
        raise _bad(str(exc)) from None
    finally:
        hub.close()
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    _out.print(f"concierge gateway on [bold]http://{shown}:{port}/v1[/bold], {workers} worker processes")
    _out.print("Keys: concierge keys create --tenant NAME   (Ctrl+C stops)")
    serve_workers(host, port, workers, config=str(config) if config else None, settings=settings, web=web,
                  run_dir=str(cfg.home() / "run"))


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new).")],
    scope: Annotated[str, typer.Option(help="api (model calls) or operator (also /metrics).")] = "api",
) -> None:
    """Issue a key; it is printed once, alone on the last line."""
    try:
        new = tenancy.create_key(tenant, scope)
    except tenancy.TenancyError as exc:
        raise _bad(str(exc)) from None
    typer.echo(f"Created {new.info.scope} key {new.info.prefix}... (id {new.info.id}) for tenant {tenant!r}.")
    typer.echo("Store it now: only its hash is kept.")
    typer.echo(new.key)


@keys_app.command("list")
def list_keys(tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """Keys with their prefix, scope and state (keys themselves are never shown again)."""
    rows = tenancy.list_keys(tenant)
    if not rows:
        _out.print("No keys." if tenant is None else f"No keys for tenant {tenant!r}.")
        return
    table = Table("id", "tenant", "prefix", "scope", "created", "state")
    for key in rows:
        state = "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(
            str(key.id), key.tenant, key.prefix, key.scope, f"{key.created_at:%Y-%m-%d %H:%M}", state
        )
    _out.print(table)


@keys_app.command("revoke")
def revoke_key(key: Annotated[str, typer.Argument(help="The key, its prefix (ck-...) or its id.")]) -> None:
    """Revoke a key; gateways stop accepting it within about a second."""
    try:
        info = tenancy.revoke_key(key)
    except tenancy.TenancyError as exc:
        raise _bad(str(exc)) from None
    typer.echo(f"Revoked key {info.prefix}... (id {info.id}) of tenant {info.tenant!r}.")


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Calls, errors, tokens and latency per tenant and model."""
    rows = tenancy.usage_summary(tenant)
    if json:
        typer.echo(jsonlib.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        _out.print("No usage recorded yet.")
        return
    table = Table("tenant", "model", "endpoint", "calls", "errors", "tokens in", "tokens out", "avg ms")
    for r in rows:
        table.add_row(
            r.tenant or "-",
            r.model,
            r.endpoint,
            str(r.requests),
            str(r.errors),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            f"{r.avg_latency_ms:.0f}",
        )
    _out.print(table)
