"""Rule parser: one shopper message -> a :class:`TurnDelta`, over the catalogue's own vocabulary."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from concierge.shop.query.numbers import UNIT_WORDS, normalise_numbers
from concierge.shop.query.ranges import parse_range_spans, resolve_age, resolve_ranges
from concierge.shop.query.structured import OptionRange, StructuredQuery
from concierge.shop.query.vocabulary import (
    BOOL_SYNONYMS,
    GENDER_WORDS,
    GENERIC_WORDS,
    IMPLIED_VALUES,
    OCCASIONS,
    ShopVocabulary,
    _Mention,
    normalise_text,
    phrase_regex,
)
from concierge.shop.search import tokenize

_NEGATION = re.compile(
    r"(?<![a-z0-9])(?:any (?:colou?rs?|shades?|sizes?|materials?|fabrics?|finish) (?:but|other than|except)|"
    r"not a fan of|not keen on|not into|rather not have|rather not|stay away from|steer clear of|"
    r"can'?t stand|dislike|anything other than|anything except|"
    r"not|no|without|except|excluding|avoid|anything but|nothing in|nothing|don'?t want|do not want|"
    r"don'?t like|do not like|hate|allergic to|non|never|other than|apart from|besides|can'?t be|cant be|"
    r"cannot be|must not be|mustn'?t be|shouldn'?t be|isn'?t|aren'?t)(?![a-z0-9])[\s-]*"
    r"(?:made (?:of|from|with)\s+|in\s+|from\s+|any\s+|a\s+|an\s+|the\s+)?"
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
_CUR_AFTER = r"(?:\s*(?:dollars?|usd|bucks|quid|euros?|eur|pounds?|gbp)(?![a-z0-9]))"
# A number followed by a unit is a size or capacity, never a price.
_UNIT_AFTER = (
    r"(?!\s*-?\s*(?:cm|mm|ml|l|w|in|inch|inches|h|hours?|person|people|pieces?|pcs|x|gb|mah|kg|g|c|years?|yrs?|"
    r"months?|\+|%|-person|"
    + "|".join(re.escape(u) for u in UNIT_WORDS if u != "pounds" and u != "pound")
    + r")(?![a-z0-9]))"
)
_PRICE_BETWEEN = re.compile(
    rf"(?:between|from)\s+{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:and|to|-|–)\s*{_CUR}?{_NUM}{_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_RANGE = re.compile(rf"{_CUR}{_NUM}\s*(?:-|–|to)\s*{_CUR}?{_NUM}(?![\d])")
_PRICE_MAX = re.compile(
    rf"(?<![a-z0-9])(?:nothing (?:over|above|more than)|not (?:over|above)|no (?:higher|more) than|"
    rf"(?:is|are|does|do|should|must)n'?t (?:cost |be )?(?:more than|over|above)|"
    rf"under|below|less than|cheaper than|up to|no more than|not more than|max(?:imum)?(?: of)?|at most|"
    rf"within|budget (?:of|is)|budget:?|for less than|<=?|tops)\s*{_CUR}?{_NUM}(?![\d]){_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_MAX_AFTER = re.compile(
    rf"{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:or less|or under|or below|max(?:imum)?|tops|or cheaper)(?![a-z0-9])"
)
_PRICE_MIN = re.compile(
    rf"(?<![a-z0-9])(?:over|above|more than|at least|starting at|min(?:imum)?(?: of)?|>=?|upwards of)\s*{_CUR}?{_NUM}(?![\d])"
    rf"{_CUR_AFTER}?{_UNIT_AFTER}"
)
_PRICE_MIN_AFTER = re.compile(rf"{_CUR}?{_NUM}{_CUR_AFTER}?\s*(?:or more|and up|and above|\+)(?![a-z0-9])")
_PRICE_AROUND = re.compile(
    rf"(?<![a-z0-9])(?:around|about|roughly|approximately|approx\.?|~)\s*(?:{_CUR}{_NUM}|{_NUM}{_CUR_AFTER})(?![\d])"
)
_PRICE_BARE = re.compile(rf"(?:{_CUR}{_NUM}(?![\d])|(?<![a-z0-9.]){_NUM}{_CUR_AFTER})")

_SIZE_WORDS = {"extra small": "xs", "small": "s", "medium": "m", "large": "l", "extra large": "xl"}
_LETTER_SIZES = ("xxs", "xs", "s", "m", "l", "xl", "xxl", "xxxl")
_SIZE_SIDE = re.compile(
    r"(?<![a-z0-9])(?:size\s+)?((?:extra[\s-]+)?(?:small|medium|large)|x{0,3}[sl]|m)\s+(?:or|and)\s+"
    r"(bigger|larger|up|above|over|more|smaller|below|under|less)(?![a-z0-9])"
)
_SIZE_WORD = re.compile(r"(?<![a-z0-9-])((?:extra[\s-]+|x-)?(?:small|medium|large))(?![a-z0-9-])")


def _num(raw: str) -> float:
    return float(raw.replace(",", "."))


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
    ranges: dict[str, OptionRange] = field(default_factory=dict)  # numeric bounds read, per option key
    leftover: str = ""  # the (normalised) text no rule read: what :func:`unverified_terms` looks at
    ambiguous: list[tuple[str, str]] = field(default_factory=list)  # (key, value) readings not chosen
    bool_groups: list[set[str]] = field(default_factory=list)  # yes/no options one phrase named together
    paths: tuple[str, ...] = ()  # the category paths the message was read in (its own, else the context's)

    @property
    def has_category(self) -> bool:
        return bool(self.query.category)


class _Text:
    """Normalised text with a consumed-character mask, so no span is read twice."""

    def __init__(self, text: str, vocab: ShopVocabulary | None = None) -> None:
        self.raw = text
        low = normalise_text(text)
        if vocab is not None:
            low = normalise_numbers(vocab.fix_typos(low))
        self.low = low
        self.used = [False] * len(self.low)
        self.released: set[tuple[int, int]] = set()  # category words that name an option value instead

    def untake(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.used[i] = False

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
    return _words_pattern(tuple(words)).search(before + " | " + after) is not None


@functools.lru_cache(maxsize=1024)
def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Any of ``words`` as a whole word (one compiled pattern per set of words)."""
    alternatives = "|".join(re.escape(w) for w in words) or "(?!)"
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")


