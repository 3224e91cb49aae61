"""Numbers as shoppers write them: spelled-out and colloquial amounts, quantities with units, and the
numeric reading of the catalogue's own option values ("10 hours", "1.5L", "30-50 lbs", "1TB SSD").

* :func:`normalise_numbers` rewrites a (lower-cased) request so the price and range rules see digits:
  "three grand" -> "$3000", "a hundred bucks" -> "100 bucks", "under 2k" -> "under 2000",
  "$1,200" -> "$1200", "one and a half liters" -> "1.5 liters".
* :func:`parse_quantity` reads "6 hours", "1.5 l", "13-inch", "50 lbs" as (value, dimension) with the
  value in the dimension's base unit (litres, hours, inches, GB, ...).
* :func:`value_quantity` reads a catalogue option value the same way, as an interval (lo, hi).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS: dict[str, tuple[str, float]] = {}


def _units(dimension: str, factor: float, *names: str) -> None:
    for name in names:
        _UNITS[name] = (dimension, factor)


_units("h", 1.0, "h", "hr", "hrs", "hour", "hours")
_units("l", 1.0, "l", "liter", "liters", "litre", "litres", "ltr")
_units("l", 0.001, "ml", "milliliter", "milliliters", "millilitre", "millilitres")
_units("lb", 1.0, "lb", "lbs", "pound", "pounds")
_units("lb", 2.20462, "kg", "kgs", "kilo", "kilos")
_units("in", 1.0, "in", "inch", "inches", '"', "-inch")
_units("in", 12.0, "ft", "feet", "foot")
_units("mm", 1.0, "mm")
_units("mm", 10.0, "cm")
_units("gb", 1.0, "gb", "gig", "gigs")
_units("gb", 1000.0, "tb")
_units("mah", 1.0, "mah")
_units("w", 1.0, "w", "watt", "watts")
_units("mp", 1.0, "mp", "megapixel", "megapixels")
_units("bar", 1.0, "bar")
_units("deg", 1.0, "degrees", "degree", "deg")
_units("person", 1.0, "person", "people", "persons", "man", "player", "players")
_units("piece", 1.0, "piece", "pieces", "pcs", "pc")
_units("cup", 1.0, "cup", "cups")
_units("threads", 1.0, "thread count", "threads", "tc")
_units("x", 1.0, "x")
_units("%", 1.0, "%", "percent")  # keyboard sizes ("60%", "80% or smaller")
_units("c", 1.0, "c", "°c", "celsius")  # temperature ratings ("-5 C"); "°f" is not converted

# Longest first, so "ml" wins over "m", "inches" over "in".
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
NUMBER = r"\d+(?:\.\d+)?"
QUANTITY = rf"({NUMBER})\s*-?\s*({_UNIT_ALT})(?![a-z0-9])"
QUANTITY_RE = re.compile(rf"(?<![a-z0-9.]){QUANTITY}")
# Every unit word, for the price rules' "a number before a unit is not a price" look-ahead.
UNIT_WORDS = tuple(sorted(_UNITS, key=len, reverse=True))

# Option keys whose bare numbers count things ("pieces": "1000").
COUNT_KEYS = {"pieces": "piece", "piece count": "piece", "players": "person", "thread count": "threads"}


@dataclass(frozen=True)
class Quantity:
    lo: float
    hi: float
    dimension: str


def unit_of(word: str) -> tuple[str, float] | None:
    return _UNITS.get(word.lower())


def parse_quantity(number: str, unit: str) -> Quantity | None:
    found = unit_of(unit)
    if found is None:
        return None
    dim, factor = found
    value = float(number) * factor
    return Quantity(value, value, dim)


_VALUE_RANGE = re.compile(rf"^\s*({NUMBER})\s*(?:-|–|to)\s*({NUMBER})\s*-?\s*({_UNIT_ALT})(?![a-z0-9])")
_VALUE_ONE = re.compile(rf"^\s*(-?{NUMBER})\s*-?\s*({_UNIT_ALT})(?![a-z0-9])")


def value_quantity(key: str, value: str) -> Quantity | None:
    """The numeric reading of one catalogue option value, or None when it has none."""
    low = value.strip().lower()
    m = _VALUE_RANGE.match(low)
    if m:
        found = unit_of(m.group(3))
        if found:
            dim, f = found
            return Quantity(float(m.group(1)) * f, float(m.group(2)) * f, dim)
    m = _VALUE_ONE.match(low)
    if m:
        q = parse_quantity(m.group(1), m.group(2))
        if q is not None:
            return q
    dim = COUNT_KEYS.get(key.lower())
    if dim and re.fullmatch(NUMBER, low):
        return Quantity(float(low), float(low), dim)
    span = re.fullmatch(rf"({NUMBER})\s*(?:-|–|to)\s*({NUMBER})", low)
    if dim and span:
        return Quantity(float(span.group(1)), float(span.group(2)), dim)  # "2-4" players
    return None


# --------------------------------------------------------------------------------------------------
# Spelled-out numbers and colloquial money

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = set(_ONES) | set(_TENS) | set(_SCALES) | {"a", "an", "and", "half", "couple"}
_WORD = re.compile(r"[a-z]+")
_MONEY_AFTER = r"(?:bucks|dollars?|usd|quid|grand|k)"


def _group_value(words: list[str]) -> tuple[float, float] | None:
    """(value, smallest scale) of an and-free run ("two hundred fifty", "a hundred", "a half"); a digit
    word before tens, as prices are said, is hundreds ("one fifty" = 150, "two ninety nine" = 299)."""
    if (
        len(words) in (2, 3)
        and words[0] in _ONES
        and 1 <= _ONES[words[0]] <= 9
        and (words[1] in _TENS or 10 <= _ONES.get(words[1], 0) <= 19)
        and (len(words) == 2 or (words[1] in _TENS and 1 <= _ONES.get(words[2], 0) <= 9))
    ):
        rest = _TENS.get(words[1]) or _ONES[words[1]]
        if len(words) == 3:
            rest += _ONES[words[2]]
        return float(_ONES[words[0]] * 100 + rest), 1.0
    total = current = 0.0
    seen = False
    scale = 1.0
    for i, w in enumerate(words):
        if w in _ONES:
            current += _ONES[w]
            seen = True
            scale = 1.0
        elif w in _TENS:
            current += _TENS[w]
            seen = True
            scale = 1.0
        elif w in _SCALES:
            current = (current or 1) * _SCALES[w]
            seen = True
            scale = _SCALES[w]
            if w == "thousand":
                total += current
                current = 0
        elif w == "half":
            current += 0.5
            seen = True
            scale = 0.5
        elif w == "couple":
            current += 2
            seen = True
        elif w in ("a", "an"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if nxt not in _SCALES and nxt not in ("half", "couple"):
                return None
    return (total + current, scale) if seen else None


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _replace_word_numbers(text: str) -> str:
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]
    spans: list[tuple[int, int, float]] = []
    i = 0
    while i < len(words):
        if words[i][0] not in _NUMBER_WORDS:
            i += 1
            continue
        j = i
        while (
            j < len(words)
            and words[j][0] in _NUMBER_WORDS
            and (j == i or re.fullmatch(r"[\s-]*", text[words[j - 1][2] : words[j][1]]))
        ):
            j += 1
        run = words[i:j]
        # Split the run at "and"; "one hundred and fifty" / "one and a half" merge back.
        groups: list[list[tuple[str, int, int]]] = [[]]
        for w in run:
            if w[0] == "and":
                groups.append([])
            else:
                groups[-1].append(w)
        merged: list[tuple[int, int, float, float]] = []
        for g in groups:
            while (
                g and g[0][0] in ("a", "an") and (len(g) == 1 or g[1][0] not in (*_SCALES, "half", "couple"))
            ):
                g = g[1:]
            while g and g[-1][0] in ("a", "an"):
                g = g[:-1]
            if not g:
                continue
            val = _group_value([w[0] for w in g])
            if val is None:
                continue
            value, scale = val
            if merged and value < merged[-1][3]:  # groups of one run are joined by "and"
                s0, _, v0, _ = merged[-1]
                merged[-1] = (s0, g[-1][2], v0 + value, scale)
            else:
                merged.append((g[0][1], g[-1][2], value, scale))
        for start, end, value, _ in merged:
            if text[start:end] in ("half", "a half", "an half"):
                continue
            lone = text[start:end] in ("one", "couple", "a couple")
            after = text[end:]
            if lone and not re.match(rf"[\s-]*(?:{_MONEY_AFTER}|{_UNIT_ALT})(?![a-z0-9])", after):
                continue
            spans.append((start, end, value))
        i = j
    out: list[str] = []
    last = 0
    for start, end, value in spans:
        out.append(text[last:start])
        out.append(_fmt(value))
        last = end
    out.append(text[last:])
    return "".join(out)


_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(?!\d|,\d)")
_GRAND = re.compile(rf"(?<![a-z0-9.])([$€£]\s*)?({NUMBER})\s*(?:grand|k)(?![a-z0-9])")
_A_GRAND = re.compile(r"(?<![a-z0-9])a\s+grand(?![a-z0-9])")
_PRICE_CUE = re.compile(
    r"(?:\$|€|£|under|below|less than|up to|max(?:imum)?|budget(?: of| is)?|around|about|over|above|than|"
    r"between|and|to|within|at most|at least|spend|spending|is|for|tops|-)\s*$"
)


_BY = re.compile(r"(?<![a-z0-9.])(\d{1,4}(?:\.\d+)?)\s+by\s+(\d{1,4}(?:\.\d+)?)(?![\d.])")


_SHARED_UNIT = re.compile(
    rf"(?<![a-z0-9.$])({NUMBER})\s*(?:or|/)\s*({NUMBER})\s*-?\s*({_UNIT_ALT})(?![a-z0-9])"
)
_FREEZING = re.compile(r"(?<![a-z0-9])(to|below|under|than|at)\s+freezing(?![a-z0-9])")


def normalise_numbers(text: str) -> str:
    """Digits for spelled-out numbers; thousands separators and "k"/"grand" resolved to plain amounts."""
    text = _replace_word_numbers(text)
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _BY.sub(r"\1 x \2", text)  # "50 by 50" is a size, written "50 x 50"
    text = _SHARED_UNIT.sub(r"\1 \3 or \2 \3", text)  # "7 or 8 inch": the unit is both numbers
    text = _FREEZING.sub(r"\1 0 c", text)  # "rated to freezing", "below freezing"
    text = _A_GRAND.sub("$1000", text)

    def grand(m: re.Match[str]) -> str:
        word = m.group(0).rstrip()
        is_grand = word.endswith("grand")
        before = text[: m.start()]
        # "4k" is a resolution; "2k" after a price cue (or "$2k", "3 grand") is money.
        if not is_grand and not m.group(1) and not _PRICE_CUE.search(before):
            return m.group(0)
        return "$" + _fmt(float(m.group(2)) * 1000)

    return _GRAND.sub(grand, text)
