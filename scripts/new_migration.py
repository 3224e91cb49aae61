"""Write a new migration revision: ``alembic revision --autogenerate`` for concierge's packaged environment.

    .venv/bin/python scripts/new_migration.py "add tenants.note"            # autogenerate from the models
    .venv/bin/python scripts/new_migration.py "backfill notes" --empty      # an empty revision to fill in
    .venv/bin/python scripts/new_migration.py "..." --url postgresql+psycopg://...   # compare against this db

Autogenerate needs a database at the current head: by default a scratch SQLite file that every
existing revision is run on in turn (so the comparison is against what the migrations make, not
against the models). The new file is ``src/concierge/store/migrations/versions/<NNNN>_<slug>.py``
with the next number; review it (autogenerate misses renames and server defaults, and writes SQLite
-friendly batch operations), then run ``pytest tests/store/test_migrations.py`` on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))  # write into this checkout's migrations, whatever is installed

from alembic import command  # noqa: E402

from concierge.store import db, migrate  # noqa: E402


def next_rev_id() -> str:
    numbers = [
        int(s.revision)
        for s in migrate.script_directory().walk_revisions()
        if re.fullmatch(r"\d+", s.revision)
    ]
    return f"{max(numbers, default=0) + 1:04d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("message", help="what the revision does (becomes the file name's slug)")
    parser.add_argument(
        "--empty", action="store_true", help="do not autogenerate; write empty upgrade/downgrade"
    )
    parser.add_argument(
        "--url", help="compare against this database (it must be at head) instead of a scratch SQLite"
    )
    args = parser.parse_args(argv)

    assert Path(migrate.MIGRATIONS).is_relative_to(SRC), migrate.MIGRATIONS
    rev_id = next_rev_id()
    with tempfile.TemporaryDirectory() as scratch:
        engine = db.make_engine(args.url or f"sqlite:///{scratch}/head.db")
        try:
            if args.url is None:
                for script in reversed(list(migrate.script_directory().walk_revisions())):
                    migrate.upgrade(
                        engine, script.revision
                    )  # each revision in turn, not the create_all fast path
            with engine.begin() as connection:
                current = migrate.current_revision(connection)
                if current != migrate.head():
                    print(
                        f"error: the database is at {current}, not at head {migrate.head()}", file=sys.stderr
                    )
                    return 2
                scripts = command.revision(
                    migrate.alembic_config(connection),
                    message=args.message,
                    autogenerate=not args.empty,
                    rev_id=rev_id,
                )
        finally:
            engine.dispose()
    for script in scripts if isinstance(scripts, list) else [scripts]:
        # The project's formatting, where ruff is installed (the dev extra); alembic writes '...' quotes.
        subprocess.run([sys.executable, "-m", "ruff", "format", "-q", script.path], check=False)
        print(f"wrote {Path(script.path).relative_to(SRC.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
