"""Grounding: nothing reaches a shopper unless the catalogue backs it.

Two validators, both deterministic and independent of the search index:

* :func:`validate_products` checks every proposed product card against the catalogue itself (not the
  index snapshot): the product exists, the card names one exact sellable variant of it, the variant is
  in stock, the card shows the catalogue's title and price, and the variant meets every hard constraint
  (price bounds on the variant price, category prefix, attribute values, exclusions). Cards that fail are
  dropped, never shown.
* :class:`TextChecker` reads an answer text and flags any product title, product/variant id, brand or
  price it mentions that the validated cards do not back.

Both report which checks ran, so an answer carries its own audit trail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from concierge.shop.catalog import Catalog, Product, Variant
from concierge.shop.search import SearchFilters, product_text, tokenize, variant_text

PRODUCT_CHECKS = (
    "in_catalog",
    "exact_variant",
    "in_stock",
    "title_price_match",
    "price_bounds",
    "category",
    "attributes",
    "exclusions",
)
TEXT_CHECKS = ("text_titles", "text_ids", "text_brands", "text_prices", "text_colours")


def _norm_path(value: str) -> list[str]:
    return [seg.strip().lower() for seg in value.split(">") if seg.strip()]


def _fmt_price(value: float) -> str:
    return f"${value:,.2f}".replace(".00", "")


@dataclass
class HardConstraints:
    """What every shown variant must satisfy; the single source for search filters and validation."""

    price_min: float | None = None
    price_max: float | None = None
    categories: list[str] = field(default_factory=list)  # any of these path prefixes
    attributes: dict[str, list[str]] = field(default_factory=dict)  # key -> any of these values
    exclude_attributes: dict[str, list[str]] = field(default_factory=dict)
    exclude_terms: list[str] = field(default_factory=list)
    in_stock: bool = True

    def to_filters(self, **extra: Any) -> SearchFilters:
        return SearchFilters(
            min_price=self.price_min,
            max_price=self.price_max,
            categories=tuple(self.categories),
            attributes={k: set(v) for k, v in self.attributes.items()},
            in_stock=self.in_stock,
            exclude_attributes={k: set(v) for k, v in self.exclude_attributes.items()},
            exclude_terms=tuple(self.exclude_terms),
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardConstraints:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def describe(self) -> str:
        """A short phrase for answers: "in blue, under $50, without leather"."""
        parts: list[str] = []
        for key, values in self.attributes.items():
            joined = " or ".join(values)
            parts.append(f"in {joined}" if key in ("color", "colour") else f"{key} {joined}")
        if self.price_min is not None and self.price_max is not None:
            parts.append(f"between {_fmt_price(self.price_min)} and {_fmt_price(self.price_max)}")
        elif self.price_max is not None:
            parts.append(f"under {_fmt_price(self.price_max)}")
        elif self.price_min is not None:
            parts.append(f"over {_fmt_price(self.price_min)}")
        excluded = [v for vals in self.exclude_attributes.values() for v in vals] + list(self.exclude_terms)
        if excluded:
            parts.append("without " + " or ".join(excluded))
        return ", ".join(parts)


@dataclass
class Violation:
    item: str  # the variant/product id, or the offending text
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.item}: {self.detail}"


@dataclass
class GroundingReport:
    """Which checks ran, what failed, and how the answer text was finally produced."""

    checks: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # card ids removed by the product validator
    text_source: str = ""  # "model" | "model-repaired" | "template" | "clarifying"
    attempts: int = 0  # model answer generations tried
    text_violations: list[Violation] = field(default_factory=list)

    def add_checks(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.checks:
                self.checks.append(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": list(self.checks),
            "violations": [str(v) for v in self.violations],
            "dropped": list(self.dropped),
            "text_source": self.text_source,
            "attempts": self.attempts,
            "text_violations": [str(v) for v in self.text_violations],
        }


# --------------------------------------------------------------------------------------------------
# Products


def _values(product: Product, variant: Variant, key: str) -> set[str]:
    """The variant's value(s) for an attribute: its option, else the product attribute (brand too)."""
    key = key.lower()
    options = {k.lower(): v for k, v in variant.options.items()}
    if key in options:
        return {options[key].lower()}
    attrs = {k.lower(): v for k, v in product.attributes.items()}
    if key in attrs:
        value = attrs[key]
        return {v.lower() for v in (value if isinstance(value, list) else [value])}
    if key == "brand" and product.brand:
        return {product.brand.lower()}
    return set()


