"""Where things are, for tests in any subfolder of tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]  # tests/
ROOT = TESTS.parent  # the repository
DATA = TESTS / "data"
FIXTURES = TESTS / "fixtures"
