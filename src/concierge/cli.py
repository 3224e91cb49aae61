"""The `concierge` command: a thin typer shell over the core packages.

Every command, the built-in ones included, comes from a plugin's ``register_commands`` hook
(the built-ins are in :mod:`concierge.commands.plugin`); see :mod:`concierge.plugins`. A plugin
that fails to load is reported as one line on stderr (exit status 2), not a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from concierge import plugins


class _App(typer.Typer):
    """The typer app, reporting a broken plugin as one line instead of a traceback."""

    plugin_error: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.plugin_error is not None:
            print(f"error: {self.plugin_error}", file=sys.stderr)
            raise SystemExit(2)
        try:
            return super().__call__(*args, **kwargs)
        except plugins.PluginError as exc:  # a plugin that broke while a command was using it
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


app = _App(
    help="concierge: self-hosted open models, a shopping assistant and a support agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
try:
    plugins.add_commands(app)
except plugins.PluginError as exc:
    app.plugin_error = str(exc)

if __name__ == "__main__":
    app()