def parse_rules(message: str, vocab: ShopVocabulary, context_paths: Sequence[str] = ()) -> TurnDelta:
    """Read one shopper message with the catalogue's vocabulary (``context_paths``: the categories the
    conversation is already in, used to read attribute values such as "floral" the right way)."""
    t = _Text(message, vocab)
    d = TurnDelta()
    q = d.query

    spans = parse_range_spans(t)  # "at least 6 hours", "1.5 liters or more": before prices read numbers
    _parse_prices(t, d)
    _parse_indifference(t, vocab)
    _parse_bool_attributes(t, d, vocab)
    _parse_not_just(t, d, vocab)
    _parse_exclusions(t, d, vocab)
    _parse_post_negations(t, d, vocab)
    _parse_gender(t, d)
    _parse_category(t, d, vocab)
    paths = vocab.resolve_category(q.category) or list(context_paths)
    d.paths = tuple(paths)
    _scope_bool_groups(d, vocab, paths)
    resolve_ranges(t, d, vocab, paths, spans)
    resolve_age(t, d, vocab, paths)
    _gender_option(t, d, vocab, paths)
    _parse_attributes(t, d, vocab, paths)
    _negative_values(d, vocab, paths)
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
    d.leftover = " ".join(t.remaining().split())
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
            if m.group(0).endswith("+") and not re.search(r"[$€£]|dollar|buck|usd|eur", m.group(0)):
                continue  # "12+", "8+": an age or a count as products write it, not a price
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


