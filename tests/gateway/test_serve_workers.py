"""``concierge serve --workers N``: several gateway processes on one port, supervised.

The real command, on loopback: the second worker starts only after the first serves; keys made
after the start are honoured by every worker (they live in the database); a worker killed with
SIGKILL is replaced while the other keeps answering; SIGTERM stops the parent and every worker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from concierge import config, tenancy
from concierge.store import db

STARTED = re.compile(r"Started server process \[(\d+)\]")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Log:
    """The command's stderr, read in a thread so the pipe never fills."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # noqa: ANN001
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: re.Pattern[str], count: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m.group(1) for line in list(self.lines) if (m := pattern.search(line))]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{count} x {pattern.pattern!r} not seen in:\n{''.join(self.lines)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_worker_count_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CONCIERGE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "concierge", "serve", "--workers", "0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --workers must be at least 1, not 0"


def test_two_workers_share_the_port_and_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path))
    monkeypatch.delenv("CONCIERGE_DATABASE_URL", raising=False)
    db.reset_engines()
    port = _free_port()
    # The database this test's own calls use (a SQLite file in the home; a PostgreSQL schema under
    # tests/postgres_plugin.py), named for the server too.
    env = {**os.environ, "CONCIERGE_HOME": str(tmp_path), "CONCIERGE_DATABASE_URL": config.database_url()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "concierge", "serve", "--workers", "2", "--no-web", "--no-warm-up",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    log = _Log(proc.stderr)
    try:
        pids = [int(p) for p in log.wait_for(STARTED, 2)]
        text = "".join(log.lines)
        # Staggered: the second worker started after the first had finished its start.
        assert text.index("Application startup complete") < text.index(f"Started server process [{pids[1]}]")
        key = tenancy.create_key("acme").key  # after the start: every worker must find it in the database
        base = f"http://127.0.0.1:{port}"

        def models() -> int:
            with httpx.Client(base_url=base, timeout=10) as client:  # a new connection each time
                return client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code

        deadline = time.monotonic() + 10
        statuses = [models() for _ in range(20)]
        while any(s != 200 for s in statuses) and time.monotonic() < deadline:  # keys refresh within ~1 s
            time.sleep(0.5)
            statuses = [models() for _ in range(20)]
        assert statuses == [200] * 20
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/v1/models", headers={"Authorization": "Bearer ck-wrong"}).status_code == 401

        os.kill(pids[0], signal.SIGKILL)  # the other worker keeps answering; the supervisor replaces this one
        assert [models() for _ in range(10)] == [200] * 10
        started = [int(p) for p in log.wait_for(STARTED, 3, timeout=120)]
        replacement = started[2]
        assert replacement not in pids and _alive(replacement)
        assert "died" in "".join(log.lines)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not any(_alive(pid) for pid in (pids[1], replacement))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        db.reset_engines()


def test_a_worker_that_cannot_start_exits_with_uvicorns_startup_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit code 3 makes uvicorn's supervisor stop instead of restarting the worker for ever."""
    import json

    from concierge.server import WORKER_OPTIONS_ENV, worker_app

    monkeypatch.setenv(WORKER_OPTIONS_ENV, json.dumps({"config": str(tmp_path / "missing.yaml"), "web": False}))
    with pytest.raises(SystemExit) as failed:
        worker_app()
    assert failed.value.code == 3
