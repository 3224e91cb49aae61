"""Shared fixtures: the real data folder (optional) and a tiny GGUF built once per session; the fake
hub, the live server and an isolated ``CONCIERGE_HOME`` come from ``tests/helpers/fixtures.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/data next to the repository; CONCIERGE_SHARED_DATA overrides it.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# fake_hub and live_server (tests/helpers/fixtures.py): test modules never import one another.
pytest_plugins = ["helpers.fixtures"]


RUNNING_TEST = Path(__file__).resolve().parents[1] / ".pytest_cache" / "running-test"


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


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """The test now running, in ``.pytest_cache/running-test``: a native library that aborts the
    process leaves no report, and CI keeps only the tail of its long C traceback; ``make test``
    names the test from this file when pytest dies of a signal."""
    RUNNING_TEST.parent.mkdir(exist_ok=True)
    RUNNING_TEST.write_text(nodeid + "\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests are those that take the Playwright `browser` fixture; marking them here lets a
    # run leave them out with -m "not browser" (the PostgreSQL run in .ci/run does).
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