def _bool_phrases(vocab: ShopVocabulary) -> list[tuple[str, re.Pattern[str], frozenset[str]]]:
    """(phrase, pattern, keys) for every phrase that names a yes/no option, longest first; built once per
    vocabulary (it never changes)."""
    cached = vocab.__dict__.get("_bool_phrase_cache")
    if cached is not None:
        return cached
    phrases: dict[str, set[str]] = {}
    # Yes/no options, and options with a "yes" among other values ("water resistance": yes, no, IPX7).
    yes_keys = {
        k for k in BOOL_SYNONYMS if k not in vocab.bool_keys and "yes" in vocab.attr_counts.get(k, {})
    }
    for key in yes_keys:
        phrases.setdefault(key, set()).add(key)
        for phrase in BOOL_SYNONYMS[key]:
            phrases.setdefault(phrase, set()).add(key)
    for key in vocab.bool_keys:
        words = key.split()
        phrases.setdefault(key, set()).add(key)
        if len(words) > 1 and len(words[0]) >= 6:
            phrases.setdefault(words[0], set()).add(key)  # "induction" for "induction ready"
        for phrase in BOOL_SYNONYMS.get(key, ()):
            phrases.setdefault(phrase, set()).add(key)
    # Spellings that differ only in spaces and hyphens ("water proof", "waterproof") can read the same
    # text, so each names every key any of them names.
    spelled: dict[str, set[str]] = {}
    for phrase, keys in phrases.items():
        spelled.setdefault(re.sub(r"[\s\-/]+", "", phrase), set()).update(keys)
    cached = [
        (phrase, phrase_regex(phrase), frozenset(spelled[re.sub(r"[\s\-/]+", "", phrase)]))
        for phrase in sorted(phrases, key=len, reverse=True)
    ]
    vocab.__dict__["_bool_phrase_cache"] = cached
    return cached


