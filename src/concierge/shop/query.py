"""Query understanding: a shopper's conversation -> a :class:`StructuredQuery` -> hard constraints.

Two readers, merged:

* a **rule parser** over the catalogue's own vocabulary (:class:`ShopVocabulary`): price phrases
  ("under $50", "between 20 and 40", "cheaper"), category path words and synonyms ("trainers" ->
  Sneakers), attribute values (colours, materials, sizes, booleans such as "waterproof"), brands,
  negations ("not leather", "no wool", "without red") and occasions (gift, wedding, hiking ...);
* the **model**, by constrained decoding (a ``json_schema`` response format listing the store's
  categories and attribute names), see :func:`model_delta`. Its output is validated with jsonschema
  and every hard value must be evidenced by the shopper's own words, or it is dropped.

Rules win on the hard constraints they detected with certainty; the model only fills gaps. A turn is a
*delta* applied to the previous turn's query (:func:`update_query`): "cheaper", "in blue", "not
leather" refine it, "show me boots instead" switches category and keeps the budget, a fresh request
starts over. A request with no category, attribute or catalogue keyword at all is *vague*.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from concierge.shop.catalog import Catalog
from concierge.shop.grounding import HardConstraints
from concierge.shop.search import STOPWORDS, tokenize

# --------------------------------------------------------------------------------------------------
# Errors (the HTTP layer maps ``status_code``/``code``; the CLI prints the message)


class ShopError(Exception):
    """Base of the shop assistant's caller-facing errors."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = "bad_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ShopRequestError(ShopError):
    """A malformed request: empty or badly shaped messages, a bad argument."""


class ShopperNotFoundError(ShopError):
    status_code = 404
    code = "shopper_not_found"


class ProductNotFoundError(ShopError):
    status_code = 404
    code = "product_not_found"


class CatalogNotFoundError(ShopError):
    status_code = 404
    code = "catalog_not_found"


# --------------------------------------------------------------------------------------------------
# The structured query

Sort = Literal["relevance", "price_asc", "price_desc"]
SORTS = ("relevance", "price_asc", "price_desc")


class StructuredQuery(BaseModel):
    """What the shopper wants, in catalogue terms.

    ``category`` is a category path ("Women > Shoes > Boots"), a run of path segments that may occur in
    several places ("Boots" = women's and men's boots), or alternatives joined by " | ".
    """

    model_config = ConfigDict(extra="forbid")

    keywords: str = ""
    category: str | None = None
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    occasion: str | None = None
    exclusions: list[str] = Field(default_factory=list)
    sort: Sort = "relevance"


STRUCTURED_QUERY_SCHEMA: dict[str, Any] = StructuredQuery.model_json_schema()


def validate_query_dict(data: Any) -> StructuredQuery:
    """A StructuredQuery from a dict (e.g. conversation state); ShopRequestError if it does not fit."""
    try:
        jsonschema.validate(data, STRUCTURED_QUERY_SCHEMA)
        return StructuredQuery.model_validate(data)
    except (jsonschema.ValidationError, ValueError) as exc:
        raise ShopRequestError(
            f"invalid structured query: {str(exc).splitlines()[0]}", param="state"
        ) from None


# --------------------------------------------------------------------------------------------------
# Vocabulary of one catalogue

# Generic retail words -> a category segment name; used only where the catalogue has that segment.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sneakers": ("trainer", "kicks", "running shoe", "tennis shoe", "sneaker"),
    "boots": ("boot", "bootie"),
    "sandals": ("sandal", "flip flop", "slide", "espadrille"),
    "shoes": ("footwear", "shoe"),
    "dresses": ("dress", "gown", "frock"),
    "tops": ("top", "blouse", "tee", "t-shirt", "tshirt", "sweater", "cardigan", "jumper", "tunic"),
    "trousers": ("pant", "jean", "chino", "slack", "jogger", "culotte", "trouser"),
    "shirts": ("shirt", "polo", "henley", "t-shirt", "tshirt", "tee"),
    "jackets": ("jacket", "coat", "parka", "blazer", "outerwear", "anorak"),
    "clothing": ("clothes", "apparel", "outfit"),
    "handbags": ("handbag", "purse", "tote", "clutch", "crossbody"),
    "backpacks": ("backpack", "rucksack", "daypack", "knapsack"),
    "travel": ("luggage", "suitcase", "duffel", "carry-on", "weekender"),
    "bags": ("bag",),
    "bedding": ("sheet", "duvet", "quilt", "bed linen", "pillowcase"),
    "lighting": ("lamp", "sconce", "pendant light", "floor light"),
    "cushions & throws": ("cushion", "pillow", "throw", "blanket"),
    "storage": ("organizer", "organiser", "basket", "hamper"),
    "cookware": ("pan", "pot", "skillet", "wok", "dutch oven", "saucepan", "cookware"),
    "tableware": ("plate", "mug", "bowl", "dish", "dinnerware", "tumbler", "platter"),
    "appliances": ("kettle", "blender", "toaster", "espresso machine", "coffee machine", "mixer", "grinder"),
    "headphones": ("earbud", "earphone", "headset", "headphone"),
    "phone cases": ("phone case", "iphone case", "phone cover"),
    "chargers & cables": ("charger", "cable", "power bank", "charging pad"),
    "laptop sleeves": ("laptop sleeve", "laptop case", "laptop stand", "tablet sleeve"),
    "skincare": ("skin care", "moisturiser", "moisturizer", "serum", "cleanser", "sunscreen", "face cream"),
    "fragrance": ("perfume", "cologne", "scent", "fragrance"),
    "makeup": ("make-up", "make up", "lipstick", "mascara", "foundation", "cosmetic", "eyeliner"),
    "tents": ("tent",),
    "sleeping bags": ("sleeping bag", "sleeping pad"),
    "gear": ("trekking pole", "headlamp", "water filter", "camp stove"),
    "building sets": ("lego", "building block", "construction set", "magnetic tile", "marble run"),
    "plush": ("teddy", "teddy bear", "stuffed animal", "soft toy", "plushie", "plush toy"),
    "games & puzzles": ("puzzle", "board game", "jigsaw", "card game"),
    "toys": ("toy",),
    "electronics": ("gadget", "tech"),
    "decor": ("decoration", "home decor"),
    "outdoor": ("outdoors",),
}

COLOUR_SYNONYMS = {
    "gray": "grey", "navy blue": "navy", "off-white": "cream", "ivory": "cream", "tan": "beige",
    "camel": "beige", "maroon": "burgundy", "wine": "burgundy", "khaki": "beige", "charcoal": "grey",
    "golden": "gold", "multicoloured": "multicolor", "multicolored": "multicolor", "rainbow": "multicolor",
}  # fmt: skip

