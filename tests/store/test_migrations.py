"""Schema migrations (concierge.store.migrate): fresh databases, revisions one by one, a database
from the last release before migrations (with rows), concurrent starts, and ``concierge db``.

Runs on SQLite and, under ``-p postgres_plugin``, on PostgreSQL (each home gets its own schema).
The revisions are walked from the script directory, so a future revision is exercised here
without a change to this file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from concierge import config
from concierge.commands import db as db_cli
from concierge.store import db, migrate
from concierge.store.base import load_tables
from helpers.paths import FIXTURES, ROOT  # noqa: E402


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    yield tmp_path
    db.reset_engines()


@pytest.fixture
def url(home: Path) -> str:
    """The test's own empty database (SQLite file, or a fresh schema under the postgres plugin)."""
    return config.database_url()


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    """An engine on the empty database that has not been upgraded (no get_engine)."""
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def _dialect(engine: sa.Engine) -> str:
    return engine.dialect.name


def _load_release_fixture(engine: sa.Engine) -> None:
    """Load the dump of a database made by the last release before migrations (schema + rows)."""
    if _dialect(engine) == "sqlite":  # as `sqlite3 concierge.db < dump.sql` would
        script = (FIXTURES / "release-0.1.0.sqlite.sql").read_text()
        with sqlite3.connect(engine.url.database) as conn:
            conn.executescript(script)
        return
    script = (FIXTURES / "release-0.1.0.postgresql.sql").read_text()
    script = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with engine.begin() as conn:
        for statement in re.split(r";\s*\n", script):
            if statement.strip():
                conn.exec_driver_sql(statement)


def _fixture_rows() -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (FIXTURES / "release-0.1.0.sqlite.sql").read_text().splitlines():
        match = re.match(r'INSERT INTO "(\w+)"', line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def _schema(engine: sa.Engine) -> dict:
    """Tables, columns, keys, indexes and unique constraints as reflected (alembic_version left out)."""
    inspector = sa.inspect(engine)
    schema = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        schema[table] = {
            # Sorted: a column a revision adds comes last, create_all puts it where the model has it.
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("autoincrement"))
                for c in inspector.get_columns(table)
            ),
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    (fk.get("options") or {}).get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
            ),
        }
    return schema


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(migrate.script_directory().walk_revisions()))]


def test_fresh_database_is_created_at_head_and_matches_the_models(url: str) -> None:
    engine = db.get_engine(url)
    assert migrate.current(engine) == migrate.head()
    assert migrate.diff(engine) == []
    assert set(load_tables().tables) <= set(sa.inspect(engine).get_table_names())
    # A second start is a no-op.
    assert migrate.upgrade(engine).action == "current"


def test_revisions_run_one_by_one_give_the_models_schema(engine: sa.Engine, tmp_path: Path) -> None:
    """The slow path (every revision in turn) ends where the fast path (create_all + stamp) starts."""
    for revision in _revisions():
        result = migrate.upgrade(engine, revision)
        assert result.after == revision
    assert migrate.current(engine) == migrate.head()
    assert migrate.diff(engine) == []
    # ... and reflects to the same schema as create_all from the models.
    other = db.make_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
    if _dialect(engine) == "sqlite":
        load_tables().create_all(other)
        assert _schema(engine) == _schema(other)
    other.dispose()


def test_each_revision_downgrades_and_upgrades_again(engine: sa.Engine) -> None:
    """Down one revision at a time to an empty database, then up again one at a time."""
    revisions = _revisions()
    migrate.upgrade(engine)
    for revision in [*reversed(revisions[:-1]), "base"]:
        assert migrate.downgrade(engine, revision) == (None if revision == "base" else revision)
    assert not set(load_tables().tables) & set(sa.inspect(engine).get_table_names())
    for revision in revisions:
        assert migrate.upgrade(engine, revision).after == revision
    assert migrate.diff(engine) == []