def _parse_bool_attributes(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    """Yes/no attributes by name: "waterproof" -> yes, "not waterproof" -> no. A phrase that names
    several such options ("waterproof": waterproof / water resistance) sets them all; the ones the
    category lacks are dropped once it is known (:func:`_scope_bool_groups`)."""
    for _, pattern, keys in _bool_phrases(vocab):
        for m in t.finditer(pattern):
            before = t.low[max(0, m.start() - 12) : m.start()]
            neg = re.search(r"(?<![a-z])(?:not|no|non|without)[\s-]*$", before)
            for key in keys:
                d.query.attributes[key] = ["no" if neg else "yes"]
            if len(keys) > 1:
                d.bool_groups.append(set(keys))
            d.certain.add("attributes")
            start = m.start() - (len(before) - neg.start()) if neg else m.start()
            t.take(start, m.end())


def _scope_bool_groups(d: TurnDelta, vocab: ShopVocabulary, paths: Sequence[str]) -> None:
    scope = vocab.attributes_for(paths)
    for group in d.bool_groups:
        kept = [k for k in group if k in scope]
        if kept:
            for key in group - set(kept):
                d.query.attributes.pop(key, None)


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


_NOT_JUST = re.compile(r"(?<![a-z0-9])not (?:just|only|merely)\s+")


def _parse_not_just(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    """ "Not just wifi": a value that offers more than the one named ("Wi-Fi + Cellular")."""
    for m in list(t.finditer(_NOT_JUST)):
        found = _longest_value_at(t, m.end(), vocab)
        if found is None:
            continue
        term, length = found
        low = term.lower()
        words = set(tokenize(low))
        for key, counts in vocab.attr_counts.items():
            if low not in counts:
                continue
            more = [v for v in counts if v != low and words and words < set(tokenize(v))]
            if more:
                d.query.attributes[key] = sorted(more)
                d.certain.add("attributes")
                t.take(m.start(), m.end() + length)
                break


def _keys_of(term: str, vocab: ShopVocabulary) -> set[str]:
    low = term.lower()
    return {k for k, counts in vocab.attr_counts.items() if low in counts}


def _parse_exclusions(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    for m in list(t.finditer(_NEGATION)):
        if not t.free(m.start(), m.end()):
            continue
        pos = m.end()
        # "no laptop sleeve", "no armrests": an option whose values include "none", named after the
        # negation, is set to none.
        none_key = next(
            (k for k, c in vocab.attr_counts.items() if "none" in c and " " in k and phrase_regex(k, plural=True).match(t.low, pos)),
            None,
        )
        if none_key is not None:
            d.query.attributes[none_key] = ["none"]
            d.certain.add("attributes")
            t.take(m.start(), phrase_regex(none_key, plural=True).match(t.low, pos).end())
            continue
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
            # "no backlight", "no armrests": an option whose values include "none" is set to none.
            named = [k for k, c in vocab.attr_counts.items() if "none" in c and tok[0] in tokenize(k)]
            if len(named) == 1:
                d.query.attributes[named[0]] = ["none"]
                d.certain.add("attributes")
                t.take(m.start(), end)
                continue
        if term.lower() not in [e.lower() for e in d.query.exclusions]:
            d.query.exclusions.append(term)
        d.certain.add("exclusions")
        t.take(m.start(), end)
        # "not leather or suede": the next alternatives are excluded as well; after a bare comma only a
        # value of the same option ("not red, pink or orange", but not "no leather, block heel").
        first_keys = _keys_of(term, vocab)
        while True:
            more = re.match(r"\s*(?:,\s*(?:or|nor)?|or|nor|and|/)\s*", t.low[end:])
            if not more:
                break
            nxt = _longest_value_at(t, end + more.end(), vocab)
            if nxt is None:
                break
            if more.group(0).strip() == "," and not (first_keys & _keys_of(nxt[0], vocab)):
                break
            if nxt[0].lower() not in [e.lower() for e in d.query.exclusions]:
                d.query.exclusions.append(nxt[0])
            t.take(end, end + more.end() + nxt[1])
            end = end + more.end() + nxt[1]


_POST_NEGATION = re.compile(
    r"\s+(?:is|are|'s|'re)\s+(?:a no(?:-go| go)?|out|off the table|not for me|a dealbreaker|a deal breaker|"
    r"not an option|not ok(?:ay)?)(?![a-z0-9])"
)


def _parse_post_negations(t: _Text, d: TurnDelta, vocab: ShopVocabulary) -> None:
    """ "brown is a no", "leather is out": the value just before the phrase is excluded."""
    for m in list(t.finditer(_POST_NEGATION)):
        for start in range(max(0, m.start() - 30), m.start()):
            if start and t.low[start - 1].isalnum():
                continue
            found = _longest_value_at(t, start, vocab)
            if found is None or start + found[1] != m.start() or not t.free(start, m.start()):
                continue
            term = found[0]
            if term.lower() not in [e.lower() for e in d.query.exclusions]:
                d.query.exclusions.append(term)
            d.certain.add("exclusions")
            t.take(start, m.end())
            break


# "leather is fine", "don't need waterproof": a value the shopper accepts but does not ask for.
_INDIFFERENT_AFTER = re.compile(
    r"\s+(?:is|are|'s|'re|would be|will do)\s+(?:fine|ok(?:ay)?|alright|all right|also fine|fine too|good too)"
    r"(?![a-z0-9])"
)
_INDIFFERENT_BEFORE = re.compile(
    r"(?<![a-z0-9])(?:(?:don'?t|do not|doesn'?t|does not|needn'?t|need not)\s+(?:need|have)(?:\s+to)?(?:\s+be)?|"
    r"(?:doesn'?t|does not|don'?t|do not|needn'?t|need not)\s+(?:need\s+to\s+)?be|no need (?:for|to be)|"
    r"not necessarily)\s+(?:a\s+|an\s+|the\s+)?"
)


def _parse_indifference(t: _Text, vocab: ShopVocabulary) -> None:
    """Values the shopper accepts without asking for them ("polyester is fine", "manual tilt is ok",
    "doesn't have to be waterproof"): their words are read as no constraint at all."""
    for m in list(t.finditer(_INDIFFERENT_AFTER)):
        for start in range(max(0, m.start() - 30), m.start()):
            if start and t.low[start - 1].isalnum():
                continue
            found = _longest_value_at(t, start, vocab)
            if found is None or not t.free(start, m.start()):
                continue
            # The value, or the value and its option's name ("low speed is fine": speed settings low).
            between = t.low[start + found[1] : m.start()].split()
            names = {w for k in _keys_of(found[0], vocab) for w in k.split()}
            if not between or (len(between) == 1 and between[0] in names):
                t.take(start, m.end())
                break
    for m in list(t.finditer(_INDIFFERENT_BEFORE)):
        found = _longest_value_at(t, m.end(), vocab)
        length = found[1] if found is not None else 0
        for _, pattern, _ in _bool_phrases(vocab):
            b = pattern.match(t.low, m.end())
            if b is not None and b.end() - m.end() > length:
                length = b.end() - m.end()
        if length:
            t.take(m.start(), m.end() + length)


def _gender_option(t: _Text, d: TurnDelta, vocab: ShopVocabulary, paths: Sequence[str]) -> None:
    """ "women's perfume" where gender is an option of the product (men / unisex / women), not only a
    department: the option is set too. Where the categories hold one gender only, the department says it."""
    key = vocab.gender_key
    values = vocab.attributes_for(paths).get(key or "", frozenset()) if paths else frozenset()
    if d.gender and key and d.gender in values and len(values) > 1:
        d.query.attributes[key] = [d.gender]
        d.certain.add("attributes")
    elif key and "unisex" in values and phrase_regex("unisex").search(t.low):
        d.query.attributes[key] = ["unisex"]  # "a unisex fragrance"
        d.certain.add("attributes")


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
        # No product word: an option value only one category has ("retinol": skincare) names it.
        found = _value_category(t, vocab, frozenset(), d.gender)
        if found:
            d.query.category = vocab.canonical_category(sorted(found))
        return  # a gender alone ("for men") narrows the conversation's category in update_query
    # "a fleece bed": a category word right before a product word whose categories have it as an option
    # value describes that product (the bed's fleece), so the product word is the head, certain or not.
    for a in [x for x in mentions if x.certain]:
        for b in mentions:
            if b is a or b.start != a.end + 1 or t.low[a.end] != " " or b.certain:
                continue
            values = {v for vs in vocab.attributes_for(sorted(b.paths)).values() for v in vs}
            if t.low[a.start : a.end] in values and not (a.paths & b.paths):
                mentions = [x for x in mentions if x is not a]
                b.certain = True
                break
    # Certain mentions outrank title-word guesses.
    guesses = [x for x in mentions if not x.certain]
    if any(x.certain for x in mentions):
        mentions = [x for x in mentions if x.certain]
    mentions.sort(key=lambda x: x.start)
    # The product sought is the head of the first clause: "hiking boots" -> boots,
    # "shoes to go with my dress" -> shoes (what follows "for"/"with" is context).
    bounds = [m.start() for m in _CONTEXT_SPLIT.finditer(t.low)] + [len(t.low) + 1]
    first_clause = next(b for b in bounds if any(x.start < b for x in mentions))
    clause = [x for x in mentions if x.start < first_clause]
    # "perfume, 100 ml bottle": a container named by its volume after the product is its size, not a
    # second product (unless it is the only product named: "500ml water bottle").
    heads = [x for x in clause if not _VOLUME_BEFORE.search(t.low[: x.start])] or clause
    chosen = heads[-1].paths
    for other in heads[:-1]:
        combined = _combine(other.paths, chosen)
        if combined:
            chosen = combined
    if len(chosen) > 1:
        # A certain word that names several departments ("storage": home, kitchen) and a title word of
        # the same clause that names one of them ("storage box"): that one.
        for guess in (g for g in guesses if g.start < first_clause):
            narrowed = _combine(guess.paths, chosen)
            if narrowed and narrowed < chosen:
                chosen = narrowed
    # The words of every mention still rank products: "espresso machine" within appliances,
    # "hiking" boots.
    d.content.extend(tok for x in everything for tok in vocab.content_tokens(t.low[x.start : x.end]))
    if not any(x.certain for x in clause):
        # A title-word guess ("cover": bedding, cushions) gives way to an option value that only one
        # category has ("pixel 8": a phone case model), when the guess's categories lack it.
        chosen = _value_category(t, vocab, chosen, d.gender) or chosen
    paths = sorted(chosen)
    if d.gender:
        gendered = [p for p in paths if p.split(" > ")[0].lower() == d.gender]
        paths = gendered or paths
    d.query.category = vocab.canonical_category(paths)
    # A category word that names an option value of the product sought is that value ("camera backpack":
    # the backpack's camera compartment, not a camera): released for the attribute reader.
    scope_values = {v for values in vocab.attributes_for(paths).values() for v in values}
    for x in everything:
        if not (x.paths & chosen) and t.low[x.start : x.end] in scope_values:
            t.untake(x.start, x.end)
            t.released.add((x.start, x.end))
    # A title phrase that holds an option value ("magnetic tiles": material magnetic plastic, "linen shirt"):
    # read as the category, its value still has to be the card's own, or the card is near.
    scope = vocab.attributes_for(paths)
    for x in everything:
        if (x.start, x.end) in t.released:
            continue
        words = t.low[x.start : x.end]
        for pattern, key, value in vocab._value_patterns:
            if value in scope.get(key, ()) and key not in vocab.bool_keys and (key, value) not in vocab._context_values:
                m = pattern.search(words)
                # (Not a category's own name: "plush toy" is Toys > Plush, whatever its material.)
                if m and m.group(0) not in vocab.segment_paths and (key, value) not in d.ambiguous:
                    d.ambiguous.append((key, value))
    if all(x.certain for x in clause):
        d.certain.add("category")


def _value_category(
    t: _Text, vocab: ShopVocabulary, guess: frozenset[str], gender: str | None = None
) -> frozenset[str] | None:
    """The one leaf category whose own option value the text names, if the guessed categories lack it
    (of the shopper's gender's departments, when one was said: "denim for women")."""
    guessed = set(vocab.leaves_under(sorted(guess))) if guess else set()
    found: set[str] = set()
    for pattern, key, value in vocab._value_patterns:
        if len(value) < 4 or (key, value) in vocab._context_values or vocab.is_colour(value):
            continue
        if not any(t.free(m.start(), m.end()) for m in pattern.finditer(t.low)):
            continue
        leaves = {leaf for leaf, attrs in vocab.attr_by_leaf.items() if value in attrs.get(key, ())}
        if gender:
            leaves = {leaf for leaf in leaves if leaf.split(" > ")[0].lower() == gender} or leaves
        if len(leaves) == 1 and not leaves & guessed:
            found |= leaves
    return frozenset(found) if len(found) == 1 else None


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
            # "a dress in medium", "in extra large": a size word after "in" ends its phrase.
            r"|(?<![a-z0-9])in\s+((?:extra\s+)?(?:small|medium|large))(?=\s*(?:[,.;!?]|$|and\b|or\b|please\b|pls\b|no\b|not\b))"
        )
    ):
        raw = (m.group(1) or m.group(2) or m.group(3)).strip()
        for candidate in (raw, _SIZE_WORDS.get(raw, "")):
            key = next((k for k in size_keys if candidate and candidate in scope.get(k, ())), None)
            if key:
                add(key, candidate)
                t.take(m.start(), m.end())
                break
        else:
            # "size 8" where the categories' sizes are 36-46: a stated size nothing has, so no card is an
            # exact match (near alternatives say what differs) rather than any size passing.
            said = m.group(0).split()[0] in ("size", "sized")
            if said and paths and "size" in scope and re.fullmatch(r"\d{1,2}(?:\.5)?|x{0,3}[sml]", raw):
                add("size", f"{raw} (none in the catalogue)")
                t.take(m.start(), m.end())
    # "medium or bigger", "L or smaller", "size M and up": the letter sizes on that side of the one named.
    for m in t.finditer(_SIZE_SIDE):
        word = re.sub(r"[\s-]+", " ", m.group(1))
        letter = _SIZE_WORDS.get(word, word)
        key = next((k for k in size_keys if k.endswith("size") and letter in scope.get(k, ())), None)
        if key is None or letter not in _LETTER_SIZES:
            continue
        at = _LETTER_SIZES.index(letter)
        up = m.group(2) in ("bigger", "larger", "up", "above", "over", "more")
        for value in sorted(scope[key], key=lambda v: _LETTER_SIZES.index(v) if v in _LETTER_SIZES else -1):
            if value in _LETTER_SIZES and (_LETTER_SIZES.index(value) >= at if up else _LETTER_SIZES.index(value) <= at):
                add(key, value)
        t.take(m.start(), m.end())
    # Size words on their own ("a jacket for men, large"): S, M, L ... where the sizes are letters.
    for m in t.finditer(_SIZE_WORD):
        word = re.sub(r"[\s-]+", " ", m.group(1))
        after = re.match(r"\s+([a-z]+)", t.low[m.end() :])
        if after and any(
            word in values and after.group(1) in tokenize(k) for k, values in scope.items() if k not in size_keys
        ):
            continue  # "medium ventilation", "large room": that option's value, read below
        letter = _SIZE_WORDS.get(word.replace("x large", "extra large").replace("x small", "extra small"))
        key = next((k for k in size_keys if k.endswith("size") and letter in scope.get(k, ())), None)
        if key and word not in scope.get(key, ()):
            add(key, letter)
            t.take(m.start(), m.end())
    # Every other vocabulary value, longest first; each phrase read once, for one key.
    matched: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for pattern, key, value in vocab._value_patterns:
        for m in pattern.finditer(t.low):
            if not t.free(m.start(), m.end()):
                continue
            matched.setdefault((m.start(), m.end()), []).append((key, value))
    held: list[tuple[int, int, list[tuple[str, str]]]] = []  # context values not read yet
    read_spans: list[tuple[int, int, str]] = []
    for (start, end), options in sorted(matched.items(), key=lambda kv: (-(kv[0][1] - kv[0][0]), kv[0][0])):
        if not t.free(start, end):
            continue
        options = [(k, v) for k, v in options if v in scope.get(k, ())] or (options if not paths else [])
        usable = []
        waiting = []
        for key, value in options:
            if (key, value) in vocab._context_values and not _near(t, start, end, key.split() + ["size"]):
                # "in cream", "colour cream": a colour named as one; ", large,": a value listed on its own.
                before = t.low[max(0, start - 12) : start]
                named_colour = key == vocab.color_key and (
                    re.search(r"(?<![a-z])(?:in|colou?r|colou?red)\s+$", before)
                    or re.match(r"[\s-]*colou?r(?:ed)?(?![a-z])", t.low[end:])  # "cream coloured"
                )
                if not (
                    named_colour
                    or (start, end) in t.released
                    or (paths and _listed_alone(t.low, start, end))
                    # Colours and sizes only: titles use words such as "Relaxed" loosely, so a typed
                    # title must not become a fit.
                    or ((key == vocab.color_key or key.endswith("size")) and _before_category(t.low, end, vocab))
                ):
                    waiting.append((key, value))
                    continue
            usable.append((key, value))
        if not usable:
            if waiting:
                held.append((start, end, waiting))
            continue
        # One phrase, several keys ("cream" colour / finish): colour first, then the most common use.
        usable.sort(key=lambda kv: (kv[0] != vocab.color_key, -vocab.attr_counts[kv[0]][kv[1]]))
        key, value = usable[0]
        named = [kv for kv in usable if _near(t, start, end, kv[0].split())]
        if len(usable) > 1 and len(named) == 1:
            key, value = named[0]
        elif len(usable) > 1:
            d.ambiguous += [(k, v) for k, v in usable[1:]]  # "brass": colour read, material unchecked
        add(key, value)
        read_spans.append((start, end, key))
        t.take(start, end)
    # "cream or brown": a context value joined by "or"/"and"/"," to a value read for the same option.
    for start, end, waiting in held:
        if not t.free(start, end):
            continue
        for key, value in waiting:
            if any(
                k == key
                and (
                    re.fullmatch(r"\s*(?:,|or|and|/|, or)\s*", t.low[end:s0])
                    if s0 >= end
                    else re.fullmatch(r"\s*(?:,|or|and|/|, or)\s*", t.low[e0:start])
                )
                for s0, e0, k in read_spans
            ):
                add(key, value)
                t.take(start, end)
                break
    _read_listed_groups(t, held, add)
    _read_graded_words(t, scope, found, add)
    _read_bare_sizes(t, scope, found, add)
    # A product word that names a value too ("jeans": denim), where the catalogue has that value.
    for phrase, value in IMPLIED_VALUES.items():
        if phrase_regex(phrase, plural=True).search(t.low):
            for key, values in scope.items():
                if value in values and key not in found and key not in d.query.attributes:
                    add(key, value)
    for key, values in found.items():
        expanded: list[str] = list(d.query.attributes.get(key, []))
        for value in values:
            for same in vocab.equivalents(key, value):
                if same not in expanded:
                    expanded.append(same)
        d.query.attributes[key] = expanded
        d.certain.add("attributes")


_JOINER = re.compile(r"\s*(?:,\s*or|or|and|/)\s*")

_VOLUME_BEFORE = re.compile(r"\d\s*(?:ml|l|litres?|liters?|oz)\s*$")

# Everyday words for one end of an ordered option: "a big teddy" (size large), "a bright desk lamp"
# (brightness high). Read only where one option of the categories has that value; the option is found by
# a word of its name ("size", "bright").
_GRADED_WORDS: dict[str, tuple[str, str]] = {
    "big": ("size", "large"), "huge": ("size", "large"), "little": ("size", "small"), "tiny": ("size", "small"),
    "bright": ("bright", "high"), "dim": ("bright", "low"),
}  # fmt: skip
_GRADED = re.compile(r"(?<![a-z0-9-])(" + "|".join(_GRADED_WORDS) + r")(?![a-z0-9-])")
# A number on its own after the product ("boots 44", "sneakers for women in 38", "burgundy, 37"), ending its
# phrase: a shoe size where the categories' sizes are numbers.
_BARE_NUMBER = re.compile(
    r"(?<![a-z0-9.$-])(\d{1,2}(?:\.5)?)(?=\s*(?:[,.;!?]|$)|\s+(?:not|no|or|and|but|please|pls|in|for|with)\b)"
)


def _negative_values(d: TurnDelta, vocab: ShopVocabulary, paths: Sequence[str]) -> None:
    """ "earbuds, not water resistant": a yes/no option read as "no" where the categories write its "no"
    as a value of their own ("not resistant", "none") takes that value."""
    if not paths:
        return
    scope = vocab.attributes_for(paths)
    for key, values in d.query.attributes.items():
        have = scope.get(key, frozenset())
        if values == ["no"] and have and "no" not in have:
            negative = [v for v in have if v == "none" or re.match(r"(?:not|non)[\s-]", v)]
            if len(negative) == 1:
                d.query.attributes[key] = negative


def _read_graded_words(
    t: _Text, scope: Mapping[str, Any], found: Mapping[str, list[str]], add: Callable[[str, str], None]
) -> None:
    for m in t.finditer(_GRADED):
        name, value = _GRADED_WORDS[m.group(1)]
        keys = [k for k, values in scope.items() if name in k and value in values]
        if len(keys) == 1 and keys[0] not in found:
            add(keys[0], value)
            t.take(m.start(), m.end())


def _read_bare_sizes(
    t: _Text, scope: Mapping[str, Any], found: Mapping[str, list[str]], add: Callable[[str, str], None]
) -> None:
    sizes = [v for v in scope.get("size", ()) if re.fullmatch(r"\d{1,2}(?:\.5)?", v)]
    if "size" in found or not sizes or len(sizes) < len(scope["size"]):
        return  # no size option, one already read, or sizes that are not all numbers (a "6 ft" umbrella)
    low, high = min(map(float, sizes)), max(map(float, sizes))
    for m in t.finditer(_BARE_NUMBER):
        raw = m.group(1)
        if raw in sizes:
            add("size", raw)
        elif low - 2 <= float(raw) <= high + 2:
            add("size", f"{raw} (none in the catalogue)")  # a size the categories lack: no exact card
        else:
            continue
        t.take(m.start(), m.end())


def _read_listed_groups(
    t: _Text, held: list[tuple[int, int, list[tuple[str, str]]]], add: Callable[[str, str], None]
) -> None:
    """ "hiking boots, leather, 11 or 12": values of one option joined by "or"/"and"/"/" that together
    make a whole item of a comma list are that option's values, as one value listed alone would be."""
    waiting = sorted((s, e, opts) for s, e, opts in held if t.free(s, e))
    i = 0
    while i < len(waiting):
        start, end, options = waiting[i]
        keys = {k for k, _ in options}
        chain = [waiting[i]]
        j = i + 1
        while j < len(waiting) and _JOINER.fullmatch(t.low[chain[-1][1] : waiting[j][0]]):
            shared = keys & {k for k, _ in waiting[j][2]}
            if not shared:
                break
            keys = shared
            chain.append(waiting[j])
            j += 1
        if len(chain) > 1 and len(keys) == 1 and _listed_alone(t.low, chain[0][0], chain[-1][1]):
            (key,) = keys
            for s0, e0, opts in chain:
                add(key, next(v for k, v in opts if k == key))
                t.take(s0, e0)
            t.take(chain[0][0], chain[-1][1])
            i = j
        else:
            i += 1


def _before_category(low: str, end: int, vocab: ShopVocabulary) -> bool:
    """The phrase sits right before a category word ("a cream kettle", "small soft toy"): an adjective of
    the product sought, so a value that needs its option named nearby counts here too."""
    rest = low[end:]
    gap = re.match(r"\s+", rest)
    if gap is None:
        return False
    rest = rest[gap.end() :]
    return any(pattern.match(rest) for pattern, _, certain, _ in vocab._category_phrases if certain)


def _listed_alone(low: str, start: int, end: int) -> bool:
    """The phrase is a whole item of a comma list: "teddy bear, large, cream or brown"."""
    before = low[:start].rstrip()
    after = low[end:].lstrip()
    return before.endswith(",") and (not after or after[0] in ",.")


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