GENDER_WORDS = {
    "women": ("women", "womens", "women's", "woman", "ladies", "lady", "female", "for her", "girls"),
    "men": ("men", "mens", "men's", "man", "gents", "male", "for him", "guys", "boys"),
}

OCCASIONS: dict[str, tuple[str, ...]] = {
    "gift": ("gift", "present", "birthday", "christmas", "xmas", "anniversary", "housewarming",
             "valentine", "mother's day", "father's day", "stocking stuffer"),
    "wedding": ("wedding", "bridesmaid", "bride", "groom"),
    "hiking": ("hiking", "hike", "trekking", "trek"),
    "camping": ("camping", "campsite"),
    "running": ("running", "jogging", "marathon"),
    "travel": ("travel", "trip", "vacation", "holiday", "travelling", "traveling"),
    "work": ("office", "work", "business"),
    "party": ("party", "night out", "date night"),
    "beach": ("beach", "pool"),
    "gym": ("gym", "workout", "fitness"),
    "winter": ("winter", "snow", "cold weather"),
    "summer": ("summer", "hot weather"),
}  # fmt: skip

# Words that carry no product meaning in a shopping request.
GENERIC_WORDS = frozenset(
    """need want wanted looking look find show get buy buying purchase something anything stuff thing things
    item items product products some any good nice great best new please help recommend recommendation
    suggest suggestion like love would could can should might maybe just also really very one ones
    pair pairs kind sort type cool perfect idea ideas options option choice choices what which who
    how about instead rather else other another more less me my mine her his their them him us our
    i'm im i'd id ive i've it's hi hello hey thanks thank you there here today tomorrow now
    cheap cheaper cheapest expensive pricier priciest affordable budget price prices priced cost costs
    dollar dollars usd bucks under below over above between around less than least most much color colour
    size sized same similar different exactly only still well yes no ok okay sure store shop shopping
    wear wearing use using go going got give giving gift present do does did doing have has had having
    is are was were be been being not don't dont see seen tell let lets know got gotten will shall may
    must too so such this that these those there then than into onto up down out off""".split()
)

_NEGATION = re.compile(
    r"(?<![a-z0-9])(?:not|no|without|except|excluding|avoid|anything but|nothing in|don'?t want|do not want|"
    r"don'?t like|do not like|hate|allergic to|non|never)(?![a-z0-9])[\s-]*(?:made (?:of|from|with)\s+|"
    r"in\s+|from\s+|any\s+|a\s+|an\s+)?"
)
_REPLACE_CUES = re.compile(
    r"(?<![a-z0-9])(?:instead|what about|how about|rather|switch to|change to|show me some|same but|"
    r"what do you have in|any in|those in|these in|them in|ones in)(?![a-z0-9])"
)
_CHEAPER = re.compile(
    r"(?<![a-z0-9])(?:cheaper|less expensive|lower price[sd]?|more affordable|too expensive|too pricey|"
    r"too much|over my budget|less pricey|lower cost)(?![a-z0-9])"
)
_PRICIER = re.compile(
    r"(?<![a-z0-9])(?:more expensive|pricier|higher end|high end|higher quality|more premium|fancier|"
    r"better quality|too cheap)(?![a-z0-9])"
)
_SORT_ASC = re.compile(
    r"(?<![a-z0-9])(?:cheapest|lowest price[sd]?|least expensive|budget|affordable|cheap|inexpensive)(?![a-z0-9])"
)
_SORT_DESC = re.compile(
    r"(?<![a-z0-9])(?:most expensive|priciest|luxury|luxurious|top of the range|highest price[sd]?)(?![a-z0-9])"
)

