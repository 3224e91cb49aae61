"""CLI for tenant budgets: ``budget TENANT --rpm N --tokens-per-day N`` (0 removes a limit).

A thin shell over :func:`concierge.tenancy.set_budget`; the gateway enforces the budget.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from concierge import tenancy

_out = Console()
_err = Console(stderr=True)


def budget(
    tenant: Annotated[str, typer.Argument(help="Tenant name (as given to 'keys create').")],
    rpm: Annotated[
        int | None, typer.Option("--rpm", help="Requests per minute (0: no limit; omitted: unchanged).")
    ] = None,
    tokens_per_day: Annotated[
        int | None,
        typer.Option("--tokens-per-day", help="Prompt + completion tokens per UTC day (0: no limit)."),
    ] = None,
) -> None:
    """Show or set a tenant's budget; over it, the gateway answers 429 with Retry-After."""
    try:
        if rpm is None and tokens_per_day is None:
            info = tenancy.get_budget(tenant)
        else:
            info = tenancy.set_budget(tenant, rpm=rpm, tokens_per_day=tokens_per_day)
    except tenancy.TenancyError as exc:
        _err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    _out.print(
        f"{info.tenant}: requests per minute {info.requests_per_minute or 'unlimited'}, "
        f"tokens per day {info.tokens_per_day or 'unlimited'}",
        highlight=False,
        markup=False,
    )
