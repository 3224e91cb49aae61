"""Reading a customer's answer to "shall I go ahead?": ``yes``, ``no`` or ``unclear``.

Deterministic, no model. Only an explicit, unhedged yes is ``yes``: a reply made of yes words
("yes", "sure", "go ahead", "that's right", "👍", ...) and confirmation filler ("please", "cancel
it", "the order", "thanks", record ids) and nothing else. Anything that hedges ("I think so",
"maybe"), sets a condition ("yes if it's under $50"), retracts ("yes, no wait", "actually no"),
asks ("how much is it?") or brings something new ("ok, and also ...", "yes, but use my gift card
instead") is ``unclear``, and so is a reply mixing yes and no ("ok no") or one with words the
reader does not know. A reply of no words and the same filler ("no", "please don't cancel it") is
``no``; a no word inside something else ("I don't remember my email") is no answer: ``unclear``.

The rule is built to fail closed: a real yes read as ``unclear`` costs one more question; a
hedge read as ``yes`` changes a customer's order.
"""

from __future__ import annotations

import re
from typing import Literal

Reading = Literal["yes", "no", "unclear"]

_EMOJI = {
    "👍": " yes ",
    "👌": " yes ",
    "✅": " yes ",
    "✔": " yes ",
    "☑": " yes ",
    "👎": " no ",
    "❌": " no ",
    "🚫": " no ",
    "✋": " no ",
    "🤔": " hmm ",
}
# Smileys and other pictographs carry no answer of their own: they are dropped.
_PICTOGRAPH = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\ufe0f\u200d]")

# A question, or anything that hedges, sets a condition, retracts or adds a request: unclear.
_HEDGE = re.compile(
    r"\?|\.\.\.|…|"
    r"\b(but|however|though|although|except|unless|if|whether|provided|providing|as long as|only when|"
    r"wait|hold on|hang on|hold up|one sec(ond)?|a sec(ond)?|a moment|a minute|"
    r"actually|hm+|um+|uh+|erm|er|maybe|perhaps|probably|possibly|presumably|"
    r"i think|i guess|i suppose|i believe|i assume|i hope|guess so|think so|suppose so|"
    r"not (sure|certain)|unsure|kind of|kinda|sort of|sorta|i don'?t know|dunno|idk|not really|"
    r"let me (think|check|see|ask)|need to (think|check|ask)|"
    r"first|before|instead|rather|also|another|one more|else|too|as well|in addition|plus|"
    r"on second thought|second thoughts?|changed? my mind|then again|never ?mind|scratch that|"
    r"what about|how about|how much|how many|what if|or|well|i mean|depends|depending|"
    r"can you|could you|would you|will you|can i|could i|tell me|let me know|show me|explain|"
    r"later|tomorrow|after|afterwards|another time|next week|"
    r"whatever|reluctantly|if you must)\b",
    re.I,
)
# No words (checked after the neutral phrases are removed).
_NO_PHRASES = [
    r"i don'?t think so",
    r"(absolutely|definitely|certainly|of course|sure) not",
    r"that'?s (not right|not correct|wrong|incorrect|not it|not what i (asked|wanted|want))",
    r"not (right|correct|ok|okay|fine|good|now|yet|today|that|this|it)",
    r"no (thanks|thank you|way|thx)",
    r"please don'?t",
    r"do not",
    r"don'?t",
    r"i (decline|refuse|object)",
    r"(i'?d|i would) rather not",
    r"forget it",
    r"leave it",
    r"keep it( as it is)?",
    r"hold off",
    r"stop",
    r"negative",
    r"cancel the cancell?ation",
    r"no+",
    r"nope",
    r"nah",
    r"nay",
    r"not",
    r"never",
    r"wrong",
    r"incorrect",
    r"non",
    r"nein",
]
# Phrases with a no word in them that are no answer: removed before anything is counted.
_NEUTRAL = re.compile(
    r"\b(no longer|not any ?more|no problem|no worries|not a problem|no need to (ask|check|wait)|"
    r"no issues?)\b",
    re.I,
)
_YES_PHRASES = [
    r"yes+( please)?",
    r"y+e+s+",
    r"yse",
    r"ys",
    r"yeah+",
    r"yea+h*",
    r"yeh",
    r"ye",
    r"yep+",
    r"yeap",
    r"yup+",
    r"ya+",
    r"yah",
    r"y",
    r"sure( thing)?",
    r"su+re",
    r"ok(ay|ey|ie)?",
    r"oka+y+",
    r"okk+",
    r"oky",
    r"k",
    r"kk",
    r"alright",
    r"all right",
    r"confirm(ed)?",
    r"i confirm",
    r"correct",
    r"right",
    r"exactly",
    r"go ahead",
    r"go for it",
    r"proceed",
    r"do it",
    r"please do",
    r"let'?s do (it|that)",
    r"let'?s go",
    r"that'?s (right|correct|fine|it|perfect|good|great)",
    r"sounds (good|great|right|fine|perfect)",
    r"looks (good|great|right|fine|perfect)",
    r"(that|this) works",
    r"works for me",
    r"perfect",
    r"great",
    r"fine",
    r"good",
    r"absolutely",
    r"definitely",
    r"certainly",
    r"of course",
    r"affirmative",
    r"agreed?",
    r"approved?",
    r"i approve",
    r"i accept",
    r"accepted",
    r"deal",
    r"please",
    r"oui",
    r"s[ií]",
    r"ja",
    r"claro",
    r"d'accord",
]
# Words a yes may come with ("Yes please, go ahead and cancel it.", "Yes — that's right.").
_FILLER = set(
    """please pls plz thanks thank you thx ty cheers so much very a lot go ahead proceed with it that this those
these them the my both all of and to for now right away then i i'm im i'd i'll i've we we're am is are it's its
that's thats be want wanted would like need do did does doing done cancel cancellation cancelling canceling
exchange exchanging return returning modify modification change update book booking refund order orders item
items reservation reservations flight flights trip process submit confirm confirmed confirming correct exactly
good great perfect sounds looks works work me sure definitely absolutely certainly course ok okay everything one
ones just make happen on up in as described discussed planned listed above stated said mentioned there here
asked agree agreed approve approved authorize authorise accept accepted details set totally fine nice cool
awesome excellent wonderful lovely brilliant alright really yes yeah yep yup indeed dear sir madam help your much
much appreciated appreciate kindly go-ahead an is was go because anymore anything""".split()
)
# Firm noes that contain a hedge word ("think so"): read as a plain no before hedges are looked for.
_FIRM_NO = re.compile(r"\b(i (really )?don'?t think so|i'?d rather not|i would rather not)\b", re.I)
_ID = re.compile(r"^#?[a-z]*\d[\w-]*$", re.I)
_WORD = re.compile(r"[#\w][\w'#-]*", re.UNICODE)


