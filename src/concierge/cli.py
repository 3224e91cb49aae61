"""The `concierge` command: a thin typer shell over the core packages."""

from __future__ import annotations

import typer

from concierge.commands import budget, gateway, train
from concierge.commands.demo import demo
from concierge.commands.eval_recsys import eval_recsys
from concierge.commands.eval_support import eval_support
from concierge.commands.models import app as models_app
from concierge.commands.report import report
from concierge.commands.shop import app as shop_app
from concierge.commands.shop_chat import shop_chat

app = typer.Typer(
    help="concierge: self-hosted open models, a shopping assistant and a support agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(demo)
app.command()(gateway.serve)
app.command()(gateway.usage)
app.command("budget")(budget.budget)
app.add_typer(gateway.keys_app, name="keys", help="Create, list and revoke API keys.")
app.add_typer(models_app, name="models", help="The model catalogue.")
shop_app.command("chat")(shop_chat)
app.add_typer(shop_app, name="shop", help="Catalogues and the shopping assistant.")

app.add_typer(train.app, name="train", help="Fine-tune in-house models (needs the training extra).")

eval_app = typer.Typer(help="Evaluations: support agent, recommenders.", no_args_is_help=True)
eval_app.command("support")(eval_support)
eval_app.command("recsys")(eval_recsys)
app.add_typer(eval_app, name="eval")
app.command("report")(report)

if __name__ == "__main__":
    app()
