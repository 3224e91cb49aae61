"""The built-in CLI commands, registered through the plugin door like any company's own.

The command modules are imported inside the hook: a plugin module stays cheap to import (the
registry imports every plugin on first use of any kind), and only the CLI pays for typer apps.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from concierge.plugins import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    import typer

    from concierge.commands import budget, gateway, train
    from concierge.commands.demo import demo
    from concierge.commands.eval_recsys import eval_recsys
    from concierge.commands.eval_support import eval_support
    from concierge.commands.models import app as models_app
    from concierge.commands.plugins_cmd import plugins_command
    from concierge.commands.report import report
    from concierge.commands.shop import app as shop_app
    from concierge.commands.shop_chat import shop_chat

    cli.command()(demo)
    cli.command()(gateway.serve)
    cli.command()(gateway.usage)
    cli.command("budget")(budget.budget)
    cli.add_typer(gateway.keys_app, name="keys", help="Create, list and revoke API keys.")
    cli.add_typer(models_app, name="models", help="The model catalogue.")
    if not any(info.callback is shop_chat for info in shop_app.registered_commands):  # once per process
        shop_app.command("chat")(shop_chat)
    cli.add_typer(shop_app, name="shop", help="Catalogues and the shopping assistant.")

    cli.add_typer(train.app, name="train", help="Fine-tune in-house models (needs the training extra).")

    eval_app = typer.Typer(help="Evaluations: support agent, recommenders.", no_args_is_help=True)
    eval_app.command("support")(eval_support)
    eval_app.command("recsys")(eval_recsys)
    cli.add_typer(eval_app, name="eval")
    cli.command("report")(report)
    from concierge.commands.support_domains import app as support_app

    cli.add_typer(support_app, name="support")
    cli.command("plugins")(plugins_command)

    # `concierge db ...` (migrations) lives in its own module; registered once that module exists.
    if importlib.util.find_spec("concierge.commands.db") is not None:
        from concierge.commands import db

        cli.add_typer(db.app, name="db")
