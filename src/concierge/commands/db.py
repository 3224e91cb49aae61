"""``concierge db``: the database schema (``upgrade``, ``current``, ``check``).

Every process already upgrades its database when it first opens it; these commands let an operator
do it ahead of a deployment, see where a database stands, and check it against the models.
Register on the CLI with ``app.add_typer(db.app, name="db")``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="The database schema: upgrade, current revision, check.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)

Url = Annotated[
    str | None,
    typer.Option(help="Database URL (default: CONCIERGE_DATABASE_URL, else CONCIERGE_HOME/concierge.db)."),
]


def _engine(url: str | None):  # noqa: ANN202
    from concierge import config
    from concierge.store import db

    return db.make_engine(url or config.database_url())


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: Url = None,
) -> None:
    """Bring the database to the newest schema (or REVISION); a database from an older release is adopted."""
    from concierge.store import migrate

    engine = _engine(url)
    try:
        result = migrate.upgrade(engine, revision)
    except migrate.MigrationError as exc:
        _err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if result.action == "current":
        _out.print(f"up to date: {result.after}", highlight=False, markup=False)
    else:
        _out.print(
            f"{result.action}: {result.before or 'none'} -> {result.after}", highlight=False, markup=False
        )


@app.command()
def current(url: Url = None) -> None:
    """The database's revision and this release's newest one."""
    from concierge.store import migrate

    engine = _engine(url)
    try:
        revision = migrate.current(engine)
    finally:
        engine.dispose()
    head = migrate.head()
    state = "up to date" if revision == head else "needs `concierge db upgrade`"
    _out.print(f"database: {revision or 'none'}  head: {head}  ({state})", highlight=False, markup=False)


@app.command()
def check(url: Url = None) -> None:
    """Compare the database with the models; exit 1 and list the differences if they differ."""
    from concierge.store import migrate

    engine = _engine(url)
    try:
        differences = migrate.diff(engine)
    finally:
        engine.dispose()
    if differences:
        for difference in differences:
            _out.print(repr(difference), highlight=False, markup=False)
        raise typer.Exit(1)
    _out.print("the database matches the models", highlight=False, markup=False)
