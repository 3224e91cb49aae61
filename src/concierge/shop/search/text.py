"""Search text: tokenising with light plural stemming, the texts of a product and a variant, and the
hashing embedder (a model-free ``embed`` for tests, demos and the proof report)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Mapping

import numpy as np

from concierge.shop.catalog import Product, Variant

Embedder = Callable[[list[str]], np.ndarray]


PROBE_TEXT = "concierge embedder probe: a blue cotton t-shirt"


STOPWORDS = frozenset(
    "a an and are as at be but by for from has have i in is it its me my of on or our so that the this "
    "to was we with you your".split()
)
_TOKEN_RE = re.compile(r"[a-z0-9]+")


_stem_cache: dict[str, str] = {}


def _stem(token: str) -> str:
    """Light plural stemming: sneakers -> sneaker, dresses -> dress, batteries -> battery."""
    out = _stem_cache.get(token)
    if out is None:
        out = token
        if len(token) > 3 and not token.isdigit():
            if token.endswith("ies") and len(token) > 4:
                out = token[:-3] + "y"
            elif token.endswith(("sses", "xes", "zes", "ches", "shes")):
                out = token[:-2]
            elif token.endswith("s") and not token.endswith(("ss", "us", "is")):
                out = token[:-1]
        if len(_stem_cache) < 500_000:
            _stem_cache[token] = out
    return out


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, lightly stemmed (the same for documents and queries)."""
    return [_stem(t) for t in _TOKEN_RE.findall(text.lower()) if t not in STOPWORDS]


def _attr_text(attributes: Mapping[str, str | list[str]]) -> str:
    parts = []
    for key, value in attributes.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"{key} {' '.join(values)}")
    return ". ".join(parts)


def product_text(product: Product) -> str:
    """The product's own text (no variant options): what keyword exclusions look at, with the options."""
    return " . ".join(
        x
        for x in (
            product.title,
            product.description,
            product.category,
            product.brand,
            _attr_text(product.attributes),
        )
        if x
    )


def variant_text(variant: Variant) -> str:
    return " ".join(variant.options.values())


def embed_text(product: Product) -> str:
    """What the dense side embeds: the most telling fields first (small models truncate)."""
    options: list[str] = []
    for v in product.variants:
        for value in v.options.values():
            if value not in options:
                options.append(value)
    head = ". ".join(x for x in (product.title, product.category, product.brand) if x)
    attrs = _attr_text(product.attributes)
    return ". ".join(x for x in (head, attrs, ", ".join(options), product.description) if x)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class HashingEmbedder:
    """A cheap deterministic embedder: hashed bag of words and word bigrams, unit-normalised.

    No model, no download: for tests, benchmarks of the index itself, and a last-resort fallback.
    It knows nothing of synonyms -- only shared words bring texts together.
    """

    def __init__(self, dim: int = 384, bigram_weight: float = 0.5) -> None:
        self.dim = dim
        self.bigram_weight = bigram_weight
        self._slots: dict[str, tuple[int, float]] = {}

    def _slot(self, feature: str) -> tuple[int, float]:
        slot = self._slots.get(feature)
        if slot is None:
            h = zlib.crc32(feature.encode())
            slot = (h % self.dim, 1.0 if (h >> 31) & 1 else -1.0)
            if len(self._slots) < 1_000_000:
                self._slots[feature] = slot
        return slot

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            vec = out[row]
            for tok in tokens:
                i, s = self._slot(tok)
                vec[i] += s
            for a, b in zip(tokens, tokens[1:], strict=False):
                i, s = self._slot(f"{a} {b}")
                vec[i] += s * self.bigram_weight
            norm = float(np.linalg.norm(vec))
            if norm > 0:
                vec /= norm
        return out
