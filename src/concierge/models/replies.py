"""Bounded, loop-free replies: the one check every generated message to a customer goes through.

Small models at low temperature repeat themselves: "I'm sure you're not alone. I'm sure you're not
alone. ..." sixty times until ``max_tokens``. :func:`remove_loops` finds such repetitions (a run of
words repeated back to back, or one sentence said again and again) and keeps one copy of each, and
:func:`bound_reply` does that and bounds the length at a sentence end. Support
(agent and guided mode) and the shop call it on every model-written message; it lives beside the
model hub so that both, which must not import each other, share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 1200
# A repeated unit counts as a loop when it appears this many times back to back...
MIN_REPEATS = 3
# ...and the repeated span is at least this many words ("no, no, no" is not a loop).
MIN_LOOP_WORDS = 9
# The longest repeated unit looked for, in words.
MAX_PERIOD = 60

_WORD = re.compile(r"\S+")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


@dataclass(frozen=True)
class Loop:
    """A repetition: ``text[start:end]`` are the extra copies (the first copy stays), and its unit."""

    start: int
    end: int
    unit: str
    repeats: int


@dataclass(frozen=True)
class Reply:
    """A checked reply: the text to send and what was done to it."""

    text: str
    looped: bool = False
    truncated: bool = False

    @property
    def changed(self) -> bool:
        return self.looped or self.truncated


def _norm(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def _run_loop(text: str) -> Loop | None:
    """The earliest run of ``p`` words repeated back to back at least MIN_REPEATS times."""
    matches = list(_WORD.finditer(text or ""))
    words = [_norm(m.group(0)) for m in matches]
    n = len(words)
    best: Loop | None = None
    for period in range(1, min(MAX_PERIOD, n // MIN_REPEATS) + 1):
        if period * MIN_REPEATS < MIN_LOOP_WORDS:
            continue
        run = 0
        for i in range(n - period + 1):
            if i < n - period and words[i] and words[i] == words[i + period]:
                run += 1
                continue
            if run >= period * (MIN_REPEATS - 1):
                start = i - run  # first word of the first copy
                copies = (run + period) // period
                first_end = matches[start + period - 1].end()
                last_end = matches[start + run + period - 1].end()  # a partial last copy goes too
                if best is None or first_end < best.start:
                    best = Loop(first_end, last_end, text[matches[start].start() : first_end], copies)
                break
            run = 0
    return best


def _sentence_loop(text: str) -> tuple[str, int] | None:
    """``text`` without the later copies of any sentence (4+ words) said MIN_REPEATS times or more."""
    spans = [(m.start(), m.end(), m.group(0)) for m in _SENTENCE.finditer(text or "")]
    keys = [" ".join(w for w in (_norm(x) for x in g.split()) if w) for _, _, g in spans]
    counts: dict[str, int] = {}
    for key in keys:
        if len(key.split()) >= 4:
            counts[key] = counts.get(key, 0) + 1
    looping = {k for k, c in counts.items() if c >= MIN_REPEATS}
    if not looping:
        return None
    kept: list[str] = []
    seen: set[str] = set()
    last = 0
    for (start, end, _), key in zip(spans, keys, strict=True):
        if key in looping and key in seen:
            kept.append(text[last:start])
            last = end
            continue
        seen.add(key)
    kept.append(text[last:])
    return re.sub(r"[ \t]{2,}", " ", "".join(kept)), max(counts[k] for k in looping)


def find_loop(text: str) -> Loop | None:
    """The first back-to-back repetition in ``text`` (see module docstring), or None."""
    return _run_loop(text)


def remove_loops(text: str) -> tuple[str, bool]:
    """``text`` with every repetition cut to one copy, and whether there was any."""
    looped = False
    for _ in range(10):
        loop = _run_loop(text)
        if loop is None:
            break
        looped = True
        tail = text[loop.end :]
        if len(tail.strip()) < len(loop.unit) and not re.search(r"[.!?]", tail):
            tail = ""  # the loop ran into max_tokens: what follows is a cut-off fragment of it
        text = text[: loop.start] + tail
    sentences = _sentence_loop(text)
    if sentences is not None:
        looped = True
        text = sentences[0]
    return text.strip(), looped


def _cut_at_sentence(text: str, limit: int) -> str:
    """``text`` bounded to ``limit`` characters, ending at a sentence end when there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", head)]
    if ends and ends[-1] >= limit // 3:
        return head[: ends[-1]].rstrip()
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip() + " ..."


def bound_reply(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> Reply:
    """``text`` with any loop cut off (one copy kept) and at most ``max_chars`` characters."""
    text, looped = remove_loops((text or "").strip())
    truncated = len(text) > max_chars
    if truncated:
        text = _cut_at_sentence(text, max_chars)
    return Reply(text, looped=looped, truncated=truncated)


def same_reply(a: str | None, b: str | None) -> bool:
    """Whether two messages say the same words (case, spacing and punctuation ignored)."""
    if not a or not b:
        return False
    return [_norm(w) for w in a.split() if _norm(w)] == [_norm(w) for w in b.split() if _norm(w)]