def test_baseline_is_exactly_the_last_release_schema(engine: sa.Engine, url: str, tmp_path: Path) -> None:
    _load_release_fixture(engine)
    release = _schema(engine)
    assert set(release) == {t.name for t in migrate_baseline().metadata.sorted_tables}
    if _dialect(engine) == "sqlite":
        fresh = db.make_engine(f"sqlite:///{tmp_path / 'baseline.db'}")
    else:
        fresh = db.make_engine(_other_schema_url(url, "baseline"))
    try:
        migrate.upgrade(fresh, migrate.BASELINE)
        assert _schema(fresh) == release
        if _dialect(engine) == "sqlite":
            assert _sqlite_ddl(fresh) == _sqlite_ddl(engine)
    finally:
        fresh.dispose()


def test_a_last_release_database_with_rows_is_adopted_and_upgraded(engine: sa.Engine, url: str) -> None:
    _load_release_fixture(engine)
    before = _counts(engine)
    assert before == _fixture_rows()
    assert migrate.current(engine) is None

    live = db.get_engine(url)  # what a start of the new release does
    assert migrate.current(live) == migrate.head()
    assert migrate.diff(live) == []
    after = _counts(live)
    assert {table: after[table] for table in before} == before
    with live.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM tenants ORDER BY id")).scalars().all() == [
            "acme",
            "globex",
        ]
        state = conn.execute(sa.text("SELECT state FROM conversations WHERE id = 'conv-1'")).scalar_one()
        assert (json.loads(state) if isinstance(state, str) else state) == {"domain": "retail", "turn": 2}
    # The application works on it: a new tenant and key get fresh ids (sequences carried over).
    from concierge import tenancy

    new = tenancy.create_key("initech")
    assert new.info.tenant == "initech"
    assert tenancy.authenticate(new.key) is not None
    with live.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM tenants WHERE name = 'initech'")).scalar_one() == 3


def test_adoption_creates_tables_the_old_database_lacked(engine: sa.Engine) -> None:
    _load_release_fixture(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE domain_records"))
        conn.execute(sa.text("DROP TABLE tenant_budgets"))
    result = migrate.upgrade(engine)
    assert result.action == "adopted" and result.before is None and result.after == migrate.head()
    assert migrate.diff(engine) == []
    assert _counts(engine)["tenants"] == 2


def test_adoption_refuses_a_database_that_does_not_match(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tenants (id INTEGER PRIMARY KEY, title VARCHAR(10))"))
        conn.execute(sa.text("INSERT INTO tenants (id, title) VALUES (1, 'kept')"))
    with pytest.raises(migrate.MigrationError, match="tenants lacks column.*name"):
        migrate.upgrade(engine)
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == {"tenants"}  # nothing created, nothing dropped
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT title FROM tenants")).scalar_one() == "kept"


def test_a_database_from_a_newer_release_is_refused(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(migrate.MigrationError, match="newer release"):
        migrate.upgrade(engine)


_FUTURE_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    # On SQLite the type change rebuilds tenants (copy, drop, rename) under rows that reference it.
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("test_only_note", sa.String(200), nullable=True))
        batch.alter_column("name", type_=sa.String(200), existing_type=sa.String(100), existing_nullable=False)
    op.execute("UPDATE tenants SET test_only_note = 'migrated ' || name")


def downgrade():
    with op.batch_alter_table("tenants") as batch:
        batch.alter_column("name", type_=sa.String(100), existing_type=sa.String(200), existing_nullable=False)
        batch.drop_column("test_only_note")
"""


def test_a_new_revision_runs_on_a_last_release_database(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real schema change (a test-only revision on top of head) on the last release's rows."""
    import shutil

    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9001_future.py").write_text(_FUTURE_REVISION.format(down=migrate.head()))
    monkeypatch.setattr(migrate, "MIGRATIONS", scripts)
    monkeypatch.setattr(migrate, "_script", None)
    assert migrate.head() == "9001"

    _load_release_fixture(engine)
    before = _counts(engine)
    result = migrate.upgrade(engine)
    assert (result.action, result.before, result.after) == ("adopted", None, "9001")
    after = _counts(engine)
    assert {t: after[t] for t in before} == before  # every row of the last release survives
    assert all(after[t] == 0 for t in after.keys() - before.keys())  # tables added by later revisions
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name, test_only_note FROM tenants ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "acme", "migrated acme"), (2, "globex", "migrated globex")]
        keys = conn.execute(sa.text("SELECT tenant_id FROM api_keys ORDER BY id")).scalars().all()
        assert keys == [1, 2]
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("tenants")}
    assert columns["name"]["type"].length == 200
    assert ("ix_tenants_name", ("name",), True) in _schema(engine)["tenants"]["indexes"]
    if _dialect(engine) == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on after the migration
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    # ... and back down to the baseline.
    assert migrate.downgrade(engine, migrate.BASELINE) == migrate.BASELINE
    assert "test_only_note" not in {c["name"] for c in sa.inspect(engine).get_columns("tenants")}


