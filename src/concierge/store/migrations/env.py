"""Alembic environment for concierge, run programmatically by :mod:`concierge.store.migrate`.

No ``alembic.ini``: the config is built in code and the caller passes an open connection in
``config.attributes["connection"]`` (inside its own transaction, holding the migration lock).
``target_metadata`` is every table module's tables (``concierge.store.base.load_tables``), so
autogenerate (``scripts/new_migration.py``) sees the whole schema.
"""

from __future__ import annotations

from alembic import context

from concierge.store.base import load_tables

config = context.config
target_metadata = load_tables()


def _configure(**kwargs) -> None:  # noqa: ANN003
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # Batch mode lets ALTERs that SQLite lacks run as copy-and-move; on PostgreSQL it is plain ALTER.
        render_as_batch=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "concierge migrations run through concierge.store.migrate (a connection is passed in)"
        )
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
