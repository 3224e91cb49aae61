"""Numeric option constraints: "at least 6 hours", "up to 50 lbs", "1.5 liters or more", "under 15
inches", "between 8 and 16 GB", "a 2 liter kettle" -> an :class:`OptionRange` on one option key
(``TurnDelta.ranges``) and the exact catalogue values inside it (``query.attributes[key]``), so search filters stay exact value filters.

The phrases are found (and their characters reserved) before prices are read, so "6+ hours" is never a
price; the option key is chosen once the category is known: the keys in scope whose values carry the
same dimension, then the one named nearby ("16GB of RAM"), then the one whose values span the number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from concierge.shop.query.numbers import _UNIT_ALT, COUNT_KEYS, NUMBER, unit_of
from concierge.shop.query.structured import OptionRange

_Q = rf"({NUMBER})\s*-?\s*({_UNIT_ALT})(?![a-z0-9])"
_N = rf"({NUMBER})"
_MIN_PRE = (
    r"at least|minimum(?: of)?|min\.?|no less than|not less than|more than|over|above|bigger than|larger than|"
    r"longer than|greater than|higher than|upwards of|starting at|>=?"
)
_MAX_PRE = (
    r"up to|at most|maximum(?: of)?|max\.?|no more than|not more than|under|below|less than|smaller than|"
    r"shorter than|lighter than|within|no bigger than|no larger than|no heavier than|no longer than|<=?"
)
_STRICT = {"more than", "over", "above", "bigger than", "larger than", "longer than", "greater than",
           "higher than", "upwards of", ">", "under", "below", "less than", "smaller than", "shorter than",
           "lighter than", "<"}  # fmt: skip
_MIN_POST = (
    r"or more|or longer|or bigger|or larger|or higher|or above|or greater|or taller|or brighter|or better|"
    r"or thicker|or heavier|or wider|and up|and above|plus|minimum|min|at least|\+"
)
_MAX_POST = (
    r"or less|or under|or smaller|or shorter|or lighter|or below|or fewer|or thinner|or narrower|"
    r"max(?:imum)?|tops|at most"
)
# "60w equivalent or brighter", "5x zoom or more": one word may sit between the quantity and the bound.
_GAP = r"(?:\s+[a-z]+)?\s*"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # Temperatures, signed: "-5 C or colder" / "rated to -5 C" (at most -5), "10 C or warmer" (at least).
    (
        "temperature",
        re.compile(
            r"(?<![a-z0-9.])(?:(rated to|good to|down to|comfortable to|comfort to|below|under|colder than)\s+)?"
            r"(-?\d{1,2})\s*°?\s*(c|celsius)"
            r"(?![a-z0-9])(?:\s+or\s+(colder|lower|less|below|warmer|higher|more|above))?"
        ),
    ),
    (
        "between",
        re.compile(rf"(?<![a-z0-9])(?:between|from)\s+{_N}\s*(?:{_UNIT_ALT})?\s*(?:and|to|-)\s*{_Q}"),
    ),
    ("span", re.compile(rf"(?<![a-z0-9.]){_N}\s*(?:-|to)\s*{_Q}")),
    ("min_plus", re.compile(rf"(?<![a-z0-9.]){_N}\+\s*({_UNIT_ALT})(?![a-z0-9])")),
    ("min_pre", re.compile(rf"(?<![a-z0-9])({_MIN_PRE})\s*{_Q}")),
    ("max_pre", re.compile(rf"(?<![a-z0-9])({_MAX_PRE})\s*{_Q}")),
    ("min_post", re.compile(rf"(?<![a-z0-9.]){_Q}{_GAP}(?:{_MIN_POST})(?![a-z0-9])")),
    ("max_post", re.compile(rf"(?<![a-z0-9.]){_Q}{_GAP}(?:{_MAX_POST})(?![a-z0-9])")),
    ("exact", re.compile(rf"(?<![a-z0-9.]){_Q}")),
    # "a tent for 2", "sleeps 4": a head count, kept only where an option counts persons.
    ("persons", re.compile(r"(?<![a-z0-9])(?:for|sleeps|fits)\s+(\d{1,2})(?!\d|[.,]\d|\s*(?:[a-z$€£]|-))")),
    # "mugs, a pair": two pieces, kept only where an option counts pieces.
    ("pair", re.compile(r"(?<![a-z0-9])(?:a\s+)?pair(?:\s+of)?(?![a-z0-9])")),
    # "sleeps at least 3", "fits up to 4": a head count with its bound.
    (
        "persons_bound",
        re.compile(
            r"(?<![a-z0-9])(?:sleeps|fits|seats)\s+(at least|minimum|min|up to|at most|max|maximum)\s+(\d{1,2})"
            r"(?!\d|[.,]\d|\s*(?:[a-z$€£]|-))"
        ),
    ),
]
# Units too ambiguous to read without a comparator ("13 in black", "a 2 man job").
_EXACT_AMBIGUOUS = {"in", "man", "x", "pc", "h", "l", '"'}

# Words shoppers use for an option key.
KEY_WORDS: dict[str, tuple[str, ...]] = {
    "ram": ("ram", "memory"),
    "storage": ("storage", "ssd", "space", "disk", "drive"),
    "battery life": ("battery", "battery life", "playtime", "runtime"),
    "screen size": ("screen", "display"),
    "capacity": ("capacity", "holds", "fits"),
    "weight range": ("weight", "weights"),
    "thickness": ("thick", "thickness"),
    "length": ("long", "length"),
    "height": ("tall", "height", "high"),
    "diameter": ("diameter", "across", "wide"),
}


@dataclass
class RangeSpan:
    start: int
    end: int
    range: OptionRange
    exact: bool


def parse_range_spans(t: Any) -> list[RangeSpan]:
    """Quantity phrases in the text, as ranges; their characters are reserved (see :func:`resolve_ranges`)."""
    out: list[RangeSpan] = []
    for kind, pattern in _PATTERNS:
        for m in t.finditer(pattern):
            g = m.groups()
            if kind == "temperature":
                down, num, unit, bound = g[0], float(g[1]), g[2], g[3]
                if bound in ("warmer", "higher", "more", "above"):
                    r = _range(unit, num, None)
                elif down in ("below", "under", "colder than"):
                    r = _range(unit, None, num, strict=True)
                elif bound or down:
                    r = _range(unit, None, num)
                else:
                    r = _range(unit, num, num)
            elif kind in ("between", "span"):
                unit, lo, hi = g[2], float(g[0]), float(g[1])
                r = _range(unit, lo, hi)
            elif kind == "min_plus":
                unit = g[1]
                r = _range(unit, float(g[0]), None)
            elif kind in ("min_pre", "max_pre"):
                word, num, unit = g[0].strip(), float(g[1]), g[2]
                strict = word in _STRICT
                r = _range(unit, num, None, strict) if kind == "min_pre" else _range(unit, None, num, strict)
            elif kind in ("min_post", "max_post"):
                num, unit = float(g[0]), g[1]
                r = _range(unit, num, None) if kind == "min_post" else _range(unit, None, num)
            elif kind == "pair":
                r = _range("piece", 2, 2)
            elif kind == "persons":
                num = float(g[0])
                r = _range("person", num, num)
            elif kind == "persons_bound":
                num = float(g[1])
                r = _range("person", num, None) if g[0] in ("at least", "minimum", "min") else _range("person", None, num)
            else:
                num, unit = float(g[0]), g[1]
                attached = unit == '"' and t.low[m.start(2) - 1].isdigit()  # 16" is inches; "16 " a quote
                attached = attached or (unit == "l" and "." in g[0])  # "1.5 l" is litres; "13 l" may be a size
                if unit in _EXACT_AMBIGUOUS and not attached:
                    continue
                r = _range(unit, num, num)
            if r is None:
                continue
            out.append(RangeSpan(m.start(), m.end(), r, kind in ("exact", "pair")))
            t.take(m.start(), m.end())
    return out


def _range(unit: str, lo: float | None, hi: float | None, strict: bool = False) -> OptionRange | None:
    found = unit_of(unit)
    if found is None:
        return None
    dim, factor = found
    lo = lo * factor if lo is not None else None
    hi = hi * factor if hi is not None else None
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return OptionRange(
        min=lo, max=hi, unit=dim, min_inclusive=not (strict and lo is not None),
        max_inclusive=not (strict and hi is not None),
    )  # fmt: skip


def _near_words(text: str, start: int, end: int, words: Sequence[str], window: int = 28) -> bool:
    around = text[max(0, start - window) : start] + " | " + text[end : end + window]
    return any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", around) for w in words)


_AGE = re.compile(
    r"(?<![a-z0-9])(?:for )?(?:an? )?(\d{1,2})[\s-]*(?:years?|yrs?|yo)(?:[\s-]*old)?(?![a-z0-9])"
    # "he's 6", "she is 8", "aged 10", "turning 4": a child's age said without "years".
    r"|(?<![a-z0-9])(?:(?:he|she|they|who)(?:'s|'re| is| are| turns| turned)|aged?|turning)\s+(\d{1,2})"
    r"(?![\d.,%+-]|\s*(?:months?|weeks?|days?|ft|feet|foot|cm|in|inch|inches|kg|lbs?|pounds?|x)(?![a-z]))"
    # "for a newborn", "for my toddler": the age of a word for a small child.
    r"|(?<![a-z0-9])(newborn|new born|baby|babies|infant|toddler)s?(?![a-z0-9])"
)
_AGE_WORDS = {"newborn": 0, "new born": 0, "baby": 0, "babies": 0, "infant": 0, "toddler": 2}


def resolve_age(t: Any, d: Any, vocab: Any, paths: Sequence[str]) -> None:
    """ "for a 6 year old": the age options ("3+", "6+") a child of that age is old enough for."""
    scope = vocab.attributes_for(paths)
    values = scope.get("age")
    if not values:
        return
    for m in t.finditer(_AGE):
        age = int(m.group(1) or m.group(2)) if (m.group(1) or m.group(2)) else _AGE_WORDS[m.group(3)]
        allowed = sorted(v for v in values if re.fullmatch(r"\d+\+", v) and int(v[:-1]) <= age)
        if allowed:
            d.query.attributes["age"] = allowed
            d.certain.add("attributes")
            t.take(m.start(), m.end())


def resolve_ranges(t: Any, d: Any, vocab: Any, paths: Sequence[str], spans: list[RangeSpan]) -> None:
    """Each reserved quantity phrase -> ``ranges[key]`` and ``attributes[key]`` (the catalogue values in
    range); a phrase no option of the categories in scope can carry is released for the other rules."""
    scope = vocab.attributes_for(paths)
    exact_keys: set[str] = set()
    for span in spans:
        r = span.range
        candidates = []
        for key, values in scope.items():
            readings = vocab.quantities.get(key, {})
            dims = {readings[v].dimension for v in values if v in readings}
            if r.unit in dims:
                candidates.append(key)
        if not candidates:
            t.untake(span.start, span.end)
            continue
        key = _choose_key(t.low, span, candidates, scope, vocab)
        readings = vocab.quantities.get(key, {})
        allowed = sorted(
            v for v in scope[key] if v in readings and readings[v].dimension == r.unit
            and _satisfies(key, r, readings[v].lo, readings[v].hi)
        )  # fmt: skip
        # "2-4 players" written as the catalogue writes a value: that value, as the shopper copied it.
        written = re.match(r"\d+\s*-\s*\d+", t.low[span.start : span.end])
        literal = written and re.sub(r"\s+", "", written.group(0))
        if literal and literal in allowed:
            allowed = [literal]
        if span.exact and not allowed:
            t.untake(span.start, span.end)  # "a 3 ft ..." the catalogue lacks: leave it to the text
            continue
        if span.exact and key in exact_keys and allowed:
            # "7 inch or 8 inch": several exact sizes of one option are alternatives.
            allowed = sorted(set(allowed) | set(d.query.attributes.get(key, [])))
        elif span.exact:
            exact_keys.add(key)
        d.ranges[key] = r
        # No catalogue value in range: a value nothing has, so no variant passes as an exact match.
        d.query.attributes[key] = allowed or [f"{r.describe()} (none in the catalogue)"]
        d.certain.add("attributes")


def _satisfies(key: str, r: OptionRange, lo: float, hi: float) -> bool:
    """Whether an option value spanning [lo, hi] meets the range. A count that spans ("2-4" players)
    is what the product supports: "8 people" wants a game that takes 8, so the span must reach it."""
    if COUNT_KEYS.get(key.lower()) == "person" and r.max is not None and r.min != r.max:
        # A group of players: "up to 8 players" needs a game that takes 8, "2 to 4 players" one that takes
        # each of 2, 3 and 4.
        return hi >= r.max and (r.min is None or lo <= r.min)
    if key.lower() in COUNT_KEYS and lo < hi:
        return (r.min is None or hi >= r.min) and (r.max is None or lo <= r.max)
    return r.holds(lo, hi)


def _choose_key(
    text: str, span: RangeSpan, candidates: list[str], scope: Mapping[str, frozenset[str]], vocab: Any
) -> str:
    if len(candidates) == 1:
        return candidates[0]
    named = [
        k for k in candidates
        if _near_words(text, span.start, span.end, (k, *KEY_WORDS.get(k, ()), *k.split()))
    ]  # fmt: skip
    if len(named) == 1:
        return named[0]
    pool = named or candidates
    number = span.range.min if span.range.min is not None else span.range.max
    if number is not None:
        spanning = []
        for k in pool:
            readings = [vocab.quantities[k][v] for v in scope[k] if v in vocab.quantities.get(k, {})]
            lo = min(q.lo for q in readings)
            hi = max(q.hi for q in readings)
            if lo <= number <= hi:
                spanning.append(k)
        if spanning:
            pool = spanning
    return sorted(pool, key=lambda k: (-sum(vocab.attr_counts[k].values()), k))[0]