_CHILD = """
import sys
from concierge.store import db, migrate
engine = db.get_engine(sys.argv[1])
print(migrate.current(engine))
"""


def test_processes_starting_together_all_succeed(url: str, home: Path) -> None:
    """Four processes open the same fresh database at once: one creates it, the others wait."""
    env = {"PYTHONPATH": str(ROOT / "src"), "CONCIERGE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    assert {out.strip() for out, _ in results} == {migrate.head()}, results
    engine = db.get_engine(url)
    assert migrate.diff(engine) == []


def test_db_commands(url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(db_cli.app, ["current", "--url", url])
    assert result.exit_code == 0 and "database: none" in result.output
    result = runner.invoke(db_cli.app, ["upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    assert f"created: none -> {migrate.head()}" in result.output
    result = runner.invoke(db_cli.app, ["upgrade", "--url", url])
    assert f"up to date: {migrate.head()}" in result.output
    result = runner.invoke(db_cli.app, ["current", "--url", url])
    assert f"database: {migrate.head()}" in result.output and "up to date" in result.output
    result = runner.invoke(db_cli.app, ["check", "--url", url])
    assert result.exit_code == 0 and "matches" in result.output


def test_db_check_reports_drift(engine: sa.Engine, url: str) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE request_log"))
    result = CliRunner().invoke(db_cli.app, ["check", "--url", url])
    assert result.exit_code == 1 and "request_log" in result.output


def test_store_imports_no_capability() -> None:
    """The store layer names capability table modules as strings; it imports none of them itself."""
    code = (
        "import sys; import concierge.store.db, concierge.store.tables, concierge.store.migrate; "
        "print(sorted(m for m in sys.modules if m.startswith('concierge.') and not m.startswith('concierge.store')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['concierge.config']"


def test_migration_files_are_package_data() -> None:
    """The wheel carries the environment: versions/ and migrations/ are packages, *.mako is package data."""
    migrations = ROOT / "src" / "concierge" / "store" / "migrations"
    assert (migrations / "__init__.py").is_file() and (migrations / "versions" / "__init__.py").is_file()
    assert (migrations / "script.py.mako").is_file() and (migrations / "env.py").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"**/*.mako"' in pyproject and "alembic" in pyproject


# helpers


def migrate_baseline():  # noqa: ANN201
    return migrate.script_directory().get_revision(migrate.BASELINE).module


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
            for table in sa.inspect(conn).get_table_names()
            if table != "alembic_version"
        }


def _sqlite_ddl(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE name != 'alembic_version' "
            "AND name NOT LIKE 'sqlite_autoindex_alembic%' ORDER BY name"
        )
        return list(rows)


def _other_schema_url(url: str, suffix: str) -> str:
    """A second empty PostgreSQL schema next to the test's own (dropped at the end by the plugin run)."""
    parsed = sa.make_url(url)
    options = parsed.query.get("options", "")
    schema = re.search(r"search_path=(\w+)", options).group(1) + "_" + suffix
    admin = sa.create_engine(parsed.set(query={}), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    _extra_schemas.append(schema)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


_extra_schemas: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _drop_extra_schemas() -> Iterator[None]:
    yield
    if not _extra_schemas:
        return
    import os

    admin = sa.create_engine(os.environ["CONCIERGE_DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for schema in _extra_schemas:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()