_NUM = r"(\d{1,6}(?:[.,]\d{1,2})?)"
_CUR = r"(?:[$€£]\s*)"
_CUR_AFTER = r"(?:\s*(?:dollars?|usd|bucks|euros?|eur|pounds?|gbp)(?![a-z0-9]))"
# A number followed by a unit is a size or capacity, never a price.
_UNIT_AFTER = r"(?!\s*(?:cm|mm|ml|l|w|in|inch|inches|h|hours?|person|people|pieces?|pcs|x|gb|mah|kg|g|c|years?|yrs?|months?|\+|%|-person)(?![a-z0-9]))"
_PRICE_BETWEEN = re.compile(
    rf"(?:between|from)\s+{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:and|to|-|–)\s*{_CUR}?{_NUM}{_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_RANGE = re.compile(rf"{_CUR}{_NUM}\s*(?:-|–|to)\s*{_CUR}?{_NUM}(?![\d])")
_PRICE_MAX = re.compile(
    rf"(?:under|below|less than|cheaper than|up to|no more than|not more than|max(?:imum)?(?: of)?|at most|"
    rf"within|budget (?:of|is)|budget:?|for less than|<=?|tops)\s*{_CUR}?{_NUM}(?![\d]){_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_MAX_AFTER = re.compile(
    rf"{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:or less|or under|or below|max(?:imum)?|tops|or cheaper)(?![a-z0-9])"
)
_PRICE_MIN = re.compile(
    rf"(?:over|above|more than|at least|starting at|min(?:imum)?(?: of)?|>=?|upwards of)\s*{_CUR}?{_NUM}(?![\d])"
    rf"{_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_MIN_AFTER = re.compile(rf"{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:or more|and up|and above|\+)(?![a-z0-9])")
_PRICE_AROUND = re.compile(
    rf"(?:around|about|roughly|approximately|approx\.?|~)\s*(?:{_CUR}{_NUM}|{_NUM}{_CUR_AFTER})(?![\d])"
)
_PRICE_BARE = re.compile(rf"(?:{_CUR}{_NUM}(?![\d])|(?<![a-z0-9.]){_NUM}{_CUR_AFTER})")

_SIZE_WORDS = {"extra small": "xs", "small": "s", "medium": "m", "large": "l", "extra large": "xl"}
# Values that are ordinary words: they count only next to their attribute name ("size m", "slim fit").
_COMMON_VALUES = frozenset(
    """yes no none all regular small medium large natural solid full twin flat fresh clear dry oily
    sensitive combination adult block s m l x fit""".split()
)


def _num(raw: str) -> float:
    return float(raw.replace(",", "."))


def _word_pattern(word: str, plural: bool) -> str:
    w = re.escape(word)
    if not plural or not word[-1:].isalpha():
        return w
    if word.endswith("y") and len(word) > 3:
        return re.escape(word[:-1]) + r"(?:y|ies)"
    if word.endswith(("s", "x", "ch", "sh")):
        return w + r"(?:es)?"
    return w + r"(?:s|es)?"


def phrase_regex(phrase: str, plural: bool = False) -> re.Pattern[str]:
    """Whole-word, case-folded match of a phrase; spaces and hyphens are interchangeable."""
    words = re.findall(r"[a-z0-9]+|[^\sa-z0-9\-]", phrase.lower())
    if plural and words and words[-1].isalpha():
        stem = tokenize(words[-1])
        words[-1] = stem[0] if stem else words[-1]
    parts = [re.escape(w) for w in words[:-1]] + [_word_pattern(words[-1], plural)] if words else []
    body = r"[\s\-/]*".join(parts)
    return re.compile(rf"(?<![a-z0-9]){body}(?![a-z0-9])")


def normalise_text(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-").replace("\u2014", " ")
    return " ".join(text.lower().split())


@dataclass
class _Mention:
    start: int
    end: int
    paths: frozenset[str]
    certain: bool


class ShopVocabulary:
    """Everything the parsers know about one catalogue: categories, attribute values, brands, words."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.categories: dict[str, int] = catalog.categories()  # path (and prefixes) -> product count
        self.leaves = sorted({p.category for p in catalog.products if p.category})
        self._lower_paths = {c.lower(): c for c in self.categories}
        # segment name (lower) -> the path prefixes ending at that segment
        self.segment_paths: dict[str, set[str]] = {}
        for path in self.categories:
            segs = path.split(" > ")
            self.segment_paths.setdefault(segs[-1].lower(), set()).add(path)
        self.top_level = sorted({c for c in self.categories if " > " not in c})

        # Attributes: key -> value -> product count; per leaf: key -> values.
        self.attr_counts: dict[str, Counter[str]] = {}
        self.attr_by_leaf: dict[str, dict[str, set[str]]] = {}
        self.option_keys: set[str] = set()
        tokens: set[str] = set()
        for p in catalog.products:
            leaf = self.attr_by_leaf.setdefault(p.category, {})
            seen: dict[str, set[str]] = {}
            for key, value in p.attributes.items():
                for v in value if isinstance(value, list) else [value]:
                    seen.setdefault(key.lower(), set()).add(str(v).lower())
            for var in p.variants:
                for key, value in var.options.items():
                    self.option_keys.add(key.lower())
                    seen.setdefault(key.lower(), set()).add(value.lower())
            for key, values in seen.items():
                self.attr_counts.setdefault(key, Counter()).update(values)
                leaf.setdefault(key, set()).update(values)
            tokens.update(tokenize(f"{p.title} {p.category} {p.brand} {p.description}"))
            for values in seen.values():
                for v in values:
                    tokens.update(tokenize(v))
        self.tokens = tokens
        self.color_key = next((k for k in ("color", "colour") if k in self.attr_counts), None)
        self.gender_key = "gender" if "gender" in self.attr_counts else None
        self.bool_keys = {k for k, c in self.attr_counts.items() if set(c) <= {"yes", "no"} and k != "brand"}
        self.brands = {p.brand.lower(): p.brand for p in catalog.products if p.brand}
        self.prices = sorted(v.price for v in catalog.variants())
        self._context_values = self._find_context_values()
        self._category_phrases = self._build_category_phrases()
        self._value_patterns = self._build_value_patterns()
        self._brand_patterns = {low: phrase_regex(low) for low in self.brands}
        self._prompt_cache: dict[tuple[int, int], str] = {}
        self._schema: dict[str, Any] | None = None

    # -- construction helpers -----------------------------------------------------------------

    def _find_context_values(self) -> set[tuple[str, str]]:
        """Values that need their attribute name nearby: common words, bare numbers, and values that
        titles use loosely (a "Relaxed" adjective on products whose fit is not relaxed)."""
        out: set[tuple[str, str]] = set()
        # Title words minus the brand ("Linen Loft" is a brand, not a material claim).
        title_tokens = [set(tokenize(p.title)) - set(tokenize(p.brand)) for p in self.catalog.products]
        for key, counts in self.attr_counts.items():
            for value in counts:
                toks = tokenize(value)
                if re.fullmatch(r"x{1,3}[sl]", value):
                    continue  # XS, XL, XXL: unmistakable as written
                if (
                    value in _COMMON_VALUES
                    or len(value) < 3
                    or not any(ch.isalpha() for ch in value)
                    or not toks
                    or (value.endswith("+") and value[:-1].isdigit())
                ):
                    out.add((key, value))
                    continue
                if len(toks) != 1:
                    continue
                tok = toks[0]
                with_token = [i for i, t in enumerate(title_tokens) if tok in t]
                if len(with_token) < 3:
                    continue
                consistent = 0
                for i in with_token:
                    p = self.catalog.products[i]
                    values = _product_values(p, key)
                    consistent += any(value in v for v in values)
                if consistent / len(with_token) < 0.8:
                    out.add((key, value))
        return out

    def _build_category_phrases(self) -> list[tuple[re.Pattern[str], frozenset[str], bool, int]]:
        """(pattern, category paths, certain, specificity) for segment names, synonyms and title words."""
        phrases: dict[str, tuple[set[str], bool]] = {}

        def add(phrase: str, paths: Iterable[str], certain: bool) -> None:
            phrase = phrase.strip().lower()
            if not phrase or phrase in STOPWORDS:
                return
            entry = phrases.setdefault(phrase, (set(), certain))
            entry[0].update(paths)

        gender_tops = {"women", "men"}
        for seg, paths in self.segment_paths.items():
            if seg in gender_tops:
                continue  # handled as gender
            for part in re.split(r"\s*(?:&|,|\band\b)\s*", seg):
                if part:
                    add(part, paths, True)
            if "&" in seg or " and " in seg:
                add(seg, paths, True)
        for seg, words in SYNONYMS.items():
            paths = self.segment_paths.get(seg)
            if paths:
                for word in words:
                    add(word, paths, True)
        # Title words found only in one to three leaves ("chelsea", "espresso") as weak evidence.
        brand_tokens = {t for b in self.brands for t in tokenize(b)}
        value_tokens = {t for counts in self.attr_counts.values() for v in counts for t in tokenize(v)}
        leaves_of: dict[str, Counter[str]] = {}
        for p in self.catalog.products:
            for tok in set(tokenize(p.title)):
                leaves_of.setdefault(tok, Counter())[p.category] += 1
        for tok, leaves in leaves_of.items():
            if (
                sum(leaves.values()) >= 3
                and len(leaves) <= 3
                and len(tok) >= 3
                and not tok.isdigit()
                and tok not in brand_tokens
                and tok not in value_tokens
                and tok not in GENERIC_WORDS
                and tok not in phrases
            ):
                add(tok, leaves, False)
        out = []
        for phrase, (paths, certain) in phrases.items():
            out.append((phrase_regex(phrase, plural=True), frozenset(paths), certain, len(phrase)))
        out.sort(key=lambda x: -x[3])
        return out

    def _build_value_patterns(self) -> list[tuple[re.Pattern[str], str, str]]:
        """(pattern, key, value), longest values first, for every attribute value and colour synonym."""
        out: list[tuple[re.Pattern[str], str, str]] = []
        for key, counts in self.attr_counts.items():
            if key in self.bool_keys or key == self.gender_key:
                continue
            for value in counts:
                out.append((phrase_regex(value), key, value))
        if self.color_key:
            colours = self.attr_counts[self.color_key]
            for word, target in COLOUR_SYNONYMS.items():
                if target in colours:
                    out.append((phrase_regex(word), self.color_key, target))
        out.sort(key=lambda x: -len(x[2]))
        return out

    # -- lookups ------------------------------------------------------------------------------

    def resolve_category(self, category: str | None) -> list[str]:
        """The catalogue path prefixes a category string stands for (empty: unknown or none)."""
        if not category:
            return []
        out: list[str] = []
        for alt in category.split("|"):
            want = [s.strip().lower() for s in alt.split(">") if s.strip()]
            if not want:
                continue
            for path in self.categories:
                segs = [s.lower() for s in path.split(" > ")]
                m = len(want)
                if len(segs) >= m and segs[-m:] == want and path not in out:
                    out.append(path)
        # Keep the most general matches only ("Boots" -> both boot leaves, not their children).
        return [p for p in out if not any(p != q and p.startswith(q + " > ") for q in out)]

    def canonical_category(self, paths: Sequence[str]) -> str | None:
        """A compact category string for a set of paths: one path, a shared segment name, or alternatives."""
        paths = sorted(set(paths))
        if not paths:
            return None
        if len(paths) == 1:
            return paths[0]
        last = {p.split(" > ")[-1] for p in paths}
        if len(last) == 1:
            name = last.pop()
            if set(self.resolve_category(name)) == set(paths):
                return name
        return " | ".join(paths)

    def leaves_under(self, paths: Sequence[str]) -> list[str]:
        if not paths:
            return list(self.leaves)
        return [leaf for leaf in self.leaves if any(leaf == p or leaf.startswith(p + " > ") for p in paths)]

    def attributes_for(self, paths: Sequence[str]) -> dict[str, set[str]]:
        """Attribute key -> values present under the given categories (all of them when none)."""
        if not paths:
            return {k: set(c) for k, c in self.attr_counts.items()}
        out: dict[str, set[str]] = {}
        for leaf in self.leaves_under(paths):
            for key, values in self.attr_by_leaf.get(leaf, {}).items():
                out.setdefault(key, set()).update(values)
        return out

    def is_colour(self, value: str) -> bool:
        return bool(self.color_key) and value.lower() in self.attr_counts[self.color_key]

    def is_brand(self, value: str) -> bool:
        return value.lower() in self.brands

    def content_tokens(self, text: str) -> list[str]:
        """Words of ``text`` that occur in the catalogue and mean something (not generic shop talk)."""
        out = []
        for tok in tokenize(text):
            if tok in self.tokens and tok not in GENERIC_WORDS and not tok.isdigit() and len(tok) > 1:
                out.append(tok)
        return out

    def prompt_vocabulary(self, max_keys: int = 24, max_values: int = 14) -> str:
        """Categories and attribute vocabulary for the model's prompt (bounded in size, built once)."""
        key = (max_keys, max_values)
        cached = self._prompt_cache.get(key)
        if cached is None:
            cached = self._prompt_cache[key] = self._prompt_vocabulary(max_keys, max_values)
        return cached

    def _prompt_vocabulary(self, max_keys: int, max_values: int) -> str:
        lines = ["Categories:"]
        lines += [f"- {leaf}" for leaf in self.leaves[:80]]
        lines.append("Attributes (name: values):")
        keys = sorted(self.attr_counts, key=lambda k: -sum(self.attr_counts[k].values()))[:max_keys]
        for key in keys:
            values = [v for v, _ in self.attr_counts[key].most_common(max_values)]
            lines.append(f"- {key}: {', '.join(values)}")
        return "\n".join(lines)


def _product_values(product: Any, key: str) -> list[str]:
    values: list[str] = []
    value = product.attributes.get(key)
    if value is not None:
        values += [v.lower() for v in (value if isinstance(value, list) else [value])]
    for var in product.variants:
        if key in var.options:
            values.append(var.options[key].lower())
    return values


# --------------------------------------------------------------------------------------------------
# Rule parser


@dataclass
class TurnDelta:
    """What one shopper message says on its own, before it is applied to the conversation's query."""

    query: StructuredQuery = field(default_factory=StructuredQuery)
    certain: set[str] = field(default_factory=set)  # fields the rules detected with certainty
    gender: str | None = None
    cheaper: bool = False
    pricier: bool = False
    replace_cue: bool = False
    content: list[str] = field(default_factory=list)  # leftover catalogue words (keywords)
    source: str = "rules"
    n_words: int = 0

    @property
    def has_category(self) -> bool:
        return bool(self.query.category)


class _Text:
    """Normalised text with a consumed-character mask, so no span is read twice."""

    def __init__(self, text: str) -> None:
        self.raw = text
        self.low = normalise_text(text)
        self.used = [False] * len(self.low)

    def free(self, start: int, end: int) -> bool:
        return not any(self.used[start:end])

    def take(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.used[i] = True

    def finditer(self, pattern: re.Pattern[str]) -> Iterable[re.Match[str]]:
        for m in pattern.finditer(self.low):
            if m.end() > m.start() and self.free(m.start(), m.end()):
                yield m

    def remaining(self) -> str:
        return "".join(" " if u else ch for ch, u in zip(self.low, self.used, strict=True))


def _near(text: _Text, start: int, end: int, words: Iterable[str], window: int = 24) -> bool:
    before = text.low[max(0, start - window) : start]
    after = text.low[end : end + window]
    return any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", before + " | " + after) for w in words)


def parse_rules(message: str, vocab: ShopVocabulary, context_paths: Sequence[str] = ()) -> TurnDelta:
    """Read one shopper message with the catalogue's vocabulary (``context_paths``: the categories the
    conversation is already in, used to read attribute values such as "floral" the right way)."""
    t = _Text(message)
    d = TurnDelta()
    q = d.query

    _parse_prices(t, d)
    _parse_bool_attributes(t, d, vocab)
    _parse_exclusions(t, d, vocab)
    _parse_gender(t, d)
    _parse_category(t, d, vocab)
    paths = vocab.resolve_category(q.category) or list(context_paths)
    _parse_attributes(t, d, vocab, paths)
    _parse_brands(t, d, vocab)
    for m in t.finditer(_CHEAPER):
        d.cheaper = True
        t.take(m.start(), m.end())
    for m in t.finditer(_PRICIER):
        d.pricier = True
        t.take(m.start(), m.end())
    for m in t.finditer(_SORT_DESC):
        q.sort = "price_desc"
        d.certain.add("sort")
        t.take(m.start(), m.end())
    for m in t.finditer(_SORT_ASC):
        q.sort = "price_asc"
        d.certain.add("sort")
        t.take(m.start(), m.end())
    d.replace_cue = bool(_REPLACE_CUES.search(t.low))
    for occasion, words in OCCASIONS.items():
        for word in words:
            for m in t.finditer(phrase_regex(word, plural=True)):
                q.occasion = q.occasion or occasion
                t.take(m.start(), m.end())
    d.content = d.content + vocab.content_tokens(t.remaining())
    d.n_words = len(message.split())
    q.keywords = " ".join(dict.fromkeys(d.content))
    return d


def _set_price(d: TurnDelta, lo: float | None, hi: float | None, certain: bool = True) -> None:
    q = d.query
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    if lo is not None:
        q.price_min = round(lo, 2)
        if certain:
            d.certain.add("price_min")
    if hi is not None:
        q.price_max = round(hi, 2)
        if certain:
            d.certain.add("price_max")


def _parse_prices(t: _Text, d: TurnDelta) -> None:
    for m in t.finditer(_PRICE_BETWEEN):
        _set_price(d, _num(m.group(1)), _num(m.group(2)))
        t.take(m.start(), m.end())
    for m in t.finditer(_PRICE_RANGE):
        _set_price(d, _num(m.group(1)), _num(m.group(2)))
        t.take(m.start(), m.end())
    for pattern in (_PRICE_MAX, _PRICE_MAX_AFTER):
        for m in t.finditer(pattern):
            _set_price(d, None, _num(m.group(1)))
            t.take(m.start(), m.end())
    for pattern in (_PRICE_MIN, _PRICE_MIN_AFTER):
        for m in t.finditer(pattern):
            _set_price(d, _num(m.group(1)), None)
            t.take(m.start(), m.end())
    for m in t.finditer(_PRICE_AROUND):
        value = _num(m.group(1) or m.group(2))
        _set_price(d, value * 0.8, value * 1.2)
        t.take(m.start(), m.end())
    # A bare "$60" reads as a budget, but only as a guess the model may correct.
    for m in t.finditer(_PRICE_BARE):
        if d.query.price_max is None:
            _set_price(d, None, _num(m.group(1) or m.group(2)), certain=False)
        t.take(m.start(), m.end())


def _parse_bool_attributes(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    """Yes/no attributes by name: "waterproof" -> yes, "not waterproof" -> no."""
    for key in sorted(vocab.bool_keys, key=len, reverse=True):
        words = key.split()
        patterns = [phrase_regex(key)]
        if len(words) > 1 and len(words[0]) >= 6:
            patterns.append(phrase_regex(words[0]))  # "induction" for "induction ready"
        for pattern in patterns:
            for m in t.finditer(pattern):
                before = t.low[max(0, m.start() - 12) : m.start()]
                neg = re.search(r"(?<![a-z])(?:not|no|non|without)[\s-]*$", before)
                d.query.attributes[key] = ["no" if neg else "yes"]
                d.certain.add("attributes")
                start = m.start() - (len(before) - neg.start()) if neg else m.start()
                t.take(start, m.end())


def _longest_value_at(t: _Text, pos: int, vocab: ShopVocabulary) -> tuple[str, int] | None:
    """The longest vocabulary phrase (attribute value, brand, category word) starting at ``pos``:
    (its canonical form, its length in the text)."""
    rest = t.low[pos:]
    best: tuple[str, int] | None = None
    for pattern, _, value in vocab._value_patterns:
        m = pattern.match(rest)
        if m and m.end() > 0 and (best is None or m.end() > best[1]):
            best = (value, m.end())
    for low, pattern in vocab._brand_patterns.items():
        m = pattern.match(rest)
        if m and m.end() > 0 and (best is None or m.end() > best[1]):
            best = (vocab.brands[low], m.end())
    for pattern, _, _, _ in vocab._category_phrases:
        m = pattern.match(rest)
        if m and m.end() > 0 and (best is None or m.end() > best[1]):
            best = (m.group(0), m.end())
    return best


def _parse_exclusions(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    for m in list(t.finditer(_NEGATION)):
        if not t.free(m.start(), m.end()):
            continue
        pos = m.end()
        found = _longest_value_at(t, pos, vocab)
        if found is not None:
            term, length = found
            end = pos + length
        else:
            word = re.match(r"([a-z0-9][a-z0-9'\-]*)", t.low[pos:])
            if not word:
                continue
            tok = tokenize(word.group(1))
            if not tok or tok[0] not in vocab.tokens or tok[0] in GENERIC_WORDS:
                continue
            term, end = word.group(1), pos + word.end()
        if term.lower() not in [e.lower() for e in d.query.exclusions]:
            d.query.exclusions.append(term)
        d.certain.add("exclusions")
        t.take(m.start(), end)
        # "not leather or suede": the next alternatives are excluded as well.
        while True:
            more = re.match(r"\s*(?:,|or|nor|and|/)\s*", t.low[end:])
            if not more:
                break
            nxt = _longest_value_at(t, end + more.end(), vocab)
            if nxt is None:
                break
            if nxt[0].lower() not in [e.lower() for e in d.query.exclusions]:
                d.query.exclusions.append(nxt[0])
            t.take(end, end + more.end() + nxt[1])
            end = end + more.end() + nxt[1]


def _parse_gender(t: _Text, d: TurnDelta) -> None:
    for gender, words in GENDER_WORDS.items():
        for word in sorted(words, key=len, reverse=True):
            for m in t.finditer(phrase_regex(word)):
                d.gender = d.gender or gender
                t.take(m.start(), m.end())


_CONTEXT_SPLIT = re.compile(
    r"(?<![a-z0-9])(?:for|with|to go with|to match|that goes with|goes with|to wear with|like my|instead of|"
    r"matching|under|over|between)(?![a-z0-9])"
)


def _combine(a: frozenset[str], b: frozenset[str]) -> frozenset[str] | None:
    """Where one mention refines the other ("travel" + "bag", "hiking" + "jacket"): the specific paths."""
    out = set()
    for x in a:
        for y in b:
            if y == x or y.startswith(x + " > "):
                out.add(y)
            elif x.startswith(y + " > "):
                out.add(x)
    return frozenset(out) or None


def _parse_category(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    mentions: list[_Mention] = []
    for pattern, paths, certain, _ in vocab._category_phrases:
        for m in t.finditer(pattern):
            mentions.append(_Mention(m.start(), m.end(), paths, certain))
            t.take(m.start(), m.end())
    everything = list(mentions)
    if not mentions:
        return  # a gender alone ("for men") narrows the conversation's category in update_query
    # Certain mentions outrank title-word guesses.
    if any(x.certain for x in mentions):
        mentions = [x for x in mentions if x.certain]
    mentions.sort(key=lambda x: x.start)
    # The product sought is the head of the first clause: "hiking boots" -> boots,
    # "shoes to go with my dress" -> shoes (what follows "for"/"with" is context).
    bounds = [m.start() for m in _CONTEXT_SPLIT.finditer(t.low)] + [len(t.low) + 1]
    first_clause = next(b for b in bounds if any(x.start < b for x in mentions))
    clause = [x for x in mentions if x.start < first_clause]
    chosen = clause[-1].paths
    for other in clause[:-1]:
        combined = _combine(other.paths, chosen)
        if combined:
            chosen = combined
    # The words of every mention still rank products: "espresso machine" within appliances,
    # "hiking" boots.
    d.content.extend(tok for x in everything for tok in vocab.content_tokens(t.low[x.start : x.end]))
    paths = sorted(chosen)
    if d.gender:
        gendered = [p for p in paths if p.split(" > ")[0].lower() == d.gender]
        paths = gendered or paths
    d.query.category = vocab.canonical_category(paths)
    if all(x.certain for x in clause):
        d.certain.add("category")


def _parse_attributes(t: _Text, d: TurnDelta, vocab: ShopVocabulary, paths: Sequence[str]) -> None:
    scope = vocab.attributes_for(paths)
    found: dict[str, list[str]] = {}

    def add(key: str, value: str) -> None:
        values = found.setdefault(key, [])
        if value not in values:
            values.append(value)

    # "size M", "size 40", "size medium": explicit size phrases first.
    size_keys = [k for k in ("size", "capacity", "volume", "model") if k in scope] or [
        k for k in vocab.option_keys if k != vocab.color_key and k in scope
    ]
    for m in t.finditer(
        re.compile(
            r"(?<![a-z0-9])(?:size|sized|in a|in an)\s+((?:extra\s+)?[a-z0-9+]+(?:\s*(?:cm|in|ml|l))?)(?![a-z0-9])|(?<![a-z0-9])((?:extra\s+)?(?:small|medium|large|x{0,2}[sl]|m))\s+size(?![a-z0-9])"
        )
    ):
        raw = (m.group(1) or m.group(2)).strip()
        for candidate in (raw, _SIZE_WORDS.get(raw, "")):
            key = next((k for k in size_keys if candidate and candidate in scope.get(k, ())), None)
            if key:
                add(key, candidate)
                t.take(m.start(), m.end())
                break
    # Every other vocabulary value, longest first; each phrase read once, for one key.
    matched: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for pattern, key, value in vocab._value_patterns:
        for m in pattern.finditer(t.low):
            if not t.free(m.start(), m.end()):
                continue
            matched.setdefault((m.start(), m.end()), []).append((key, value))
    for (start, end), options in sorted(matched.items(), key=lambda kv: (-(kv[0][1] - kv[0][0]), kv[0][0])):
        if not t.free(start, end):
            continue
        options = [(k, v) for k, v in options if v in scope.get(k, ())] or (options if not paths else [])
        usable = []
        for key, value in options:
            if (key, value) in vocab._context_values and not _near(t, start, end, key.split() + ["size"]):
                continue
            usable.append((key, value))
        if not usable:
            continue
        # One phrase, several keys ("cream" colour / finish): colour first, then the most common use.
        usable.sort(key=lambda kv: (kv[0] != vocab.color_key, -vocab.attr_counts[kv[0]][kv[1]]))
        key, value = usable[0]
        add(key, value)
        t.take(start, end)
    for key, values in found.items():
        d.query.attributes[key] = values
        d.certain.add("attributes")


def _parse_brands(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    """Brands as written (case-sensitive: "Stride" the brand, not "stride" the word)."""
    for low, brand in sorted(vocab.brands.items(), key=lambda kv: -len(kv[0])):
        cased = re.search(rf"(?<![A-Za-z0-9]){re.escape(brand)}(?![A-Za-z0-9])", t.raw)
        if cased is None:
            continue
        for m in t.finditer(vocab._brand_patterns[low]):
            d.query.attributes.setdefault("brand", [])
            if brand not in d.query.attributes["brand"]:
                d.query.attributes["brand"].append(brand)
            d.certain.add("attributes")
            t.take(m.start(), m.end())


# --------------------------------------------------------------------------------------------------
# The model's reading (constrained decoding), validated and checked against the shopper's words


def model_schema(vocab: ShopVocabulary) -> dict[str, Any]:
    """The JSON schema the model decodes under: small, bounded, every field required (grammar-friendly)."""
    if vocab._schema is None:
        vocab._schema = _model_schema(vocab)
    return vocab._schema


def _model_schema(vocab: ShopVocabulary, max_attributes: int = 4) -> dict[str, Any]:
    keys = sorted(k for k in vocab.attr_counts if k != vocab.gender_key) + ["brand"]
    return {
        "type": "object",
        "properties": {
            "keywords": {"type": "string", "maxLength": 60},
            "category": {"enum": [*vocab.leaves, *vocab.top_level, None]},
            "price_min": {"type": ["number", "null"], "minimum": 0},
            "price_max": {"type": ["number", "null"], "minimum": 0},
            "attributes": {
                "type": "array",
                "maxItems": max_attributes,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"enum": sorted(set(keys))},
                        "value": {"type": "string", "maxLength": 30},
                    },
                    "required": ["name", "value"],
                    "additionalProperties": False,
                },
            },
            "occasion": {"type": ["string", "null"], "maxLength": 20},
            "exclusions": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 30}},
            "sort": {"enum": list(SORTS)},
        },
        "required": [
            "keywords",
            "category",
            "price_min",
            "price_max",
            "attributes",
            "occasion",
            "exclusions",
            "sort",
        ],
        "additionalProperties": False,
    }


QUERY_SYSTEM_PROMPT = """You turn a shopper's latest message into a JSON search query for an online store.
Use only the store's categories and attribute values listed below. Leave a field null or empty unless the
shopper clearly asked for it. Prices are numbers in the store's currency.
{vocabulary}"""


def model_request(
    messages: Sequence[Mapping[str, Any]], vocab: ShopVocabulary, previous: StructuredQuery | None
) -> dict[str, Any]:
    convo = [m for m in messages if m.get("role") in ("user", "assistant") and m.get("content")][-5:]
    transcript = "\n".join(f"{m['role']}: {str(m['content'])[:400]}" for m in convo)
    prev = json.dumps(previous.model_dump(exclude_defaults=True)) if previous else "none"
    return {
        "messages": [
            {"role": "system", "content": QUERY_SYSTEM_PROMPT.format(vocabulary=vocab.prompt_vocabulary())},
            {
                "role": "user",
                "content": f"Conversation:\n{transcript}\n\nPrevious query: {prev}\n"
                "JSON query for what the shopper asks in their LAST message:",
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "shop_query", "schema": model_schema(vocab), "strict": True},
        },
        "temperature": 0,
        "max_tokens": 160,
    }


def _mentioned(value: str, text: str) -> bool:
    return bool(value) and phrase_regex(value, plural=True).search(normalise_text(text)) is not None


def sanitize_model_output(
    content: str, vocab: ShopVocabulary, message: str
) -> tuple[TurnDelta | None, list[str]]:
    """The model's JSON as a delta, keeping only values the schema allows AND the message evidences."""
    dropped: list[str] = []
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return None, ["not JSON"]
    try:
        jsonschema.validate(data, model_schema(vocab))
    except jsonschema.ValidationError as exc:
        return None, [f"schema: {exc.message[:120]}"]
    d = TurnDelta(source="model")
    q = d.query
    text = normalise_text(message)
    numbers = {_num(n) for n in re.findall(r"\d{1,6}(?:[.,]\d{1,2})?", text)}
    for name in ("price_min", "price_max"):
        value = data.get(name)
        if value is None:
            continue
        if float(value) in numbers:
            setattr(q, name, float(value))
        else:
            dropped.append(f"{name}={value} (not in the message)")
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        dropped.append("price_min > price_max")
        q.price_min = q.price_max = None
    category = data.get("category")
    if category:
        evidence = {
            p.pattern
            for p, paths, _, _ in vocab._category_phrases
            if any(
                path == category or category.startswith(path + " > ") or path.startswith(category + " > ")
                for path in paths
            )
            and p.search(text)
        }
        if evidence:
            q.category = category
        else:
            dropped.append(f"category={category} (no word of it in the message)")
    for item in data.get("attributes") or []:
        key, value = item["name"], str(item["value"]).strip().lower()
        known = vocab.attr_counts.get(key, Counter())
        if key == "brand":
            brand = vocab.brands.get(value)
            if brand and _mentioned(value, text):
                q.attributes.setdefault("brand", []).append(brand)
            else:
                dropped.append(f"brand={value}")
        elif value in known and _mentioned(value, text) and not _negated(value, text):
            q.attributes.setdefault(key, []).append(value)
        else:
            dropped.append(f"{key}={value}")
    for term in data.get("exclusions") or []:
        term = str(term).strip()
        if term and _negated(term, text):
            q.exclusions.append(term)
        elif term:
            dropped.append(f"exclusion {term!r} (not negated in the message)")
    occasion = data.get("occasion")
    if occasion and _mentioned(str(occasion), text):
        q.occasion = str(occasion).lower()
    sort = data.get("sort", "relevance")
    if sort == "price_asc" and (_SORT_ASC.search(text) or _CHEAPER.search(text)):
        q.sort = "price_asc"
    elif sort == "price_desc" and (_SORT_DESC.search(text) or _PRICIER.search(text)):
        q.sort = "price_desc"
    words = [w for w in vocab.content_tokens(str(data.get("keywords") or "")) if w in set(tokenize(text))]
    q.keywords = " ".join(dict.fromkeys(words))
    d.content = words
    return d, dropped


def _negated(term: str, text: str) -> bool:
    m = phrase_regex(term, plural=True).search(text)
    if m is None:
        return False
    before = text[max(0, m.start() - 40) : m.start()]
    return bool(_NEGATION.search(before))


def merge_deltas(rules: TurnDelta, model: TurnDelta | None) -> TurnDelta:
    """Rules win on hard constraints they detected with certainty; the model fills the rest."""
    if model is None:
        return rules
    out = TurnDelta(
        query=rules.query.model_copy(deep=True),
        certain=set(rules.certain),
        gender=rules.gender,
        cheaper=rules.cheaper,
        pricier=rules.pricier,
        replace_cue=rules.replace_cue,
        content=list(rules.content),
        source="rules+model",
        n_words=rules.n_words,
    )
    q, m = out.query, model.query
    used = False
    # Once the rules have read a price phrase, the model's numbers add nothing but risk ("under 150"
    # must not also become "from 150").
    rules_priced = bool({"price_min", "price_max"} & rules.certain)
    for name in ("price_min", "price_max"):
        if not rules_priced and getattr(m, name) is not None:
            setattr(q, name, getattr(m, name))
            out.certain.add(name)
            used = True
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        q.price_min = None
    if "category" not in rules.certain and m.category:
        q.category = m.category
        used = True
    for key, values in m.attributes.items():
        if key not in q.attributes:
            q.attributes[key] = list(values)
            used = True
    for term in m.exclusions:
        if term.lower() not in {e.lower() for e in q.exclusions}:
            q.exclusions.append(term)
            used = True
    if "sort" not in rules.certain and m.sort != "relevance":
        q.sort = m.sort
        used = True
    if not q.occasion and m.occasion:
        q.occasion = m.occasion
    for w in model.content:
        if w not in out.content:
            out.content.append(w)
    q.keywords = " ".join(dict.fromkeys(out.content))
    if not used:
        out.source = "rules"
    return out


# --------------------------------------------------------------------------------------------------
# Applying a turn to the conversation's query


def gender_of(category: str | None) -> str | None:
    if not category:
        return None
    firsts = {alt.strip().split(" > ")[0].strip().lower() for alt in category.split("|")}
    return firsts.pop() if len(firsts) == 1 and firsts & {"women", "men"} else None


def _narrow_by_gender(category: str | None, gender: str | None, vocab: ShopVocabulary) -> str | None:
    if not category or not gender:
        return category
    paths = vocab.resolve_category(category)
    gendered = [p for p in paths if p.split(" > ")[0].lower() == gender]
    return vocab.canonical_category(gendered) if gendered else category


def _median(prices: Sequence[float]) -> float | None:
    return float(statistics.median(prices)) if prices else None


def update_query(
    previous: StructuredQuery | None,
    delta: TurnDelta,
    vocab: ShopVocabulary,
    *,
    shown_prices: Sequence[float] = (),
    after_clarifying: bool = False,
) -> tuple[StructuredQuery, str]:
    """The conversation's query after this turn, and how it was reached: new | refine | switch."""
    d = delta.query
    if previous is None:
        q = d.model_copy(deep=True)
        q.category = _narrow_by_gender(q.category, delta.gender, vocab)
        if q.category is None and delta.gender and vocab.resolve_category(delta.gender.capitalize()):
            q.category = delta.gender.capitalize()  # "something for men": the men's department
        if delta.cheaper and q.sort == "relevance":
            q.sort = "price_asc"
        return _consistent(q, vocab), "new"
    gender = delta.gender or gender_of(previous.category)
    prev_paths = set(vocab.resolve_category(previous.category))
    new_category = _narrow_by_gender(d.category, gender, vocab)
    new_paths = set(vocab.resolve_category(new_category))
    changes_category = bool(new_paths) and bool(prev_paths) and new_paths != prev_paths
    # A short follow-up ("sandals?") keeps the budget like "instead" does; a full request starts over.
    carries = delta.replace_cue or after_clarifying or (delta.n_words <= 3 and d.price_max is None)
    if changes_category and not carries and not _narrows(prev_paths, new_paths):
        q = d.model_copy(deep=True)
        q.category = _narrow_by_gender(q.category, delta.gender, vocab)
        return _consistent(q, vocab), "new"
    q = previous.model_copy(deep=True)
    mode = "refine"
    if changes_category and not _narrows(prev_paths, new_paths):
        mode = "switch"
        # "Show me boots instead": same budget, exclusions and sort; attributes only where they apply.
        q.category = new_category
        scope = vocab.attributes_for(vocab.resolve_category(q.category))
        q.attributes = {
            k: [v for v in vals if v in scope.get(k, ()) or k == "brand"]
            for k, vals in q.attributes.items()
            if k in scope or k == "brand"
        }
        q.attributes = {k: v for k, v in q.attributes.items() if v}
        q.keywords = ""
    elif new_category:
        q.category = new_category
    elif delta.gender:
        narrowed = _narrow_by_gender(q.category or delta.gender.capitalize(), delta.gender, vocab)
        if vocab.resolve_category(narrowed):
            q.category = narrowed
    # Prices: stated bounds replace old ones; "cheaper"/"pricier" move relative to what was shown.
    if d.price_min is not None or d.price_max is not None:
        q.price_min, q.price_max = d.price_min, d.price_max
    median = _median(shown_prices)
    if delta.cheaper:
        if median is not None:
            cap = round(0.8 * median, 2)
            q.price_max = min(cap, q.price_max) if q.price_max is not None else cap
            if q.price_min is not None and q.price_min >= q.price_max:
                q.price_min = None
        else:
            q.sort = "price_asc"
    if delta.pricier:
        if median is not None:
            floor = round(1.25 * median, 2)
            q.price_min = max(floor, q.price_min or 0.0)
            if q.price_max is not None and q.price_max <= q.price_min:
                q.price_max = None
        else:
            q.sort = "price_desc"
    # Attributes: a newly stated value replaces the old values of that key ("in blue" after "in red").
    for key, values in d.attributes.items():
        q.attributes[key] = list(values)
        q.exclusions = [e for e in q.exclusions if e.lower() not in {v.lower() for v in values}]
    for term in d.exclusions:
        if term.lower() not in {e.lower() for e in q.exclusions}:
            q.exclusions.append(term)
    if "sort" in delta.certain or d.sort != "relevance":
        q.sort = d.sort
    if d.occasion:
        q.occasion = d.occasion
    if d.keywords:
        words = (q.keywords.split() if mode == "refine" else []) + d.keywords.split()
        q.keywords = " ".join(dict.fromkeys(words))
    return _consistent(q, vocab), mode


def _narrows(prev: set[str], new: set[str]) -> bool:
    """True when the new categories sit inside the old ones ("boots" after "shoes"): a refinement."""
    return all(any(n == p or n.startswith(p + " > ") for p in prev) for n in new)


def _consistent(q: StructuredQuery, vocab: ShopVocabulary) -> StructuredQuery:
    """Exclusions win over attribute values they name; a category the catalogue lacks is dropped."""
    excluded = {e.lower() for e in q.exclusions}
    q.attributes = {k: [v for v in vals if v.lower() not in excluded] for k, vals in q.attributes.items()}
    q.attributes = {k: v for k, v in q.attributes.items() if v}
    if q.category and not vocab.resolve_category(q.category):
        q.category = None
    if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
        q.price_min = None
    return q


# --------------------------------------------------------------------------------------------------
# From the query to hard constraints and search text


def constraints_for(q: StructuredQuery, vocab: ShopVocabulary) -> HardConstraints:
    """The hard constraints a query implies. Attribute keys that do not exist at all in the chosen
    categories ("season" for dresses) are soft: they move to the search text instead."""
    paths = vocab.resolve_category(q.category)
    scope = vocab.attributes_for(paths)
    attributes: dict[str, list[str]] = {}
    for key, values in q.attributes.items():
        if key == "brand" or key in scope:
            attributes[key] = [vocab.brands.get(v.lower(), v) if key == "brand" else v for v in values]
    exclude_attributes: dict[str, list[str]] = {}
    exclude_terms: list[str] = []
    for term in q.exclusions:
        if vocab.is_colour(term):
            exclude_attributes.setdefault(vocab.color_key or "color", []).append(term.lower())
        elif vocab.is_brand(term):
            exclude_attributes.setdefault("brand", []).append(vocab.brands[term.lower()])
        else:
            exclude_terms.append(term)
    return HardConstraints(
        price_min=q.price_min,
        price_max=q.price_max,
        categories=paths,
        attributes=attributes,
        exclude_attributes=exclude_attributes,
        exclude_terms=exclude_terms,
        in_stock=True,
    )


def search_text(q: StructuredQuery, vocab: ShopVocabulary) -> str:
    """Words for the ranker: keywords, occasion, the category's own name, wanted attribute values."""
    parts = [q.keywords]
    if q.occasion:
        parts.append(q.occasion)
    paths = vocab.resolve_category(q.category)
    names = dict.fromkeys(p.split(" > ")[-1] for p in paths)
    if len(names) <= 2:
        parts.extend(names)
    for key, values in q.attributes.items():
        if key != "brand":
            parts.extend(values)
    return " ".join(p for p in parts if p).strip()


def is_vague(q: StructuredQuery, vocab: ShopVocabulary) -> bool:
    """No category, no attribute and no catalogue keyword: too little to search on."""
    return not q.category and not q.attributes and not vocab.content_tokens(q.keywords)
