"""Schema migrations with Alembic, run in code: at start-up (:func:`concierge.store.db.get_engine`)
and by ``concierge db upgrade``.

The Alembic environment ships in the package (``concierge/store/migrations``: ``env.py``,
``script.py.mako``, ``versions/``); no ``alembic.ini`` is read. :func:`upgrade` brings a database to
the newest revision under a lock, so processes that start together against one database wait for
each other instead of racing (PostgreSQL: a transaction-scoped advisory lock; SQLite: ``BEGIN
IMMEDIATE``, the database file's write lock). Three starting points:

* **empty** (none of concierge's tables): ``create_all`` from the models, then stamp ``head``. This
  is the fast path every fresh home takes (a test suite makes hundreds); ``tests/store/test_migrations.py``
  checks that the revisions run one by one give the same schema as the models.
* **made by a release before migrations** (concierge's tables, no ``alembic_version``): adopted at
  the baseline revision (its existing tables are checked column by column and kept with their rows;
  only missing tables are created), then upgraded to ``head``. Nothing is dropped or re-created.
* **versioned**: nothing to do at ``head`` (one query); otherwise the pending revisions run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

from concierge.store.base import load_tables

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
SQLITE_LOCK_WAIT_S = 120.0

_RAN = "concierge.migrations_ran"  # set in connection.info when revisions ran (then check foreign keys)
_process_lock = threading.Lock()
_script: ScriptDirectory | None = None


class MigrationError(RuntimeError):
    """The database cannot be brought to this release's schema (it is left as it was)."""


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None  # revision before (None: no alembic_version)
    after: str | None
    action: str  # "created" | "adopted" | "upgraded" | "current"


def alembic_config(connection: Connection | None = None, **attributes: object) -> Config:
    """An Alembic config for the packaged environment; ``connection`` is what env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes.update(attributes)
    return cfg


def script_directory() -> ScriptDirectory:
    global _script
    if _script is None:
        _script = ScriptDirectory.from_config(alembic_config())
    return _script


def head() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise MigrationError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    """The revision in ``alembic_version`` (None where the table is missing or empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    """Take the database-wide migration lock for the connection's transaction (released at commit)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The write lock on the file; busy_timeout waits, this loop outlasts long migrations elsewhere.
        deadline = time.monotonic() + SQLITE_LOCK_WAIT_S
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                connection.rollback()
                time.sleep(0.1)
    elif dialect == "postgresql":
        # One key per schema: deployments sharing a database in separate schemas do not wait on each other.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('concierge.migrate:' || current_schema()))")
        )
    # Other dialects (not supported): one transaction and no lock, so simultaneous first starts may race.


def _known_tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) & set(load_tables().tables)


def _upgrade_locked(connection: Connection, revision: str) -> UpgradeResult:
    script = script_directory()
    target = head() if revision == "head" else revision
    before = current_revision(connection)
    if before is not None:
        try:
            script.get_revision(before)
        except CommandError as exc:
            raise MigrationError(
                f"the database is at revision {before!r}, which this release does not know "
                "(made by a newer release?); upgrade concierge or restore a matching backup"
            ) from exc
        if before == target:
            return UpgradeResult(before, before, "current")
    adopt = False
    if before is None:
        if not _known_tables(connection):
            if revision == "head":
                # Fast path for a fresh database: the models are the head schema.
                load_tables().create_all(connection)
                MigrationContext.configure(connection).stamp(script, target)
                return UpgradeResult(None, target, "created")
        else:
            adopt = True
    connection.info[_RAN] = True
    try:
        command.upgrade(alembic_config(connection, adopt=adopt), revision)
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    return UpgradeResult(before, current_revision(connection), "adopted" if adopt else "upgraded")


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction holding the migration lock; committed if the block succeeds.

    SQLite and PostgreSQL both have transactional DDL, so a failing revision leaves the database as
    it was. On SQLite, foreign keys are off while revisions run (batch operations rebuild a table by
    drop-and-rename, which enforcement would refuse or cascade) and ``PRAGMA foreign_key_check``
    must come back clean before the commit, as SQLite's procedure for schema changes prescribes.
    """
    sqlite = engine.dialect.name == "sqlite"
    with _process_lock, engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
            connection.commit()
        try:
            _lock(connection)
            try:
                yield connection
                if sqlite and connection.info.pop(_RAN, False):
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise MigrationError(
                            f"the migration leaves rows with dangling foreign keys: {broken[:5]}"
                        )
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        finally:
            connection.info.pop(_RAN, None)
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def upgrade(engine: Engine, revision: str = "head") -> UpgradeResult:
    """Bring the database to ``revision`` (default: the newest), under the migration lock.

    A database already at ``head`` is recognised with one read, without the lock (a replica that
    restarts does not queue behind the others' writes); anything else is re-checked under the lock.
    """
    if revision == "head":
        try:
            with engine.connect() as connection:
                before = current_revision(connection)
        except OperationalError:  # e.g. SQLite busy while another process creates the file: wait below
            before = None
        if before is not None and before == head():
            return UpgradeResult(before, before, "current")
    with _migrating(engine) as connection:
        return _upgrade_locked(connection, revision)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Step the database back to ``revision`` (``"base"``: no tables), under the migration lock."""
    with _migrating(engine) as connection:
        connection.info[_RAN] = True
        try:
            command.downgrade(alembic_config(connection), revision)
        except CommandError as exc:
            raise MigrationError(str(exc)) from exc
        return current_revision(connection)


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def diff(engine: Engine) -> list:
    """What differs between the database and the models (alembic's compare_metadata; [] when equal)."""
    metadata = load_tables()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [d for d in compare_metadata(context, metadata) if not _is_version_table(d)]


def _is_version_table(difference: object) -> bool:
    return (
        isinstance(difference, tuple)
        and len(difference) > 1
        and getattr(difference[1], "name", None) == "alembic_version"
    )