def _compile(phrases: list[str]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'])(" + "|".join(phrases) + r")(?![\w'])", re.I)


_NO = _compile(_NO_PHRASES)
_YES = _compile(_YES_PHRASES)


def normalize(text: str) -> str:
    """Lower case, plain apostrophes, answer emojis as words, other pictographs dropped."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for emoji, word in _EMOJI.items():
        text = text.replace(emoji, word)
    text = _PICTOGRAPH.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def read_confirmation(text: str | None, proposal: str | None = None) -> Reading:
    """``yes`` only for an explicit, unhedged yes to the proposed change; ``no``; else ``unclear``.

    With ``proposal`` (the agent message asking for the confirmation), a record id the reply names
    that the proposal does not makes the reply ``unclear``: the customer is confirming something else.
    """
    if not text or not text.strip():
        return "unclear"
    plain = normalize(text)
    if not plain:
        return "unclear"
    plain = _FIRM_NO.sub(" no ", plain)
    if _HEDGE.search(plain):
        return "unclear"
    plain = _NEUTRAL.sub(" ", plain)
    no_hits = _NO.findall(plain)
    rest = _NO.sub(" ", plain)
    yes_hits = _YES.findall(rest)
    if no_hits and yes_hits:
        return "unclear"  # "ok no", "no, go ahead": mixed answers are no answer
    if not no_hits and not yes_hits:
        return "unclear"
    rest = _YES.sub(" ", rest)
    for word in _WORD.findall(rest):
        if word in _FILLER:
            continue
        if _ID.match(word):
            if proposal is not None and word.lstrip("#") not in proposal.lower():
                return "unclear"
            continue
        # Something the reader does not know: not a plain answer ("I don't remember my email" is no no).
        return "unclear"
    return "no" if no_hits else "yes"
