"""Redact personal data (emails, phone numbers, payment card numbers) and API keys from text before it is logged.

Cards are recognised by the Luhn checksum, so order ids, item ids and other long numbers are kept.
Phones need a ``+`` country prefix or the usual grouping (``617-555-0834``, ``(617) 555-0834``,
``617.555.0834``); a bare run of digits is not taken for a phone, because catalogue item ids
(``1008292230``) look exactly like one. Dates (``2024-05-01``) and prices are never touched.
"""

from __future__ import annotations

import json
import re
from typing import Any

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
API_KEY = "[API_KEY]"

# concierge keys ("ck-" + token_urlsafe) and the common "sk-..." shape of other providers' keys, pasted
# into a message by a customer or an operator: never worth keeping in a log.
_KEY_RE = re.compile(r"(?<![\w-])(?:ck|sk)-[A-Za-z0-9_-]{16,}")

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)

# 13-19 digits, optionally grouped by single spaces or dashes; not part of a longer number or word.
_CARD_RE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w]|-\d)")

_SEP = r"[ .-]"
_PHONE_RES = (
    # International: +CC then groups, optional (area) group; digit count checked below.
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}(?![\w])"),
    # North American style: (617) 555-0834, 617-555-0834, 617.555.0834, 617 555 0834, 1-617-555-0834.
    re.compile(rf"(?<![\w.-])(?:1{_SEP})?(?:\(\d{{3}}\) ?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}(?![\w]|[.-]\d)"),
)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn checksum used by payment cards."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    # All-same digits ("0000 0000 0000 0000") pass Luhn but are placeholders, not cards.
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)


def _card_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    if _is_card(re.sub(r"\D", "", text)):
        return CARD
    # A grouped run may hold a card plus a neighbouring number ("4111 1111 1111 1111 22"):
    # try contiguous windows of the digit groups, longest first, keeping the separators outside.
    groups = list(re.finditer(r"\d+", text))
    for size in range(len(groups) - 1, 0, -1):
        for start in range(len(groups) - size + 1):
            window = groups[start : start + size]
            if _is_card("".join(g.group(0) for g in window)):
                return text[: window[0].start()] + CARD + text[window[-1].end() :]
    return text


def _phone_sub(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return PHONE if 7 <= len(digits) <= 15 else match.group(0)


def redact(text: str) -> str:
    """``text`` with API keys, emails, phone numbers and card numbers replaced by placeholders."""
    if not text:
        return text
    text = _KEY_RE.sub(API_KEY, text)
    text = _EMAIL_RE.sub(EMAIL, text)
    text = _CARD_RE.sub(_card_sub, text)
    for pattern in _PHONE_RES:
        text = pattern.sub(_phone_sub, text)
    return text


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dict keys are kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


def redact_json(value: Any) -> str:
    """A redacted JSON dump of ``value`` for the request log."""
    return json.dumps(redact_obj(value), ensure_ascii=False, default=str)
