"""Shared fixtures: the real data folder (optional), a tiny GGUF built once per session, a live
server on loopback and an isolated ``CONCIERGE_HOME``."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

# ../shared/data next to the repository; CONCIERGE_SHARED_DATA overrides it.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_path() -> Path:
    return Path(os.environ.get("CONCIERGE_SHARED_DATA") or DEFAULT_SHARED_DATA).expanduser()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder; the test is skipped when it is absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set CONCIERGE_SHARED_DATA to its location)")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Qwen2 GGUF (~0.4 MB, Qwen2.5 chat template with tools), built once."""
    pytest.importorskip("gguf", reason="the gguf package (dev extra) builds the tiny model")
    from concierge.models.tiny_gguf import build_tiny_qwen2_gguf

    return build_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-qwen2.gguf")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests are those that take the Playwright `browser` fixture; marking them here lets a
    # run leave them out with -m "not browser" (the PostgreSQL run in .ci/run does).
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


class LiveServer:
    """``app`` served by uvicorn in a thread on a free loopback port (``url``), lifespan included."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.app = app
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    """Start ``live_server(app)`` on loopback; every server started so is stopped after the module."""
    started: list[LiveServer] = []

    def serve(app: Any) -> LiveServer:
        server = LiveServer(app).start()
        started.append(server)
        return server

    yield serve
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module")
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ``CONCIERGE_HOME`` (SQLite database inside) for the module, no shared database or support data."""
    from concierge.store import db

    path = tmp_path_factory.mktemp("concierge-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(path))
        for name in ("CONCIERGE_DATABASE_URL", "CONCIERGE_SUPPORT_DATA", "CONCIERGE_WEB_SECRET"):
            mp.delenv(name, raising=False)
        db.reset_engines()
        yield path
    db.reset_engines()
