"""The `concierge` command: a thin typer shell over the core packages."""

from __future__ import annotations

import typer

from concierge.commands.demo import demo

app = typer.Typer(
    help="concierge: self-hosted open models, a shopping assistant and a support agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(demo)

if __name__ == "__main__":
    app()
