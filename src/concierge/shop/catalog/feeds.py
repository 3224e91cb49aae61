"""Catalogue feeds as stores already have them: the Shopify product CSV export and the Google
Merchant Center product feed (TSV and RSS 2.0 / Atom XML), read into catalogue product records.

Each reader yields ``(line, record)`` pairs in the catalogue's own record shape (see
:mod:`concierge.shop.catalog`), one per *product*, so the feeds go through the same validation,
all-or-nothing write and rejected-row report as every other source. A problem the reader finds
itself is reported on the physical line of the offending row, named by the feed's own column
(``Variant Price``, ``price``), never by the catalogue's field.

Shopify (``Handle`` ... columns, one row per variant)
    Rows sharing a ``Handle`` are one product; its first row carries the product fields
    (``Title``, ``Body (HTML)``, ``Vendor``, ``Product Category`` / ``Type``, ``Tags``, ``Status``).
    ``Option1..3 Name`` / ``Value`` are the variant options (Shopify's ``Title: Default Title``
    means no options); ``Variant SKU`` is the variant id (``<handle>-<n>`` when empty);
    ``Variant Price``; ``Variant Inventory Qty`` the stock (not tracked when ``Variant Inventory
    Tracker`` is empty or ``Variant Inventory Policy`` is ``continue``, i.e. sold when out of
    stock). A row with only image columns is an extra image: the first ``Image Src`` is the
    product's image. Products whose ``Status`` is not ``active`` (draft, archived) are left out.
    Metafield columns such as ``Color (product.metafields.shopify.color-pattern)`` become
    attributes (``color``); other columns are ignored. Shopify exports carry no currency: it is a
    parameter of the ingest (``USD`` by default).

Google Merchant Center (``id``, ``title``, ``price`` ...; ``g:`` namespace in XML)
    One item per variant; items sharing ``item_group_id`` are one product (id: the group id;
    title: the words the items' titles share), their ``color``, ``size``, ``material``,
    ``pattern``, ``gender``, ``age_group`` the variant options. An item without a group is a
    product of its own (those fields are then attributes). ``price`` is ``"15.00 USD"``;
    ``sale_price`` replaces it while ``sale_price_effective_date`` (if any) holds.
    ``availability`` ``in_stock`` is available (stock not tracked: the feed has no quantities),
    ``out_of_stock``, ``preorder`` and ``backorder`` are not in stock. ``product_type`` (the
    store's own ``A > B > C``) is the category, else ``google_product_category`` when it is a
    path; ``brand``, ``condition`` and ``google_product_category`` are attributes. ``link`` is
    not stored (the catalogue has no product-page field). TSV headers may use spaces or a
    ``g:`` prefix (``image link``, ``g:image_link``).
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, TreeBuilder

from concierge.shop.catalog.schema import _ERROR, CatalogError, _Row

FEED_FORMATS = ("catalog", "shopify", "merchant")

# ---------------------------------------------------------------------------------------------
# Shared helpers


class _Text(HTMLParser):
    """HTML to plain text: tags dropped, block ends as spaces, entities decoded."""

    _BLOCKS = {"p", "br", "li", "div", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(value: str) -> str:
    """The text of an HTML fragment (``Body (HTML)``, Merchant descriptions), whitespace collapsed."""
    if "<" not in value and "&" not in value:
        return " ".join(value.split())
    parser = _Text()
    parser.feed(value)
    parser.close()
    return " ".join(html.unescape("".join(parser.parts)).split())


_NUMBER = re.compile(r"^\s*(\d+(?:[.,]\d{3})*(?:\.\d+)?|\d+(?:,\d+)?)\s*$")


def _number(value: str) -> float | None:
    """``"1,299.00"`` / ``"15.5"`` / ``"15,50"`` -> float; None if it is not a plain number."""
    match = _NUMBER.match(value)
    if not match:
        return None
    text = match.group(1)
    if "," in text and "." not in text and re.fullmatch(r"\d+,\d{1,2}", text):
        text = text.replace(",", ".")  # a decimal comma: "15,50"
    return float(text.replace(",", ""))


def _split_path(value: str) -> str:
    return " > ".join(seg.strip() for seg in value.split(">") if seg.strip())


# ---------------------------------------------------------------------------------------------
# Shopify product CSV export

_SHOPIFY_REQUIRED = ("Handle", "Title")
_OPTIONS = (1, 2, 3)
_METAFIELD = re.compile(r"^(?P<label>.+?)\s*\((?:product|variant)\.metafields\.[^)]+\)$")
_VARIANT_COLUMNS = ("Option1 Value", "Option2 Value", "Option3 Value", "Variant SKU", "Variant Price")


def is_shopify_header(header: list[str]) -> bool:
    return all(col in header for col in _SHOPIFY_REQUIRED) and "Variant Price" in header


def read_shopify_csv(path: Path, *, currency: str = "USD") -> Iterator[_Row]:
    """A Shopify product export, one record per product (see the module docstring)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in (*_SHOPIFY_REQUIRED, "Variant Price") if c not in header]
        if missing:
            raise CatalogError(f"{path.name}: not a Shopify product export: no column(s) {', '.join(missing)}")
        metafields = {h: m.group("label").strip().lower() for h in header if (m := _METAFIELD.match(h))}
        product: _ShopifyProduct | None = None
        last = 1  # the header line
        for row in reader:
            line, last = last + 1, reader.line_num
            if None in row:
                if product is not None:
                    yield from product.finish()
                    product = None
                yield line, "more cells than header columns"
                continue
            cells = {k: (v or "").strip() for k, v in row.items()}
            handle = cells.get("Handle", "")
            if not handle:
                yield line, "Handle: required"
                continue
            if product is None or handle != product.handle:
                if product is not None:
                    yield from product.finish()
                product = _ShopifyProduct(handle, line, cells, currency, metafields)
            else:
                product.add_row(line, cells)
        if product is not None:
            yield from product.finish()


