"""The in-memory catalogue: products and variants by id, categories and attribute values."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from concierge.shop.catalog.readers import _read_records
from concierge.shop.catalog.schema import CatalogError, CatalogValidationError, Product, Variant
from concierge.shop.catalog.validation import _validate_products


class Catalog:
    """An in-memory catalogue with O(1) lookup of products and variants by id."""

    def __init__(self, products: Iterable[Product], tenant: str = "", name: str = "") -> None:
        self.tenant = tenant
        self.name = name
        self.products: list[Product] = list(products)
        self._products = {p.id: p for p in self.products}
        self._variants = {v.id: v for p in self.products for v in p.variants}
        if len(self._products) != len(self.products):
            raise CatalogError("duplicate product ids")

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], tenant: str = "", name: str = "") -> Catalog:
        """Validate product records (the JSONL form); raises :class:`CatalogValidationError`."""
        products, rejected, _ = _validate_products(_read_records(records))
        if rejected:
            raise CatalogValidationError(rejected)
        return cls(products, tenant=tenant, name=name)

    @classmethod
    def from_snapshot(cls, records: Iterable[Mapping[str, Any]], tenant: str = "", name: str = "") -> Catalog:
        """Rebuild from records this module wrote (``Product.to_record``) without re-validating them."""
        products = []
        for r in records:
            variants = tuple(
                Variant(v["id"], r["id"], dict(v["options"]), float(v["price"]), v["stock"])
                for v in r["variants"]
            )
            products.append(
                Product(
                    id=r["id"],
                    title=r["title"],
                    description=r["description"],
                    category=r["category"],
                    brand=r["brand"],
                    price=float(r["price"]),
                    currency=r["currency"],
                    attributes=dict(r["attributes"]),
                    image_url=r["image_url"],
                    variants=variants,
                )
            )
        return cls(products, tenant=tenant, name=name)

    def __len__(self) -> int:
        return len(self.products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._products or item_id in self._variants

    def product(self, product_id: str) -> Product:
        return self._products[product_id]

    def variant(self, variant_id: str) -> Variant:
        return self._variants[variant_id]

    def get_product(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def get_variant(self, variant_id: str) -> Variant | None:
        return self._variants.get(variant_id)

    def resolve(self, item_id: str) -> tuple[Product, Variant | None]:
        """A variant id -> (its product, the variant); a product id -> (product, None). KeyError if neither."""
        variant = self._variants.get(item_id)
        if variant is not None:
            return self._products[variant.product_id], variant
        return self._products[item_id], None

    def variants(self) -> Iterator[Variant]:
        for p in self.products:
            yield from p.variants

    @property
    def variant_count(self) -> int:
        return len(self._variants)

    def categories(self) -> dict[str, int]:
        """Every category path and each of its prefixes -> number of products under it."""
        counts: dict[str, int] = {}
        for p in self.products:
            path = p.category_path
            for i in range(1, len(path) + 1):
                key = " > ".join(path[:i])
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def attribute_values(self) -> dict[str, set[str]]:
        """Attribute/option name -> the values seen (lower-cased); lets a query parser know the vocabulary."""
        out: dict[str, set[str]] = {}
        for p in self.products:
            for key, value in p.attributes.items():
                values = value if isinstance(value, list) else [value]
                out.setdefault(key, set()).update(v.lower() for v in values)
            for v in p.variants:
                for key, value in v.options.items():
                    out.setdefault(key, set()).add(value.lower())
        return out

    def to_records(self) -> list[dict[str, Any]]:
        return [p.to_record() for p in self.products]
