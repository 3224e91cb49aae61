"""Shop catalogues: the product model, validated all-or-nothing ingest, and loading back.

Product files (one product per line/row)
----------------------------------------
JSONL (``.jsonl`` / ``.ndjson``): one JSON object per line with the fields

    id           str, required, unique in the catalogue
    title        str, required
    description  str
    category     path such as ``"Women > Shoes > Sneakers"`` (segments are trimmed)
    brand        str
    price        number >= 0; optional when every variant has a price (then the lowest variant price)
    currency     3 letters, default ``USD``
    attributes   object: name -> string | number | bool | list of those (``color``, ``material`` ...)
    image_url    str
    stock        int >= 0, only for a product without variants (absent: stock not tracked)
    variants     list of ``{id (required, unique in the catalogue), options {name: value},
                 price (default: the product price), stock (int >= 0; absent/null: not tracked)}``

A product without variants is sold as one variant whose id is the product id. Attribute and option
names are lower-cased; values keep their case (search compares them case-insensitively). Unknown
fields are rejected (a typo such as ``stok`` must not silently drop data).

CSV (``.csv``): a header row with the same column names, **one row per product**. ``attributes`` and
``variants`` are JSON cells (variants as a JSON array, as above); any ``attr_<name>`` column adds the
attribute ``<name>`` (handy for spreadsheets). Empty cells count as absent.

Parquet (``.parquet``): the same columns as JSONL (``variants`` as ``list<struct>`` or a JSON string,
``attributes`` as a struct, a map or a JSON string). Needs ``pyarrow``.

Interaction files: columns ``user``, ``item`` (a variant id or a product id of the catalogue), ``event``
(``view`` | ``cart`` | ``purchase``) and ``timestamp`` (ISO 8601, naive means UTC, or epoch seconds),
in CSV, JSONL or Parquet.

Rejected rows are reported with their line number: the physical line for JSONL and CSV (the CSV
header is line 1), the 1-based row number for Parquet and in-memory records.

Transactions: the ``ingest_*`` functions validate everything before touching the database; if any
row is rejected nothing is written (not even the tenant). Writes happen in the caller's session, so
they commit or roll back as one transaction with :func:`concierge.store.db.session_scope`; passing
``session=None`` opens (and commits) one.

Modules: :mod:`.schema` (data types and errors), :mod:`.validation` (rows -> products),
:mod:`.readers` (one per file format), :mod:`.memory` (the in-memory :class:`Catalog`),
:mod:`.storage` (catalogues in the database), :mod:`.interactions` (shopper interactions).
"""

from __future__ import annotations

from concierge.shop.catalog.interactions import (
    InteractionReport,
    count_interactions,
    ingest_interactions,
    load_interactions,
    record_interaction,
)
from concierge.shop.catalog.memory import Catalog
from concierge.shop.catalog.schema import (
    EVENTS,
    INTERACTION_FIELDS,
    PRODUCT_FIELDS,
    CatalogError,
    CatalogValidationError,
    Interaction,
    Product,
    RejectedRow,
    Variant,
)
from concierge.shop.catalog.storage import (
    CatalogInfo,
    IngestReport,
    ingest_catalog,
    list_catalogs,
    load_catalog,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogInfo",
    "CatalogValidationError",
    "EVENTS",
    "INTERACTION_FIELDS",
    "IngestReport",
    "Interaction",
    "InteractionReport",
    "PRODUCT_FIELDS",
    "Product",
    "RejectedRow",
    "Variant",
    "count_interactions",
    "ingest_catalog",
    "ingest_interactions",
    "list_catalogs",
    "load_catalog",
    "load_interactions",
    "record_interaction",
]