class _ShopifyProduct:
    def __init__(
        self, handle: str, line: int, cells: dict[str, str], currency: str, metafields: dict[str, str]
    ) -> None:
        self.handle = handle
        self.line = line
        self.error: tuple[int, str] | None = None
        self.images: list[str] = []
        self.variants: list[dict[str, Any]] = []
        self.option_names = [cells.get(f"Option{i} Name", "") for i in _OPTIONS]
        self.status = cells.get("Status", "").lower()
        category = _split_path(cells.get("Product Category", "") or cells.get("Standard Product Type", ""))
        kind = cells.get("Type", "") or cells.get("Custom Product Type", "")
        attributes: dict[str, Any] = {}
        if kind:
            attributes["type"] = kind
        tags = [t.strip() for t in cells.get("Tags", "").split(",") if t.strip()]
        if tags:
            attributes["tags"] = tags
        for column, name in metafields.items():
            values = [v.strip() for v in re.split(r"[;|]", cells.get(column, "")) if v.strip()]
            if values:
                attributes[name] = values if len(values) > 1 else values[0]
        self.record: dict[str, Any] = {
            "id": handle,
            "title": cells.get("Title", ""),
            "description": html_text(cells.get("Body (HTML)", "")),
            "category": category or kind,
            "brand": cells.get("Vendor", ""),
            "currency": currency,
            "attributes": attributes,
        }
        if not self.record["title"]:
            self._fail(line, "Title: required on the first row of a product (the row that starts its Handle)")
        self.add_row(line, cells)

    def _fail(self, line: int, reason: str) -> None:
        if self.error is None:
            self.error = (line, reason)

    def add_row(self, line: int, cells: dict[str, str]) -> None:
        image = cells.get("Image Src", "") or cells.get("Variant Image", "")
        if image and image not in self.images:
            self.images.append(image)
        if not any(cells.get(c) for c in _VARIANT_COLUMNS):
            return  # an extra image row
        options: dict[str, str] = {}
        for i, name in zip(_OPTIONS, self.option_names, strict=True):
            value = cells.get(f"Option{i} Value", "")
            if value and not name:
                self._fail(line, f"Option{i} Value: {value!r} has no Option{i} Name on the product's first row")
                continue
            if name and not value:
                self._fail(line, f"Option{i} Value: required (the product has option {name!r})")
                continue
            if name and not (name == "Title" and value == "Default Title"):
                options[name.lower()] = value
        raw_price = cells.get("Variant Price", "")
        price = _number(raw_price) if raw_price else None
        if not raw_price:
            self._fail(line, "Variant Price: required")
        elif price is None:
            self._fail(line, f"Variant Price: {raw_price!r} is not a number")
        stock: int | None = None
        qty = cells.get("Variant Inventory Qty", "")
        tracked = "Variant Inventory Tracker" not in cells or bool(cells.get("Variant Inventory Tracker"))
        if cells.get("Variant Inventory Policy", "").lower() == "continue":
            tracked = False  # sold even when out of stock
        if qty:
            if not re.fullmatch(r"-?\d+", qty):
                self._fail(line, f"Variant Inventory Qty: {qty!r} is not a whole number")
            elif tracked:
                stock = max(0, int(qty))  # Shopify lets oversold stock go negative: none left
        sku = cells.get("Variant SKU", "")
        self.variants.append({
            "id": sku or f"{self.handle}-{len(self.variants) + 1}",
            "options": options,
            "price": price,
            "stock": stock,
        })

    def finish(self) -> Iterator[_Row]:
        if self.status and self.status != "active" and self.error is None:
            return  # draft or archived: not for sale
        record = dict(self.record)
        if self.images:
            record["image_url"] = self.images[0]
        variants = self.variants
        if len(variants) == 1 and not variants[0]["options"]:
            # Shopify's "Default Title" variant: a product without options, sold under its SKU.
            record["price"] = variants[0]["price"]
            if variants[0]["id"] != self.handle:
                record["variants"] = variants
            else:
                record["stock"] = variants[0]["stock"]
        else:
            record["variants"] = variants
        if not variants and self.error is None:
            self._fail(self.line, "Variant Price: the product has no variant row")
        if self.error is not None:
            line, reason = self.error
            yield line, {"id": self.handle, _ERROR: reason}
            return
        yield self.line, record


