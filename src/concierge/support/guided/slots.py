"""Slot extraction: the rule-based extractor (regexes and keyword lists from the flows file) that backs
up the model, and the checks that keep a model's slot values grounded in what the customer said.
"""

from __future__ import annotations

import re
from typing import Any

from concierge.support.guided.command import Command
from concierge.support.guided.flows import Flows

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NAME_CUES = re.compile(
    r"\b(?i:my name is|name's|i am|i'm|this is|it's|call me|name:)\s+([A-Z][a-zA-Z'-]+)(?:\s+([A-Z][a-zA-Z'-]+))?"
)
_USER_ID = re.compile(r"\b([a-z]+)_([a-z]+)_\d{3,5}\b")
_NOT_NAMES = {
    "Looking",
    "Calling",
    "Trying",
    "Not",
    "Sorry",
    "Here",
    "Sure",
    "Yes",
    "No",
    "Just",
    "So",
    "Very",
    "Happy",
    "Interested",
    "Writing",
    "Hoping",
    "Going",
    "Wondering",
    "Also",
    "Still",
    "In",
    "At",
    "From",
}
_ADDRESS = re.compile(
    r"(?P<address1>\d+\s+[A-Za-z0-9 .'-]+?)\s*,\s*(?:(?P<address2>(?:Suite|Apt\.?|Apartment|Unit|#)\s*[\w-]+)\s*,\s*)?"
    r"(?P<city>[A-Za-z .'-]+?)\s*,\s*(?:(?P<state>[A-Za-z .]+?)\s*,?\s+)?(?P<zip>\d{5})\b"
    r"(?:\s*,?\s*(?P<country>USA|United States))?"
)
_US_STATES = {
    "alabama": "AL",
    "alaska": "AK",
    "arizona": "AZ",
    "arkansas": "AR",
    "california": "CA",
    "colorado": "CO",
    "connecticut": "CT",
    "delaware": "DE",
    "florida": "FL",
    "georgia": "GA",
    "hawaii": "HI",
    "idaho": "ID",
    "illinois": "IL",
    "indiana": "IN",
    "iowa": "IA",
    "kansas": "KS",
    "kentucky": "KY",
    "louisiana": "LA",
    "maine": "ME",
    "maryland": "MD",
    "massachusetts": "MA",
    "michigan": "MI",
    "minnesota": "MN",
    "mississippi": "MS",
    "missouri": "MO",
    "montana": "MT",
    "nebraska": "NE",
    "nevada": "NV",
    "new hampshire": "NH",
    "new jersey": "NJ",
    "new mexico": "NM",
    "new york": "NY",
    "north carolina": "NC",
    "north dakota": "ND",
    "ohio": "OH",
    "oklahoma": "OK",
    "oregon": "OR",
    "pennsylvania": "PA",
    "rhode island": "RI",
    "south carolina": "SC",
    "south dakota": "SD",
    "tennessee": "TN",
    "texas": "TX",
    "utah": "UT",
    "vermont": "VT",
    "virginia": "VA",
    "washington": "WA",
    "west virginia": "WV",
    "wisconsin": "WI",
    "wyoming": "WY",
}
_MONTHS = {
    m: i
    for i, m in enumerate(
        "january february march april may june july august september october november december".split(), 1
    )
}


def resolve_month_day(month: int, day: int, now: Any = None) -> str | None:
    """A month-day date ("May 20") as YYYY-MM-DD in the year that puts it closest to the domain's clock
    (``now``: a date, datetime or ISO string; today when None). No fixed year."""
    from datetime import date, datetime

    if now is None:
        today = date.today()
    elif isinstance(now, datetime):
        today = now.date()
    elif isinstance(now, date):
        today = now
    else:
        today = date.fromisoformat(str(now)[:10])
    best = None
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if best is None or abs((candidate - today).days) < abs((best - today).days):
            best = candidate
    return best.isoformat() if best else None


