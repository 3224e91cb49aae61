"""The shared fixtures behind tests/helpers, registered by tests/conftest.py (``pytest_plugins``).

``fake_hub``: a factory of ScriptedHubs; ``live_server``: a factory of live uvicorn servers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.hubs import ScriptedHub
from helpers.server import LiveServer


@pytest.fixture
def fake_hub() -> Callable[..., ScriptedHub]:
    """A factory: ``fake_hub(*replies, **config)`` is a new :class:`helpers.hubs.ScriptedHub`."""

    def make(*replies: Any, **config: Any) -> ScriptedHub:
        return ScriptedHub(*replies, **config)

    return make


@pytest.fixture(scope="module")
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    """A factory: ``live_server(app)`` serves ``app`` on a live uvicorn server on loopback.

    Every server it started stops when the module's tests are done (request this fixture after
    the ``home`` fixture so the servers stop before the home folder goes).
    """
    started: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


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
