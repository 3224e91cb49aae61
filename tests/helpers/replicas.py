"""Helpers for tests that run real gateway processes (tests/helpers/launch_gateway.py) over one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from helpers.server import free_port as _free_port

LAUNCHER = Path(__file__).resolve().parent / "launch_gateway.py"
POSTGRES_DEFAULT = "postgresql+psycopg://concierge:concierge@127.0.0.1:5432/concierge"


def postgres_base() -> str:
    url = os.environ.get("CONCIERGE_DATABASE_URL", "")
    return url if url.startswith("postgresql") else os.environ.get("CONCIERGE_TEST_POSTGRES_URL", POSTGRES_DEFAULT)


@contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file in ``home`` or a new schema on the PostgreSQL server."""
    if kind == "sqlite":
        yield f"sqlite:///{home / 'concierge.db'}"
        return
    base = postgres_base()
    schema = "rt_" + uuid.uuid4().hex[:12]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"no PostgreSQL server at {make_url(base).host}: {type(exc).__name__}")
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        from concierge.store import db

        db.reset_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


class Replica:
    """One gateway process on a loopback port."""

    def __init__(self, home: Path, db_url: str, *, delay: float = 0.05) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CONCIERGE_HOME": str(home), "CONCIERGE_DATABASE_URL": db_url}
        self.log = open(home / f"replica-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), str(self.port), "--delay", str(delay)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica exited ({self.proc.returncode}): {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"replica did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


@contextmanager
def replicas(home: Path, db_url: str, count: int = 2, **kw: float) -> Iterator[list[Replica]]:
    started = [Replica(home, db_url, **kw) for _ in range(count)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


def chat(url: str, key: str, words: int = 12, timeout: float = 30.0) -> httpx.Response:
    body = {"model": "canned", "messages": [{"role": "user", "content": " ".join(["word"] * words)}]}
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )
