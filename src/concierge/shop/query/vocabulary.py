"""The vocabulary of one catalogue: category paths, synonyms, attribute values, brands and occasions."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from concierge.shop.catalog import Catalog
from concierge.shop.query.fuzzy import TypoFixer
from concierge.shop.query.numbers import _NUMBER_WORDS, UNIT_WORDS, Quantity, value_quantity
from concierge.shop.search import STOPWORDS, tokenize

# Generic retail words -> a category segment name; used only where the catalogue has that segment.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sneakers": ("trainer", "kicks", "running shoe", "tennis shoe", "sneaker"),
    "boots": ("boot", "bootie"),
    "sandals": ("sandal", "flip flop", "slide", "espadrille"),
    "shoes": ("footwear", "shoe"),
    "dresses": ("dress", "gown", "frock"),
    "tops": ("top", "blouse", "tee", "t-shirt", "tshirt", "sweater", "cardigan", "jumper", "tunic", "hoodie",
             "sweatshirt", "pullover"),
    "trousers": ("pant", "jean", "chino", "slack", "jogger", "culotte", "trouser"),
    "shirts": ("shirt", "polo", "henley", "t-shirt", "tshirt", "tee"),
    "jackets": ("jacket", "coat", "parka", "blazer", "outerwear", "anorak", "hoodie", "windbreaker"),
    "clothing": ("clothes", "apparel", "outfit"),
    "handbags": ("handbag", "purse", "tote", "clutch", "crossbody"),
    "backpacks": ("backpack", "rucksack", "daypack", "knapsack"),
    "travel": ("luggage", "suitcase", "duffel", "duffle", "carry-on", "weekender", "weekend bag", "holdall",
               "overnight bag"),
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
    # Single-product departments (the τ² retail catalogue names its leaves after the product).
    "smartphone": ("phone", "cell phone", "cellphone", "mobile phone"),
    "wireless earbuds": ("earbud", "earbuds", "airpod"),
    "bluetooth speaker": ("speaker", "portable speaker", "wireless speaker"),
    "smart watch": ("smartwatch", "fitness watch"),
    "wristwatch": ("watch", "analog watch"),
    "e-reader": ("ereader", "e reader", "kindle", "ebook reader"),
    "patio umbrella": ("umbrella", "parasol", "sun umbrella"),
    "dumbbell set": ("dumbbell", "dumbbells", "weights", "free weights"),
    "jigsaw puzzle": ("jigsaw", "puzzle"),
    "office chair": ("desk chair", "chair"),
    "desk lamp": ("reading lamp", "study lamp"),
    "led light bulb": ("bulb", "light bulb", "lightbulb", "smart bulb"),
    "hiking boots": ("boot", "walking boot", "trail boot"),
    "running shoes": ("running shoe", "runners", "trainer"),
    "t-shirt": ("tee", "tshirt", "tee shirt"),
    "fleece jacket": ("fleece", "fleece top"),
    "luggage set": ("luggage", "suitcase", "suitcase set"),
    "gaming mouse": ("mouse",),
    "mechanical keyboard": ("keyboard",),
    "coffee maker": ("coffee machine", "drip coffee"),
    "electric kettle": ("electric tea kettle",),
    "indoor security camera": ("security camera", "security cam", "indoor camera", "home camera", "webcam",
                               "baby monitor", "cctv camera", "surveillance camera"),
    "smart thermostat": ("thermostat",),
    "air purifier": ("purifier", "air filter"),
    "vacuum cleaner": ("vacuum", "hoover"),
    "electric toothbrush": ("toothbrush",),
    "makeup kit": ("makeup set", "make-up kit"),
    "cycling helmet": ("bike helmet", "bicycle helmet", "helmet"),
    "bicycle": ("bike",),
    "water bottle": ("bottle", "flask"),
    "pet bed": ("dog bed", "cat bed"),
    "garden hose": ("hose",),
    "grill": ("bbq", "barbecue", "barbeque"),
    "bookshelf": ("bookcase", "book shelf", "shelving"),
    "wall clock": ("clock",),
    "yoga mat": ("exercise mat", "workout mat"),
    "portable charger": ("power bank", "battery pack"),
    "action camera": ("gopro", "action cam"),
    "digital camera": ("compact camera", "point and shoot"),
}

# Other names of yes/no options (used only where the catalogue has the option).
BOOL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "water resistance": ("water resistant", "water-resistant", "waterproof", "splash proof", "splashproof"),
    "waterproof": (
        "water proof", "water resistant", "water-resistant", "rainproof", "rain proof", "keeps the rain out",
        "keep the rain out", "keeps out the rain", "keeps rain out",
    ),
    "noise cancelling": (
        "noise canceling",
        "noise cancellation",
        "noise-cancelling",
        "noise-canceling",
        "anc",
        "cancel noise",
        "cancels noise",
        "cancel out noise",
        "cancels out noise",
        "cancelling noise",
    ),
    "dishwasher safe": ("dishwasher proof", "dishwasher-safe", "goes in the dishwasher"),
    "induction ready": ("induction compatible", "works on induction", "induction hob"),
}

# Product words that also name an option value ("jeans" are denim trousers); used only where the
# catalogue has that value in the categories read.
IMPLIED_VALUES: dict[str, str] = {"jean": "denim"}

# What shoppers call option values the catalogue spells otherwise: phrase -> catalogue value (used
# only where the catalogue has that value).
VALUE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "stainless steel": ("stainless", "steel"),
    "nonstick aluminium": ("non-stick", "non stick", "nonstick"),
    "wi-fi + cellular": ("cellular", "lte", "4g", "5g", "wifi and cellular", "wifi + cellular"),
    "hardshell": ("hard shell", "hard-sided", "hard sided", "hardside"),
    "softshell": ("soft shell", "soft-sided", "soft sided", "softside"),
    "over-ear": ("over the ear", "around ear", "around the ear"),
    "on-ear": ("on the ear",),
    "in-ear": ("in the ear",),
    "crew neck": ("crewneck", "round neck"),
    "1080p": ("full hd", "fhd"),
    "robotic": ("robot", "robo"),
    "cordless": ("wireless vacuum", "battery powered"),
    "capsule": ("pod", "pods", "nespresso"),
    "amazon alexa": ("alexa", "echo"),
    "apple homekit": ("homekit", "siri"),
    "google assistant": ("google home", "google nest"),
    "memory foam": ("foam",),
    "natural rubber": ("rubber",),
    "rechargeable": ("usb rechargeable", "recharge"),
    "aa batteries": ("aa battery", "batteries"),
    "polarized": ("polarised",),
    "non-polarized": ("non-polarised", "not polarized", "not polarised", "unpolarized"),
    "hepa": ("hepa filter",),
    "analog": ("analogue",),
    "hard cover": ("hardback", "hardcover", "hard-cover", "hard back"),
    "soft cover": ("softcover", "paperback", "soft-cover", "softback"),
    "wood": ("wooden", "timber"),
    "wool": ("woollen", "woolen", "woolly"),
    "metal": ("metallic", "steel"),
    "leather": ("leathers",),
    "grey": ("gray",),
    "gray": ("grey",),
    "space grey": ("space gray",),
}

COLOUR_SYNONYMS = {
    "gray": "grey", "navy blue": "navy", "off-white": "cream", "ivory": "cream", "tan": "beige",
    "camel": "beige", "maroon": "burgundy", "wine": "burgundy", "khaki": "beige", "charcoal": "grey",
    "golden": "gold", "multicoloured": "multicolor", "multicolored": "multicolor", "rainbow": "multicolor",
    "mustard": "yellow", "light blue": "blue", "sky blue": "blue", "baby blue": "blue", "royal blue": "blue",
    "dark blue": "navy", "dark green": "green", "forest green": "green", "olive green": "olive",
    "mint": "green", "baby pink": "pink", "hot pink": "pink", "lilac": "purple", "lavender": "purple",
    "chocolate": "brown", "rust": "orange", "dark grey": "grey", "light grey": "grey", "off white": "cream",
    "bordeaux": "burgundy", "crimson": "red", "scarlet": "red",
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


# Values that are ordinary words: they count only next to their attribute name ("size m", "slim fit").
_COMMON_VALUES = frozenset(
    """yes no none all regular small medium large natural solid full twin flat fresh clear dry oily
    sensitive combination adult block s m l x fit""".split()
)


def _word_pattern(word: str, plural: bool) -> str:
    w = re.escape(word)
    if not plural or not word[-1:].isalpha():
        return w
    if word.endswith("y") and len(word) > 3:
        return re.escape(word[:-1]) + r"(?:y|ies)"
    if word.endswith(("s", "x", "ch", "sh")):
        return w + r"(?:es)?"
    return w + r"(?:s|es)?"


@functools.lru_cache(maxsize=8192)
def phrase_regex(phrase: str, plural: bool = False) -> re.Pattern[str]:
    """Whole-word, case-folded match of a phrase; spaces and hyphens are interchangeable.

    Cached: a shop turn asks for the same few hundred catalogue phrases again and again, and building
    each pattern (escape, join, re's own cache look-up) was about a tenth of a turn's CPU."""
    words = re.findall(r"[a-z0-9]+|[^\sa-z0-9\-]", phrase.lower())
    if plural and words and words[-1].isalpha():
        stem = tokenize(words[-1])
        words[-1] = stem[0] if stem else words[-1]
    parts = [re.escape(w) for w in words[:-1]] + [_word_pattern(words[-1], plural)] if words else []
    body = r"[\s\-/]*".join(parts)
    return re.compile(rf"(?<![a-z0-9]){body}(?![a-z0-9])")


_WITH_SLASH = re.compile(r"(?<![a-z0-9])w/(o(?![a-z0-9]))?\s*")
_IS_CONTRACTION = re.compile(r"(?<![a-z0-9])(that|it|what|there|here|who)'s(?![a-z0-9])")


def normalise_text(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2013", "-").replace("\u2014", " ")
    # "w/ grinder", "w/o a lid": the shorthand for "with" / "without".
    text = _WITH_SLASH.sub(lambda m: "without " if m.group(1) else "with ", text.lower())
    # "that's waterproof", "it's for a man": the verb, not a size "s".
    text = _IS_CONTRACTION.sub(r"\1 is", text)
    return " ".join(text.split())


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
        self.quantities = self._build_quantities()  # key -> value -> numeric reading
        self.typos = self._build_typo_fixer()
        self._prompt_cache: dict[tuple[int, int], str] = {}
        # Category and scope look-ups, asked several times a turn with the same few arguments: the
        # vocabulary never changes, so each answer is worked out once (bounded: the arguments come
        # from what shoppers and models write).
        self._category_cache: dict[str, tuple[str, ...]] = {}
        self._leaves_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._scope_cache: dict[tuple[str, ...], Mapping[str, frozenset[str]]] = {}
        self._category_segments = [(path, [s.lower() for s in path.split(" > ")]) for path in self.categories]
        self._schema: dict[str, Any] | None = None
        self._validator: Any = None

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
                if re.fullmatch(r"[a-z]{1,3}\d{1,3}|\d{1,2}[a-z]", value) and value not in _COMMON_VALUES:
                    continue  # codes: A5, E27, i7, 4K: unmistakable as written
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
                # Only products that have the option can use the word against it ("Slip Dress" says
                # nothing about a shoe's closure).
                with_token = [
                    i for i, t in enumerate(title_tokens)
                    if tok in t and _product_values(self.catalog.products[i], key)
                ]  # fmt: skip
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

        def weak(tok: str) -> bool:
            """A word that may stand for a category as weak evidence: no brand, value or generic word."""
            plain = tok not in brand_tokens and tok not in value_tokens and tok not in GENERIC_WORDS
            return plain and len(tok) >= 3 and not tok.isdigit() and tok not in phrases

        for tok, leaves in leaves_of.items():
            if sum(leaves.values()) >= 3 and len(leaves) <= 3 and weak(tok):
                add(tok, leaves, False)
        # The head noun of a leaf named in several words, where no other leaf ends in it ("pet bed": "a
        # fleece bed"), as weak evidence too: a catalogue with one product per leaf has no title words.
        heads: dict[str, set[str]] = {}
        for leaf in self.leaves:
            words = tokenize(leaf.split(" > ")[-1])
            if len(words) > 1:
                heads.setdefault(words[-1], set()).add(leaf)
        for tok, leaves in heads.items():
            if len(leaves) == 1 and weak(tok):
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
        out += self._partial_value_patterns()
        for target, words in VALUE_SYNONYMS.items():
            for key, counts in self.attr_counts.items():
                if target in counts and key not in self.bool_keys and key != self.gender_key:
                    for word in words:
                        if word not in counts:
                            out.append((phrase_regex(word), key, target))
        out.sort(key=lambda x: -len(x[2]))
        return out

    def _partial_value_patterns(self) -> list[tuple[re.Pattern[str], str, str]]:
        """The distinctive word of a several-word value stands for it ("braided" -> braided nylon,
        "merino" -> merino wool, "nonstick" -> nonstick aluminium): a word of five letters or more that is
        no value itself, no colour, and names one value only of that option; and "50 x 50" for "50 x 50 cm"."""
        all_values = {re.sub(r"[\s\-/]+", " ", v) for counts in self.attr_counts.values() for v in counts}
        words_of_values = Counter(
            w for counts in self.attr_counts.values() for v in counts for w in set(re.findall(r"[a-z]+", v))
        )
        out: list[tuple[re.Pattern[str], str, str]] = []
        for key, counts in self.attr_counts.items():
            if key in self.bool_keys or key in (self.color_key, self.gender_key, "brand") or "color" in key:
                continue
            per_word: dict[str, set[str]] = {}
            for value in counts:
                m = re.fullmatch(r"(\d+ ?x ?\d+) ?(?:cm|mm|in)", value)
                if m:
                    out.append((phrase_regex(m.group(1)), key, value))
                words = re.findall(r"[a-z]+", value)
                if len(words) < 2:
                    continue
                for w in words:
                    per_word.setdefault(w, set()).add(value)
                if len(words) >= 2 and len("".join(words[:-1])) >= 3:
                    per_word.setdefault(" ".join(words[:-1]), set()).add(
                        value
                    )  # "bpa free" -> bpa-free plastic
            for w, values in per_word.items():
                if (
                    len(values) == 1
                    and len(w) >= 5
                    and w not in all_values
                    and w not in GENERIC_WORDS
                    and w not in STOPWORDS
                    and (" " in w or words_of_values[w] == 1)
                    and not self.is_colour(w)
                ):
                    out.append((phrase_regex(w), key, next(iter(values))))
        return out

    def _build_quantities(self) -> dict[str, dict[str, Quantity]]:
        out: dict[str, dict[str, Quantity]] = {}
        for key, counts in self.attr_counts.items():
            for value in counts:
                q = value_quantity(key, value)
                if q is not None:
                    out.setdefault(key, {})[value] = q
        return out

    def _build_typo_fixer(self) -> TypoFixer:
        targets: Counter[str] = Counter()
        for key, counts in self.attr_counts.items():
            if key == "brand":
                continue
            for value, n in counts.items():
                for word in re.findall(r"[a-z]+", value):
                    targets[word] += n
            for word in re.findall(r"[a-z]+", key):
                targets[word] += 1
        for seg in self.segment_paths:
            for word in re.findall(r"[a-z]+", seg):
                targets[word] += 1
                targets[word + "s"] += 0
        for seg, words in SYNONYMS.items():
            if seg in self.segment_paths:
                for phrase in words:
                    for word in re.findall(r"[a-z]+", phrase):
                        targets[word] += 1
                        targets[word + "s"] += 0
        for word, target in COLOUR_SYNONYMS.items():
            if self.color_key and target in self.attr_counts[self.color_key]:
                targets[word] += 1
        for words in VALUE_SYNONYMS.values():
            for phrase in words:
                for word in re.findall(r"[a-z]+", phrase):
                    targets[word] += 1
        known = set(GENERIC_WORDS) | set(STOPWORDS) | _NUMBER_WORDS | set(UNIT_WORDS)
        for words in (*OCCASIONS.values(), *GENDER_WORDS.values()):
            for phrase in words:
                known.update(re.findall(r"[a-z]+", phrase))
        return TypoFixer(targets, known, dict(targets))

    def fix_typos(self, text: str) -> str:
        """``text`` (normalised) with words the catalogue does not know replaced by its closest words."""

        def known(word: str) -> bool:
            toks = tokenize(word)
            return not toks or toks[0] in self.tokens

        candidates = {w for w in re.findall(r"[a-z]+", text) if not known(w)}
        if not candidates:
            return text
        fixed, _ = self.typos.fix_text(text, is_known=set(re.findall(r"[a-z]+", text)) - candidates)
        return fixed

    def equivalents(self, key: str, value: str) -> list[str]:
        """The value and its other spellings in the catalogue ("grey" -> grey, gray)."""
        counts = self.attr_counts.get(key, {})
        out = [value]
        canon = COLOUR_SYNONYMS.get(value, value)
        for other in counts:
            if other != value and COLOUR_SYNONYMS.get(other, other) == canon:
                out.append(other)
        return out

    # -- lookups ------------------------------------------------------------------------------

    def resolve_category(self, category: str | None) -> list[str]:
        """The catalogue path prefixes a category string stands for (empty: unknown or none)."""
        if not category:
            return []
        hit = self._category_cache.get(category)
        if hit is None:
            hit = _remember(self._category_cache, category, tuple(self._resolve_category(category)))
        return list(hit)

    def _resolve_category(self, category: str) -> list[str]:
        out: list[str] = []
        for alt in category.split("|"):
            want = [s.strip().lower() for s in alt.split(">") if s.strip()]
            if not want:
                continue
            m = len(want)
            for path, segs in self._category_segments:
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
        key = tuple(paths)
        hit = self._leaves_cache.get(key)
        if hit is None:
            hit = _remember(self._leaves_cache, key, tuple(
                leaf for leaf in self.leaves if any(leaf == p or leaf.startswith(p + " > ") for p in paths)))
        return list(hit)

    def attributes_for(self, paths: Sequence[str]) -> Mapping[str, frozenset[str]]:
        """Attribute key -> values present under the given categories (all of them when none); read-only."""
        key = tuple(paths)
        hit = self._scope_cache.get(key)
        if hit is None:
            out: dict[str, set[str]] = {}
            if not paths:
                out = {k: set(c) for k, c in self.attr_counts.items()}
            else:
                for leaf in self.leaves_under(paths):
                    for name, values in self.attr_by_leaf.get(leaf, {}).items():
                        out.setdefault(name, set()).update(values)
            hit = _remember(self._scope_cache, key, MappingProxyType({k: frozenset(v) for k, v in out.items()}))
        return hit

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


def _remember(cache: dict[Any, Any], key: Any, value: Any, limit: int = 4096) -> Any:
    """``cache[key] = value``, forgetting everything first once ``limit`` keys are held."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