def check_variant(
    catalog: Catalog,
    variant_id: str,
    constraints: HardConstraints,
    *,
    product_id: str | None = None,
    title: str | None = None,
    price: float | None = None,
) -> list[Violation]:
    """Every violation of one proposed card (empty list: the card is grounded)."""
    out: list[Violation] = []
    variant = catalog.get_variant(variant_id)
    if variant is None:
        kind = (
            "a product id, not a sellable variant" if catalog.get_product(variant_id) else "not in catalogue"
        )
        return [Violation(variant_id, "in_catalog" if kind.startswith("not") else "exact_variant", kind)]
    product = catalog.get_product(variant.product_id)
    if product is None:
        return [Violation(variant_id, "in_catalog", "variant without a product")]
    if product_id is not None and product_id != product.id:
        out.append(Violation(variant_id, "exact_variant", f"belongs to {product.id}, card says {product_id}"))
    if not variant.in_stock:
        out.append(Violation(variant_id, "in_stock", "sold out"))
    if title is not None and title != product.title:
        out.append(Violation(variant_id, "title_price_match", f"title {title!r} is not {product.title!r}"))
    if price is not None and abs(float(price) - variant.price) > 0.005:
        out.append(Violation(variant_id, "title_price_match", f"price {price} is not {variant.price}"))
    c = constraints
    if c.price_min is not None and variant.price < c.price_min - 1e-9:
        out.append(Violation(variant_id, "price_bounds", f"{variant.price} < {c.price_min}"))
    if c.price_max is not None and variant.price > c.price_max + 1e-9:
        out.append(Violation(variant_id, "price_bounds", f"{variant.price} > {c.price_max}"))
    if c.categories:
        path = _norm_path(product.category)
        if not any((w := _norm_path(cat)) and path[: len(w)] == w for cat in c.categories):
            out.append(Violation(variant_id, "category", f"{product.category!r} not under {c.categories}"))
    for key, wanted in c.attributes.items():
        if not _values(product, variant, key) & {w.lower() for w in wanted}:
            out.append(Violation(variant_id, "attributes", f"{key} is not one of {wanted}"))
    for key, unwanted in c.exclude_attributes.items():
        hit = _values(product, variant, key) & {u.lower() for u in unwanted}
        if hit:
            out.append(Violation(variant_id, "exclusions", f"{key} {sorted(hit)} is excluded"))
    if c.exclude_terms:
        words = set(tokenize(product_text(product))) | set(tokenize(variant_text(variant)))
        for term in c.exclude_terms:
            toks = set(tokenize(term))
            if toks and toks <= words:
                out.append(Violation(variant_id, "exclusions", f"mentions excluded {term!r}"))
    return out


def validate_products(
    cards: Sequence[Mapping[str, Any]],
    catalog: Catalog,
    constraints: HardConstraints,
    report: GroundingReport | None = None,
) -> tuple[list[dict[str, Any]], GroundingReport]:
    """Keep only grounded cards (``id`` = variant id); the report lists what was dropped and why."""
    report = report or GroundingReport()
    report.add_checks(PRODUCT_CHECKS)
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for card in cards:
        vid = str(card.get("id", ""))
        problems = check_variant(
            catalog,
            vid,
            constraints,
            product_id=card.get("product_id"),
            title=card.get("title"),
            price=card.get("price"),
        )
        if vid in seen:
            problems.append(Violation(vid, "exact_variant", "listed twice"))
        if problems:
            report.violations.extend(problems)
            report.dropped.append(vid)
            continue
        seen.add(vid)
        kept.append(dict(card))
    return kept, report


# --------------------------------------------------------------------------------------------------
# Text

