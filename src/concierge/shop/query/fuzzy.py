"""Typo repair against the catalogue's own words (option values, category names, synonyms).

A word the catalogue does not know ("blak", "leathr", "expresso", "hedphones") is replaced by the
closest catalogue word within a small edit distance (optimal string alignment: insertions, deletions,
substitutions and adjacent transpositions), so the exact rules downstream read it. No third-party
dependency: the candidate lists are small (a few hundred words per catalogue).

Thresholds were chosen on the development half of ``tests/data/shop_requests_people.yaml``: words of
5-7 letters may be one edit away, longer words two; four-letter words only by two swapped letters or
one dropped letter ("pnik", "blak", "gren"), never by a substituted one (too many ordinary words sit one
substitution from a colour or material: "cold"/"gold", "wood"/"good"); shorter words never change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIN_LENGTH = 5  # shorter words are left alone
LONG_WORD = 7  # from this length two edits are allowed

# Ordinary words that sit close to catalogue words and must never be "corrected".
KEEP = frozenset(
    """about above after again along also always another because before being below better between
    birthday black blank bright bring brother brown cheap cheaper child children color colour could
    daughter every father first friend friends gifts gonna great green grey husband large larger least
    light lighter little longer maybe mother nicer other people pretty price prices quite really right
    since sister small smaller something still style their there these thing think those thought under
    until water where which while white whole would wanna wants write years young
    plus park lite mini maxi pale gone done dear take takes taking make makes made""".split()
)


def osa_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal string alignment distance (Damerau-Levenshtein without repeated edits), capped at limit+1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        best = cur[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
            best = min(best, cur[j])
        if best > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


SHORT_LENGTH = 4  # four-letter words: only a swapped or a dropped letter is repaired ("pnik", "blak")


def allowed_edits(word: str) -> int:
    if len(word) < SHORT_LENGTH:
        return 0
    if len(word) < MIN_LENGTH:
        return 1
    return 2 if len(word) >= LONG_WORD else 1


def _swap_or_drop(word: str, target: str) -> bool:
    """``target`` is ``word`` with two neighbouring letters swapped back, or with one letter put back."""
    if len(target) == len(word):
        diff = [i for i, (a, b) in enumerate(zip(word, target, strict=True)) if a != b]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and word[diff[0]] == target[diff[1]]
    if len(target) == len(word) + 1:
        return any(target[:i] + target[i + 1 :] == word for i in range(len(target)))
    return False


class TypoFixer:
    """Closest catalogue word for an unknown word; ``known`` words are never changed."""

    def __init__(self, targets: Iterable[str], known: Iterable[str], weights: dict[str, int] | None = None):
        self.targets = sorted({t for t in targets if len(t) >= 3 and t.isalpha()})
        self.known = set(known) | set(self.targets) | KEEP
        self.weights = weights or {}
        self._cache: dict[str, str | None] = {}

    def fix(self, word: str) -> str | None:
        """The catalogue word meant by ``word``, or None (known word, or nothing close enough)."""
        if word in self._cache:
            return self._cache[word]
        out: str | None = None
        edits = allowed_edits(word)
        if edits and word.isalpha() and word not in self.known:
            scored = []
            for target in self.targets:
                if abs(len(target) - len(word)) > edits:
                    continue
                d = osa_distance(word, target, edits)
                if len(word) < MIN_LENGTH and (target[0] != word[0] or not _swap_or_drop(word, target)):
                    continue  # "cold" is not "gold": a short word changes only by a swap or a lost letter
                if d <= edits and (d < 2 or target[0] == word[0]):
                    scored.append((d, -self.weights.get(target, 0), target))
            if scored:
                scored.sort()
                # Ambiguous between two equally close words: leave it.
                if len(scored) == 1 or scored[0][:2] != scored[1][:2]:
                    out = scored[0][2]
        self._cache[word] = out
        return out

    def fix_text(self, text: str, is_known: Iterable[str] = ()) -> tuple[str, list[tuple[str, str]]]:
        """``text`` with unknown words replaced, and the (typo, correction) pairs."""
        extra = set(is_known)
        fixes: list[tuple[str, str]] = []

        def sub(m: re.Match[str]) -> str:
            word = m.group(0)
            if word in extra:
                return word
            fixed = self.fix(word)
            if fixed is None or fixed == word:
                return word
            fixes.append((word, fixed))
            return fixed

        return re.sub(r"(?<![a-z0-9$])[a-z]+(?![a-z0-9])", sub, text), fixes
