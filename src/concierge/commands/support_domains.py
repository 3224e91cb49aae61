"""``concierge support domains list`` and ``concierge support domains check DIR``.

Thin shells over :mod:`concierge.support.domains.external`: the built-in domains, the ones plugins
register, the folders ``CONCIERGE_DOMAINS`` names and those of the deployment config's ``support:``
section; ``check`` validates a domain folder (every problem names its file and field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Support desks: the domains (built-in, plugins, folders) and their checks.",
                  no_args_is_help=True)
domains_app = typer.Typer(help="Support domains: list them, check a domain folder.", no_args_is_help=True)
app.add_typer(domains_app, name="domains")
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option(help="Deployment config whose support: section names domain folders "
                                   "(default: CONCIERGE_CONFIG).")
]


def _fail(message: str) -> typer.Exit:
    _err.print(f"error: {message}", markup=False)
    return typer.Exit(2)


def _configure(config: Path | None) -> dict[str, str]:
    """Apply the deployment config's support: section; returns its tenant -> domain map."""
    from concierge import config as cfg
    from concierge.models.deployment import DeploymentError, load_deployment
    from concierge.support.domains.external import configure_from_deployment

    path = config or cfg.deployment_path()
    if path is None:
        return {}
    try:
        return configure_from_deployment(load_deployment(path, include_registry=False)).tenants
    except (DeploymentError, ValueError) as exc:
        raise _fail(str(exc)) from None


@domains_app.command("list")
def list_domains(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per domain, for scripts.")] = False,
) -> None:
    """Every support domain concierge can serve, where it comes from, and the tenants it serves."""
    from concierge import plugins

    tenants = _configure(config)
    try:
        entries = plugins.entries("domains")
    except plugins.PluginError as exc:
        raise _fail(str(exc)) from None
    rows = []
    for name, entry in sorted(entries.items()):
        target = entry.target
        folder = getattr(target, "folder", None) if getattr(target, "external", False) else None
        rows.append({
            "name": name,
            "plugin": entry.plugin,
            "source": f"folder {folder}" if folder is not None else "package",
            "tenants": sorted(t for t, d in tenants.items() if d == name),
        })
    if as_json:
        for row in rows:
            _out.print(json.dumps(row), markup=False)
        return
    for row in rows:
        tenants_text = f"  tenants: {', '.join(row['tenants'])}" if row["tenants"] else ""
        _out.print(f"{row['name']:<20} {row['source']}  ({row['plugin']}){tenants_text}", markup=False)


@domains_app.command("check")
def check(
    folder: Annotated[Path, typer.Argument(help="The domain folder (holding domain.yaml).")],
    connect: Annotated[bool, typer.Option(help="Also start or reach MCP servers and check their tools.")] = False,
) -> None:
    """Check a domain folder: domain.yaml, policy, flows, tasks, connectors and tools."""
    from concierge.support.domains.external import check_domain_dir, close_connectors

    try:
        problems = check_domain_dir(folder, connect=connect)
    finally:
        close_connectors()
    if problems:
        for problem in problems:
            _err.print(f"error: {problem}", markup=False)
        raise typer.Exit(1)
    _out.print(f"{folder}: ok", markup=False)