_ID_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9]")
_PRICE = re.compile(
    r"(?:[$€£]\s?(\d[\d,]*(?:\.\d{1,2})?))|(?:\b(\d[\d,]*(?:\.\d{1,2})?)\s?(?:dollars|usd|bucks)\b)", re.I
)


def _shape(token: str) -> str:
    return re.sub(r"[0-9]", "9", re.sub(r"[A-Za-z]", "A", token))


_BOUND_CUE = re.compile(
    r"(?:under|below|less than|up to|no more than|at most|within|budget(?: of)?|max(?:imum)?|min(?:imum)?(?: of)?|between|and|"
    r"from|to|over|above|more than|at least|around|about)\s*$",
    re.I,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


class TextChecker:
    """Finds mentions in an answer text that the validated products do not back (built once per catalogue).

    Checks: other catalogue titles, ids (real or id-shaped), brands of no product shown, and -- sentence by
    sentence -- prices and colours: a price must be the price of a product named in that sentence (any
    shown product's when none is named), or a budget bound after "under"/"between"...; a colour must be one
    of those products' colours, or one the shopper named.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        titles: dict[str, set[str]] = {}
        for p in catalog.products:
            titles.setdefault(p.title.lower(), set()).add(p.id)
        # Longest first, so a title inside a longer one is attributed to the longer one.
        self.titles = sorted(titles.items(), key=lambda kv: -len(kv[0]))
        self.brands = sorted({p.brand for p in catalog.products if p.brand}, key=len, reverse=True)
        self._brand_re = {
            b: re.compile(rf"(?<![A-Za-z0-9]){re.escape(b)}(?![A-Za-z0-9])") for b in self.brands
        }
        # Id shapes ("A999999-99" for "P000123-01") catch invented ids that look like real ones.
        self.id_shapes = {
            _shape(i) for p in catalog.products for i in [p.id, *(v.id for v in p.variants)] if len(i) >= 4
        }
        self.colour_key = next(
            (k for k in ("color", "colour") if any(k in v.options for v in catalog.variants())), None
        )
        colours = (
            {v.options.get(self.colour_key, "").lower() for v in catalog.variants()} - {""}
            if self.colour_key
            else set()
        )
        # Only colour words that are not also ordinary words of the catalogue's titles ("natural", "clear").
        self.colours = {c for c in colours if c.isalpha() and len(c) >= 3}
        self._colour_re = {c: re.compile(rf"(?<![a-z]){re.escape(c)}(?![a-z])") for c in self.colours}

    def _product_colours(self, product_id: str) -> set[str]:
        product = self.catalog.get_product(product_id)
        if product is None or not self.colour_key:
            return set()
        # Every value the product has counts: colour-like options ("dial color", "lens color") and the
        # attributes a colour word can also be ("cream" makeup, a "brass" lamp).
        values = {str(value).lower() for v in product.variants for value in v.options.values()}
        for value in product.attributes.values():
            values |= {str(x).lower() for x in (value if isinstance(value, list) else [value])}
        return values - {""}

    def check(
        self,
        text: str,
        cards: Sequence[Mapping[str, Any]],
        extra_prices: Iterable[float] = (),
        extra_words: Iterable[str] = (),
    ) -> list[Violation]:
        """``extra_prices``: the shopper's budget bounds; ``extra_words``: values the shopper named."""
        out: list[Violation] = []
        allowed_products = {str(c.get("product_id")) for c in cards}
        allowed_ids = allowed_products | {str(c.get("id")) for c in cards}
        allowed_titles = {str(c.get("title", "")).lower() for c in cards}
        allowed_brands = {str(c.get("brand") or "") for c in cards}
        for c in cards:
            product = self.catalog.get_product(str(c.get("product_id")))
            if product is not None:
                allowed_brands.add(product.brand)
        low = text.lower()
        # Titles: blank out the allowed ones first, then any other catalogue title left is a violation.
        for title in allowed_titles:
            if title:
                low = low.replace(title, " " * len(title))
        named = {w.lower() for w in extra_words}  # an option value the shopper named ("laptop" compartment)
        # ... or a shown card's own ("compartment is laptop, not hydration")
        named |= {str(v).lower() for c in cards for v in (c.get("options") or {}).values()}
        for title, pids in self.titles:
            if len(title) >= 4 and title in low and not pids & allowed_products and title not in named:
                out.append(Violation(title, "text_titles", "names a product that is not in the answer"))
                low = low.replace(title, " " * len(title))
        card_prices = [float(c["price"]) for c in cards if c.get("price") is not None]
        bounds = [float(p) for p in extra_prices]
        allowed_numbers = {f"{p:.2f}" for p in card_prices + bounds}
        allowed_numbers |= {str(int(p)) for p in card_prices + bounds if p == int(p)}
        for match in _ID_TOKEN.finditer(text):
            token = match.group(0).rstrip(".")
            if token in allowed_ids or token.replace(",", "") in allowed_numbers:
                continue
            if token in self.catalog:
                out.append(Violation(token, "text_ids", "catalogue id that is not in the answer"))
            elif _shape(token) in self.id_shapes and any(ch.isdigit() for ch in token):
                out.append(Violation(token, "text_ids", "looks like a product id but is not in the answer"))
        # Brands: inside an allowed title a brand-like word is part of that title, not a mention.
        masked = text
        for title in sorted(allowed_titles, key=len, reverse=True):
            if title:
                masked = re.sub(re.escape(title), " ", masked, flags=re.IGNORECASE)
        for brand in self.brands:
            if brand not in allowed_brands and self._brand_re[brand].search(masked):
                out.append(Violation(brand, "text_brands", "brand of no product in the answer"))
        out += self._check_sentences(text, cards, bounds, {w.lower() for w in extra_words})
        return out

    def _check_sentences(
        self, text: str, cards: Sequence[Mapping[str, Any]], bounds: list[float], words: set[str]
    ) -> list[Violation]:
        """Prices and colours, each tied to the products named in its own sentence."""
        out: list[Violation] = []
        # Titles become placeholders first, so "Pavement Co. Sneaker" is not split into two sentences.
        placeholder = text
        # Cards that share a title (two products, or two variants, of one name) are named together.
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for card in cards:
            title = str(card.get("title", ""))
            if title:
                groups.setdefault(title.lower(), []).append(card)
        titles = sorted(groups, key=len, reverse=True)
        for i, title in enumerate(titles):
            placeholder = re.sub(re.escape(title), f" \u27e6{i}\u27e7 ", placeholder, flags=re.IGNORECASE)
        for sentence in _SENTENCE_SPLIT.split(placeholder):
            named = [c for i in re.findall("\u27e6(\\d+)\u27e7", sentence) for c in groups[titles[int(i)]]]
            scope = named or list(cards)
            prices = [float(c["price"]) for c in scope if c.get("price") is not None]
            bare = re.sub("\u27e6\\d+\u27e7", " ", sentence)
            for match in _PRICE.finditer(bare):
                raw = (match.group(1) or match.group(2) or "").replace(",", "")
                try:
                    value = float(raw)
                except ValueError:
                    continue
                if any(abs(value - p) < 0.011 or (value == int(value) and round(p) == value) for p in prices):
                    continue
                if any(abs(value - b) < 0.011 for b in bounds) and _BOUND_CUE.search(bare[: match.start()]):
                    continue
                what = "the products it names" if named else "any product shown"
                out.append(Violation(match.group(0), "text_prices", f"not the price of {what}"))
            if self.colours:
                allowed = set(words)
                for c in scope:
                    allowed |= self._product_colours(str(c.get("product_id")))
                # A value the shopper named is not a colour claim ("warm white" light, "rose gold").
                masked = bare.lower()
                for word in sorted(words, key=len, reverse=True):
                    if len(word) > 3:
                        masked = masked.replace(word, " ")
                # A product's own colour of several words holds colour words ("space grey": not grey).
                for colour in sorted(allowed, key=len, reverse=True):
                    if " " in colour:
                        masked = masked.replace(colour, " ")
                for colour, pattern in self._colour_re.items():
                    if colour not in allowed and pattern.search(masked):
                        out.append(Violation(colour, "text_colours", "not a colour of the products it names"))
        return out
