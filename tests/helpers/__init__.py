"""Shared test helpers (not test modules): fake hubs, a live uvicorn server, app builders.

Tests reach them through the fixtures in tests/conftest.py, or import them as ``helpers.<module>``
(tests/ is on sys.path: ``pythonpath = ["tests"]`` in pyproject.toml).
"""
