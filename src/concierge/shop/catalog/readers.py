"""Readers, one per file format (JSONL, CSV, Parquet, in-memory records), yielding numbered rows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from concierge.shop.catalog.schema import _ERROR, INTERACTION_FIELDS, PRODUCT_FIELDS, CatalogError, _Row


def _read_records(records: Iterable[Mapping[str, Any]]) -> Iterator[_Row]:
    for i, rec in enumerate(records, 1):
        yield (i, dict(rec)) if isinstance(rec, Mapping) else (i, "not an object")


def _read_jsonl(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            yield (line_no, data) if isinstance(data, dict) else (line_no, "not a JSON object")


_JSON_CELLS = {"attributes": dict, "variants": list}


def _read_csv(path: Path, allowed: tuple[str, ...], json_cells: dict[str, type]) -> Iterator[_Row]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        unknown = [h for h in header if h not in allowed and not (json_cells and h.startswith("attr_"))]
        if unknown:
            raise CatalogError(
                f"{path.name}: unknown column(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
                + (" or attr_<name>" if json_cells else "")
            )
        last = 1  # the header line
        for row in reader:
            line, last = last + 1, reader.line_num
            if None in row:
                yield line, "more cells than header columns"
                continue
            data: dict[str, Any] = {}
            attr_cells: dict[str, str] = {}
            error = None
            for key, cell in row.items():
                if cell is None or cell.strip() == "":
                    continue
                if key in json_cells:
                    try:
                        value = json.loads(cell)
                    except json.JSONDecodeError as exc:
                        error = f"{key}: invalid JSON ({exc.msg})"
                        break
                    if not isinstance(value, json_cells[key]):
                        error = f"{key}: must be a JSON {'object' if json_cells[key] is dict else 'array'}"
                        break
                    data[key] = value
                elif key.startswith("attr_"):
                    attr_cells[key[5:]] = cell.strip()
                else:
                    data[key] = cell
            if attr_cells:
                # attr_<name> columns and a JSON attributes cell merge; the JSON cell wins on a clash.
                data["attributes"] = {**attr_cells, **data.get("attributes", {})}
            yield line, ({**data, _ERROR: error} if error else data)


def _from_arrow(value: Any) -> Any:
    """pyarrow map columns come back as lists of (key, value) tuples; make them dicts."""
    if isinstance(value, list) and value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
        return {k: _from_arrow(v) for k, v in value}
    if isinstance(value, list):
        return [_from_arrow(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_arrow(v) for k, v in value.items() if v is not None}
    return value


def _read_parquet(path: Path, json_cells: dict[str, type]) -> Iterator[_Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise CatalogError("reading Parquet needs pyarrow: pip install pyarrow") from exc
    table = pq.read_table(path)
    for i, rec in enumerate(table.to_pylist(), 1):
        data = {k: _from_arrow(v) for k, v in rec.items() if v is not None}
        error = None
        for key in json_cells:
            if isinstance(data.get(key), str):
                try:
                    data[key] = json.loads(data[key])
                except json.JSONDecodeError as exc:
                    error = f"{key}: invalid JSON ({exc.msg})"
        yield i, ({**data, _ERROR: error} if error else data)


def _rows(
    source: str | Path | Iterable[Mapping[str, Any]], kind: str, *, fmt: str = "auto", currency: str = "USD"
) -> tuple[Iterator[_Row], str]:
    """Pick the reader for a path (by extension and, for products, ``fmt``: ``auto``, ``catalog``,
    ``shopify`` or ``merchant``) or in-memory records; returns (rows, label)."""
    allowed = PRODUCT_FIELDS if kind == "products" else INTERACTION_FIELDS
    json_cells = _JSON_CELLS if kind == "products" else {}
    if not isinstance(source, str | Path):
        return _read_records(source), "records"
    path = Path(source).expanduser()
    if not path.is_file():
        raise CatalogError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if kind == "products":
        from concierge.shop.catalog.feeds import detect_format, read_feed

        if fmt == "auto":
            fmt = detect_format(path)
        if fmt != "catalog":
            return read_feed(path, fmt, currency=currency), str(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path), str(path)
    if suffix == ".csv":
        return _read_csv(path, allowed, json_cells), str(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, json_cells), str(path)
    raise CatalogError(
        f"{path.name}: unknown file type (use .csv, .jsonl or .parquet; feeds: a Shopify .csv export, "
        "a Merchant Center .tsv or .xml)"
    )
