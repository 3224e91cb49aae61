"""The declarative base every persistent table is declared on, and the list of table modules.

This module imports nothing from concierge, so any layer can declare tables on :class:`Base`
without an import circle: ``concierge.store.tables`` (the core tables) and each capability's own
table module (``concierge.shop.store_tables``) import :class:`Base` from here. The store never
imports a capability; it imports the modules named in :data:`TABLE_MODULES` by name
(:func:`load_tables`), so ``Base.metadata`` is complete for ``create_all`` and for the migrations.
"""

from __future__ import annotations

import importlib
import threading

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


# Modules that declare tables on Base. A capability (or a plugin) with tables adds its module here
# through register_table_module() before the first engine is made.
TABLE_MODULES: list[str] = [
    "concierge.store.tables",
    "concierge.shop.store_tables",
]

_lock = threading.Lock()
_loaded: set[str] = set()


def register_table_module(name: str) -> None:
    """Add a module whose import declares tables on :class:`Base` (idempotent)."""
    with _lock:
        if name not in TABLE_MODULES:
            TABLE_MODULES.append(name)


def load_tables():  # noqa: ANN201 - returns Base.metadata
    """Import every table module so ``Base.metadata`` holds every table; returns the metadata."""
    with _lock:
        pending = [name for name in TABLE_MODULES if name not in _loaded]
        for name in pending:
            importlib.import_module(name)
            _loaded.add(name)
    return Base.metadata