def _extract_builtin(kind: str, text: str, now: Any = None) -> Any:
    if kind == "email":
        m = _EMAIL.search(text)
        return m.group(0).rstrip(".") if m else None
    if kind in ("first_name", "last_name"):
        first, last = _name(text)
        return first if kind == "first_name" else last
    if kind == "address":
        m = _ADDRESS.search(text)
        if not m:
            return None
        parts = {k: (v or "").strip() for k, v in m.groupdict().items()}
        state = parts.get("state", "")
        parts["state"] = _US_STATES.get(state.lower(), state.upper() if len(state) == 2 else state)
        # The country only when the customer said it; otherwise the flow takes the one on record.
        parts["country"] = parts.get("country") or ""
        return parts
    if kind == "date":
        m = re.search(r"\b(20\d\d)-(\d\d)-(\d\d)\b", text)
        if m:
            return m.group(0)
        m = re.search(r"\b(" + "|".join(_MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?\b", text, re.I)
        if m:
            return resolve_month_day(_MONTHS[m.group(1).lower()], int(m.group(2)), now)
        return None
    raise ValueError(f"unknown builtin extractor {kind!r}")


def _name(text: str) -> tuple[str | None, str | None]:
    for m in _NAME_CUES.finditer(text):
        first, last = m.group(1), m.group(2)
        if first in _NOT_NAMES:
            continue
        return first, last
    m = _USER_ID.search(text)
    if m:
        return m.group(1).title(), m.group(2).title()
    return None, None


def extract_slot(spec: dict[str, Any], text: str, now: Any = None) -> Any:
    """One slot's value from text by its rule (``extract``, ``pattern``, ``enum`` + ``synonyms``);
    ``now`` is the domain's clock (month-day dates resolve relative to it)."""
    if spec.get("extract"):
        value = _extract_builtin(spec["extract"], text, now)
        if value is not None and spec.get("field") and isinstance(value, dict):
            value = value.get(spec["field"]) or None
        return value
    if spec.get("pattern"):
        flags = 0 if spec.get("case_sensitive", True) else re.I
        found = []
        for m in re.finditer(spec["pattern"], text, flags):
            value = m.group(1) if m.groups() else m.group(0)
            value = spec.get("prefix", "") + value if not value.startswith(spec.get("prefix", "")) else value
            if spec.get("upper"):
                value = value.upper()
            if value not in found:
                found.append(value)
        if not found:
            return None
        return found if spec.get("list") else found[0]
    if spec.get("enum"):
        synonyms = spec.get("synonyms") or {}
        lowered = text.lower()
        best, pos = None, None
        for value in spec["enum"]:
            for phrase in [value, *(synonyms.get(value) or [])]:
                m = re.search(r"\b" + re.escape(str(phrase).lower()) + r"\b", lowered)
                if m and (pos is None or m.start() < pos):
                    best, pos = value, m.start()
        return best
    return None


def model_slot_value(spec: dict[str, Any], value: Any, text: str) -> Any:
    """A model-proposed slot value, normalised, if it fits the slot and is grounded in the text; else None.

    Values must appear in what the customer said (no invented ids or emails); structured slots
    (``extract``) and pattern slots go through the same extractor as the rules.
    """
    if value in (None, "", []):
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        return None
    if spec.get("enum"):
        # An enum value is grounded when it, or one of its synonyms, was said: a weak model
        # otherwise fills e.g. a cancellation reason the customer never gave.
        said = text.lower()
        synonyms = spec.get("synonyms") or {}
        grounded = all(
            v in spec["enum"] and any(w.lower() in said for w in [v, *(synonyms.get(v) or [])])
            for v in values
        )
        return value if grounded else None
    if any(v.lower().removeprefix(spec.get("prefix", "").lower()) not in text.lower() for v in values):
        return None
    if spec.get("extract") in ("first_name", "last_name"):
        ok = all(re.fullmatch(r"[A-Z][a-zA-Z'-]{1,30}", v.strip()) for v in values)
        return value if ok else None
    if spec.get("extract") or spec.get("pattern"):
        found = [extract_slot({**spec, "list": False}, v) for v in values]
        if any(f in (None, "", []) for f in found):
            return None
        return found if spec.get("list") else found[0]
    return value



class RuleExtractor:
    """Keyword intents and regex slots, all configured by the flows file."""

    def __init__(self, flows: Flows, now: Any = None) -> None:
        self.flows = flows
        self.now = now
        self._keywords = {
            name: [re.compile(k, re.I) for k in intent.get("keywords") or []]
            for name, intent in flows.intents.items()
        }

    def slots(self, text: str) -> dict[str, Any]:
        out = {}
        for name, spec in self.flows.slots.items():
            value = extract_slot(spec, text, self.now)
            if value not in (None, "", []):
                out[name] = value
        return out

    def intents(self, text: str) -> list[tuple[str, str]]:
        """Intents in the order the customer raised them, each with its own stretch of text."""
        hits: list[tuple[int, int, str]] = []  # (position, -priority, intent)
        for name, patterns in self._keywords.items():
            spec = self.flows.intents[name]
            unless = [re.compile(x, re.I) for x in spec.get("unless") or []]
            positions: list[int] = []
            for pattern in patterns:
                for m in pattern.finditer(text):
                    # "unless" looks at the words around the keyword: "change ... address" is not an item change.
                    window = text[max(0, m.start() - 15) : m.end() + 45]
                    if not any(u.search(window) for u in unless):
                        positions.append(m.start())
            hits.extend((pos, -int(spec.get("priority", 0)), name) for pos in positions)
        hits = self._questions_stay_questions(text, hits)
        if not hits:
            return []
        hits.sort()
        # One intent per stretch: where several start at nearly the same place the higher priority wins;
        # the same intent again counts only in a later sentence.
        chosen: list[tuple[int, int, str]] = []
        for pos, prio, name in hits:
            earlier = [p for p, _, n in chosen if n == name]
            if earlier and not re.search(r"[.?!;]\s|\n", text[earlier[-1] : pos]):
                continue
            if chosen and pos - chosen[-1][0] < 4:
                if prio < chosen[-1][1]:
                    chosen[-1] = (pos, prio, name)
                continue
            chosen.append((pos, prio, name))
        segments: list[list[str]] = []
        for i, (pos, _prio, name) in enumerate(chosen):
            start = 0 if i == 0 else _sentence_start(text, pos, floor=chosen[i - 1][0] + 1)
            end = _sentence_start(text, chosen[i + 1][0], floor=pos + 1) if i + 1 < len(chosen) else len(text)
            segment = text[start:end].strip()
            same = [s for s in segments if s[0] == name]
            if same:
                mine, theirs = self._ids(segment), self._ids(same[-1][1])
                if not (mine and theirs and mine != theirs):
                    # The same request said again, not a second one (no other order/reservation id).
                    same[-1][1] = f"{same[-1][1]} {segment}"
                    continue
            segments.append([name, segment])
        return [(name, segment) for name, segment in segments]

    def _questions_stay_questions(self, text: str, hits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Drop the hits of flows that need the customer's identity in a sentence that only asks a
        question and also names a flow that does not ("What is your cancellation policy?": a policy
        question, not a cancellation). The question is answered; no change flow starts. A sentence
        that asks for something ("Can you cancel ...", "I want to ...") keeps every hit."""
        spans = [(m.start(), m.end()) for m in re.finditer(r"[^.!?;\n]+[.!?;]*", text)]
        needs_id = {name for name in {n for _, _, n in hits} if self.flows.intents[name].get("identify", True)}
        if not needs_id or len(needs_id) == len({n for _, _, n in hits}):
            return hits
        dropped: set[int] = set()
        for start, end in spans:
            sentence = text[start:end]
            inside = [i for i, (pos, _, _) in enumerate(hits) if start <= pos < end]
            names = {hits[i][2] for i in inside}
            if not (names - needs_id and names & needs_id):
                continue
            if _QUESTION_START.search(sentence) and not asks_for_change(sentence):
                dropped.update(i for i in inside if hits[i][2] in needs_id)
        return [h for i, h in enumerate(hits) if i not in dropped]

    def _ids(self, text: str) -> set[str]:
        """Identifier values (pattern slots that are not identity) a stretch of text mentions."""
        found: set[str] = set()
        for spec in self.flows.slots.values():
            if spec.get("pattern") and not spec.get("keep") and not spec.get("list"):
                value = extract_slot(spec, text)
                if value:
                    found.add(str(value))
        return found

    def command(self, text: str) -> Command:
        return Command(self.intents(text), self.slots(text), "rules")

    def uncovered(self, text: str) -> list[str]:
        """Sentences that ask for a change ("I also want to change my watch ...") where no intent of the
        flows file is recognised: a request the agent would otherwise silently leave out."""
        out = []
        for sentence in re.split(r"(?<=[.!?;])\s+|\n", text or ""):
            if not (_REQUEST_CUE.search(sentence) and _CHANGE_VERB.search(sentence)):
                continue
            if _QUESTION_START.search(sentence):
                continue
            hit = False
            for name, patterns in self._keywords.items():
                unless = [re.compile(x, re.I) for x in self.flows.intents[name].get("unless") or []]
                for pattern in patterns:
                    for m in pattern.finditer(sentence):
                        window = sentence[max(0, m.start() - 15) : m.end() + 45]
                        if not any(u.search(window) for u in unless):
                            hit = True
            if not hit:
                out.append(sentence.strip())
        return out


_REQUEST_CUE = re.compile(
    r"\b(i|we) (also |really |just )?(want|wanna|would like|'d like|need|wish)\b|\bi'd like\b|"
    r"\b(please|can you|could you|would you)\b|"
    # imperatives: "Cancel order #W1 because ...", "For #W2, change address to ...", "Also return ..."
    r"^\s*(for [^,]{1,40},\s*)?((and|also|then|lastly|finally),?\s+)*"
    r"(return|exchange|cancel|modify|change|update|swap|replace|switch|upgrade|downgrade|refund|move|book|add|remove)\b",
    re.I,
)
_CHANGE_VERB = re.compile(
    r"\b(return|exchange|cancel|modify|change|update|swap|replace|switch|upgrade|downgrade|refund|move|"
    r"book|rebook|add|remove)\w*\b|\bsend\b[\w ]{0,20}\bback\b|\bget rid of\b",
    re.I,
)
_QUESTION_START = re.compile(r"^\s*(what|which|how|why|when|is|are|do|does)\b|\?\s*$", re.I)


def asks_for_change(text: str) -> bool:
    """Whether the customer asks for a change at all: a change verb ("return", "cancel", "swap", ...)
    in a sentence that is not only a question. A write request that a model reads into a message
    without one ("which t-shirts did I order?" as a return) is not the customer's."""
    for sentence in re.split(r"(?<=[.!?;])\s+|\n", text or ""):
        if _CHANGE_VERB.search(sentence) and not (
            _QUESTION_START.search(sentence) and not _REQUEST_CUE.search(sentence)
        ):
            return True
    return False


def _sentence_start(text: str, pos: int, floor: int = 0) -> int:
    """Where the sentence (or clause after " and ") holding ``pos`` begins, not before ``floor``."""
    cuts = [text.rfind(sep, floor, pos) for sep in (". ", "? ", "! ", "\n", "; ")]
    cut = max(cuts)
    if cut >= 0:
        return cut + 1
    conj = max(text.lower().rfind(" and ", floor, pos), text.lower().rfind(", ", floor, pos))
    return conj + 1 if conj >= 0 else floor

