"""The copy-on-write database: a ``db.json`` parsed once per process (``DbSource``) and shared by every
Domain made from it; a write tool gets a private copy of a record before it can touch it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import marshal
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- db helpers


def _copy(value: Any) -> Any:
    """Deep copy of JSON-like data (marshal is several times faster than deepcopy)."""
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:
        return copy.deepcopy(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DbSource:
    """A database loaded once and shared, copy-on-write, by every Domain made from it.

    ``pristine`` is never changed: a fresh domain's tables are shallow copies of it, and a write
    tool gets a private copy of a record before it can touch it (see ``_WriteView``). So a fresh
    database costs a few dict copies, ``diff`` only compares the records that were copied, and
    ``db_hash`` re-serialises only those.
    """

    def __init__(self, tables: dict[str, Any], label: str = "") -> None:
        self.label = label
        self.pristine: dict[str, Any] = _copy(tables)
        self._fragments: dict[str, dict[str, str]] | None = None

    def fresh(self) -> dict[str, Any]:
        return {
            name: dict(table) if isinstance(table, dict) else _copy(table)
            for name, table in self.pristine.items()
        }

    def fragments(self) -> dict[str, dict[str, str]]:
        """``{table: {key: '"key":<canonical record json>'}}`` for dict tables."""
        if self._fragments is None:
            self._fragments = {
                name: {
                    key: json.dumps(key, ensure_ascii=False) + ":" + canonical_json(rec)
                    for key, rec in table.items()
                }
                for name, table in self.pristine.items()
                if isinstance(table, dict)
            }
        return self._fragments


_SOURCES: dict[tuple[str, int, int], DbSource] = {}


def db_source(path: Path) -> DbSource:
    """The (cached) DbSource of a ``db.json``; reloaded when the file changes."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as exc:
        raise FileNotFoundError(f"database not found: {path}") from exc
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    source = _SOURCES.get(key)
    if source is None:
        with path.open(encoding="utf-8") as fh:
            tables = json.load(fh)
        if not isinstance(tables, dict):
            raise ValueError(f"{path}: a domain database must be a JSON object of tables")
        for stale in [k for k in _SOURCES if k[0] == key[0]]:
            del _SOURCES[stale]
        source = _SOURCES[key] = DbSource(tables, str(path))
    return source


_ABSENT = object()


class _WriteView(MutableMapping[str, Any]):
    """A table as a write tool sees it.

    Each record is made private to this domain (copied if still shared with the source) before the
    tool gets it, and its previous version is kept, so a failed call can be undone exactly.
    """

    def __init__(self, data: dict[str, Any], shared: Mapping[str, Any]) -> None:
        self._data = data
        self._shared = shared
        self._journal: dict[str, Any] = {}  # key -> previous record, or _ABSENT
        self._whole: dict[str, Any] | None = None

    def _own(self, key: str) -> None:
        if self._whole is not None or key in self._journal:
            return
        if key not in self._data:
            self._journal[key] = _ABSENT
            return
        current = self._data[key]
        if self._shared.get(key) is current:
            self._journal[key] = current  # the shared original is never changed: keep it as is
            self._data[key] = _copy(current)
        else:
            self._journal[key] = _copy(current)

    def _own_all(self) -> None:
        # Iterating hands out every record: make them all private and remember the whole table.
        if self._whole is not None:
            return
        whole = {}
        for key, current in self._data.items():
            if key in self._journal:
                continue
            if self._shared.get(key) is current:
                whole[key] = current
                self._data[key] = _copy(current)
            else:
                whole[key] = _copy(current)
        whole.update({k: v for k, v in self._journal.items() if v is not _ABSENT})
        self._whole = whole

    def __getitem__(self, key: str) -> Any:
        self._own(key)
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._own(key)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._own(key)
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def values(self):  # type: ignore[override]
        self._own_all()
        return self._data.values()

    def items(self):  # type: ignore[override]
        self._own_all()
        return self._data.items()

    def rollback(self) -> None:
        if self._whole is not None:
            self._data.clear()
            self._data.update(self._whole)
            return
        for key, previous in self._journal.items():
            if previous is _ABSENT:
                self._data.pop(key, None)
            else:
                self._data[key] = previous


def _deep_merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = _copy(value)