# ---------------------------------------------------------------------------------------------
# Google Merchant Center feed (TSV and XML)

G_NS = "http://base.google.com/ns/1.0"
_MERCHANT_REQUIRED = ("id", "title", "price")
_VARIANT_ATTRS = ("color", "size", "material", "pattern", "gender", "age_group")
_AVAILABILITY = {"in_stock": None, "out_of_stock": 0, "preorder": 0, "backorder": 0}
_PRICE = re.compile(r"^\s*(?P<amount>\d[\d.,]*)\s*(?P<currency>[A-Za-z]{3})?\s*$")


def _merchant_key(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("g:"):
        name = name[2:]
    return re.sub(r"\s+", "_", name)


def is_merchant_header(header: list[str]) -> bool:
    keys = {_merchant_key(h) for h in header}
    return all(k in keys for k in _MERCHANT_REQUIRED)


def _price(value: str, column: str) -> tuple[float, str | None]:
    match = _PRICE.match(value)
    amount = _number(match.group("amount")) if match else None
    if match is None or amount is None:
        raise ValueError(f"{column}: {value!r} is not a price such as '15.00 USD'")
    currency = match.group("currency")
    return amount, currency.upper() if currency else None


def _sale_applies(window: str, now: datetime) -> bool:
    """``sale_price_effective_date`` is ``start/end`` in ISO 8601; empty means always."""
    if not window:
        return True
    try:
        start, end = (datetime.fromisoformat(part.strip()) for part in window.split("/", 1))
    except ValueError as exc:
        raise ValueError(
            f"sale_price_effective_date: {window!r} is not 'start/end' in ISO 8601"
        ) from exc
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    return start <= now <= end


def _merchant_item(line: int, item: dict[str, str], now: datetime) -> dict[str, Any]:
    """One feed item as a variant-bearing record part; ValueError names the feed's field."""
    for name in _MERCHANT_REQUIRED:
        if not item.get(name):
            raise ValueError(f"{name}: required")
    price, currency = _price(item["price"], "price")
    if item.get("sale_price"):
        sale, sale_currency = _price(item["sale_price"], "sale_price")
        if sale_currency and currency and sale_currency != currency:
            raise ValueError(f"sale_price: currency {sale_currency} differs from price's {currency}")
        if _sale_applies(item.get("sale_price_effective_date", ""), now):
            price = sale
    availability = item.get("availability", "in_stock").lower().replace(" ", "_")
    if availability not in _AVAILABILITY:
        raise ValueError(
            f"availability: {item.get('availability')!r} is not one of {', '.join(_AVAILABILITY)}"
        )
    category = _split_path(item.get("product_type", ""))
    google = item.get("google_product_category", "")
    if not category and google and not google.isdigit():
        category = _split_path(google)
    attributes: dict[str, Any] = {}
    if item.get("condition"):
        attributes["condition"] = item["condition"]
    if google and not google.isdigit():  # a bare taxonomy number says nothing to a shopper or search
        attributes["google_product_category"] = google
    return {
        "line": line,
        "id": item["id"],
        "group": item.get("item_group_id", ""),
        "title": item["title"],
        "description": html_text(item.get("description", "")),
        "category": category,
        "brand": item.get("brand", ""),
        "currency": currency or "USD",
        "price": price,
        "stock": _AVAILABILITY[availability],
        "image_url": item.get("image_link") or None,
        "attributes": attributes,
        "options": {k: item[k] for k in _VARIANT_ATTRS if item.get(k)},
    }


def _common_title(titles: list[str]) -> str:
    """The words every title starts with (``"Merino Tee - Blue - M"`` ... -> ``"Merino Tee"``)."""
    words = [t.split() for t in titles]
    shared: list[str] = []
    for column in zip(*words, strict=False):
        if all(w == column[0] for w in column):
            shared.append(column[0])
        else:
            break
    title = " ".join(shared).rstrip(" -–—,:/|(")
    return title if len(title) >= 3 else titles[0]


def _merchant_products(items: list[tuple[int, dict[str, str] | str]]) -> Iterator[_Row]:
    """Feed items -> product records: grouped by ``item_group_id``, in first-seen order."""
    now = datetime.now(UTC)
    groups: dict[str, list[dict[str, Any]]] = {}
    order: list[tuple[str, Any]] = []
    failed: set[str] = set()
    for line, item in items:
        if isinstance(item, str):
            order.append(("error", (line, item)))
            continue
        try:
            part = _merchant_item(line, item, now)
        except ValueError as exc:
            group = item.get("item_group_id", "")
            if group:
                failed.add(group)
            order.append(("error", (line, {"id": item.get("id") or None, _ERROR: str(exc)})))
            continue
        if not part["group"]:
            order.append(("single", part))
        else:
            if part["group"] not in groups:
                groups[part["group"]] = []
                order.append(("group", part["group"]))
            groups[part["group"]].append(part)
    for kind, value in order:
        if kind == "error":
            yield value
        elif kind == "single":
            part = value
            attributes = {**part["attributes"], **part["options"]}
            yield part["line"], {
                "id": part["id"], "title": part["title"], "description": part["description"],
                "category": part["category"], "brand": part["brand"], "price": part["price"],
                "currency": part["currency"], "attributes": attributes, "image_url": part["image_url"],
                "stock": part["stock"],
            }
        elif value not in failed:  # a group with a bad item is reported on that item's line only
            parts = groups[value]
            first = parts[0]
            currencies = {p["currency"] for p in parts}
            if len(currencies) > 1:
                yield first["line"], {"id": value, _ERROR: f"price: the items of group {value} mix currencies"}
                continue
            yield first["line"], {
                "id": value,
                "title": _common_title([p["title"] for p in parts]),
                "description": first["description"],
                "category": first["category"],
                "brand": first["brand"],
                "currency": first["currency"],
                "attributes": first["attributes"],
                "image_url": first["image_url"],
                "variants": [
                    {"id": p["id"], "options": p["options"], "price": p["price"], "stock": p["stock"]}
                    for p in parts
                ],
            }


def read_merchant_tsv(path: Path) -> Iterator[_Row]:
    """A Merchant Center TSV feed (header row of attribute names, one item per row)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        try:
            header = [_merchant_key(h) for h in next(reader)]
        except StopIteration:
            raise CatalogError(f"{path.name}: empty feed") from None
        missing = [k for k in _MERCHANT_REQUIRED if k not in header]
        if missing:
            raise CatalogError(f"{path.name}: not a Merchant Center feed: no column(s) {', '.join(missing)}")
        items: list[tuple[int, dict[str, str] | str]] = []
        last = 1
        for cells in reader:
            line, last = last + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                items.append((line, "more cells than header columns"))
                continue
            items.append((line, {k: v.strip() for k, v in zip(header, cells, strict=False) if v.strip()}))
    yield from _merchant_products(items)


class _LineBuilder(TreeBuilder):
    """An ElementTree builder that notes each element's start line (for the rejected-row report)."""

    def __init__(self) -> None:
        super().__init__()
        self.parser: Any = None
        self.lines: dict[int, int] = {}

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        element = super().start(tag, attrs)
        self.lines[id(element)] = self.parser.parser.CurrentLineNumber
        return element


def read_merchant_xml(path: Path) -> Iterator[_Row]:
    """A Merchant Center XML feed: RSS 2.0 ``<item>`` or Atom ``<entry>`` elements, ``g:`` fields."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    builder = _LineBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True)
    builder.parser = parser
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                parser.feed(chunk)
        root = parser.close()
    except DefusedXmlException as exc:
        raise CatalogError(f"{path.name}: refused XML ({type(exc).__name__}: DTDs and entities are not allowed)") from None
    except SyntaxError as exc:  # xml.etree.ElementTree.ParseError
        raise CatalogError(f"{path.name}: not well-formed XML: {exc}") from None
    atom = "{http://www.w3.org/2005/Atom}"
    entries = root.findall("./channel/item") or root.findall(f"{atom}entry")
    if not entries:
        raise CatalogError(f"{path.name}: no <item> (RSS 2.0) or <entry> (Atom) elements")
    items: list[tuple[int, dict[str, str] | str]] = []
    for entry in entries:
        fields: dict[str, str] = {}
        for child in entry:
            tag = child.tag
            if tag.startswith(f"{{{G_NS}}}"):
                name = tag[len(G_NS) + 2 :]
            elif tag.startswith(atom):
                name = {"summary": "description", "content": "description"}.get(tag[len(atom):], tag[len(atom):])
                if name == "link" and child.get("href"):
                    fields.setdefault("link", child.get("href", ""))
                    continue
            elif "}" not in tag:
                name = tag
            else:
                continue  # another namespace
            text = "".join(child.itertext()).strip()
            key = _merchant_key(name)
            if text and key not in fields:  # the g: form and the plain one: the first wins
                fields[key] = text
        items.append((builder.lines.get(id(entry), 0), fields))
    yield from _merchant_products(items)


def detect_format(path: Path) -> str:
    """``catalog``, ``shopify`` or ``merchant`` for a product file, from its type and header."""
    suffix = path.suffix.lower()
    if suffix in (".xml", ".rss", ".atom"):
        return "merchant"
    if suffix == ".tsv":
        return "merchant"  # a .txt feed (Merchant Center accepts them) needs fmt="merchant"
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
        if is_shopify_header(header):
            return "shopify"
    return "catalog"  # the catalogue's own columns (id, title, price ... share names with Merchant's)


def read_feed(path: Path, fmt: str, *, currency: str = "USD") -> Iterator[_Row]:
    """The product rows of a Shopify or Merchant Center file."""
    if fmt == "shopify":
        if path.suffix.lower() != ".csv":
            raise CatalogError(f"{path.name}: a Shopify product export is a .csv file")
        return read_shopify_csv(path, currency=currency)
    if fmt == "merchant":
        if path.suffix.lower() in (".xml", ".rss", ".atom"):
            return read_merchant_xml(path)
        return read_merchant_tsv(path)
    raise CatalogError(f"unknown feed format {fmt!r}; use one of {', '.join(FEED_FORMATS)}")
