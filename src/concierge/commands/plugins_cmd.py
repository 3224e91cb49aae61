"""``concierge plugins``: every registered plugin (built-in and installed) and what it registers."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from concierge import plugins

_KIND_LABELS = {
    "engines": "engines",
    "domains": "domains",
    "recommenders": "recommenders",
    "chat_formats": "chat formats",
    "commands": "commands",
}


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the plugins (built-ins first, then installed packages) and what each registers, by kind."""
    try:
        listed = plugins.plugin_list()
    except plugins.PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"plugins": listed}, indent=2))
        return
    for item in listed:
        origin = "built-in" if item["builtin"] else " ".join(filter(None, (item["package"], item["version"])))
        typer.echo(f"{item['name']} ({origin or 'registered at run time'})")
        for kind in plugins.KINDS:
            if item[kind]:
                typer.echo(f"  {_KIND_LABELS[kind]}: {', '.join(item[kind])}")
