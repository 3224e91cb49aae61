"""How the shop assistant writes its answer: from the validated cards only, checked, else a template.

The model writes a short answer from the cards of the turn's plan; its text is checked for
titles, ids, brands and prices the cards do not back -> one regeneration, then the deterministic
:meth:`AnswerWriter.template`. Streamed text is released sentence by sentence once checked.
:class:`AnswerWriter` is a part of :class:`~concierge.shop.assistant.ShopAssistant` (it uses the
assistant's hub, catalogue and checker).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from concierge.models.engine import ServingHub
from concierge.models.replies import remove_loops
from concierge.shop.answer import ConversationState, ShopAnswer
from concierge.shop.grounding import (
    TEXT_CHECKS,
    GroundingReport,
    HardConstraints,
    Violation,
    validate_products,
)
from concierge.shop.query import StructuredQuery
from concierge.shop.query.matching import met_constraints

log = logging.getLogger("concierge.shop.assistant")

ANSWER_MAX_TOKENS = 80
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# While text still streams, a point ends a sentence only once a space is seen after it: the text so
# far often ends in "($585." with "00)" to come.
_SENTENCE_BREAK = re.compile(r"[.!?](?=\s)")

ANSWER_TEXT_CHECKS = (
    "text_nonempty", "text_format", *TEXT_CHECKS, "text_mentions_product", "text_echo", "text_repeats",
    "text_reasons", "text_exclusions",
)  # fmt: skip
# A value the shopper excluded may appear in an answer only as an exclusion ("no leather", "not black").
_EXCLUSION_CUE = re.compile(
    r"(?<![a-z])(?:not|no|non|without|except|excluding|other than|instead of|rather than|but|never|"
    r"isn'?t|aren'?t|free of|anything but|avoid(?:ing|s)?)[\s-]+(?:\w+[\s-]+){0,2}$"
)

ANSWER_SYSTEM_PROMPT = (
    "You are a friendly shop assistant. In one or two short sentences, recommend products from the list "
    "by their exact names: say what they all meet and how they differ. Do not mention anything else."
)
# One worked example: small models follow a demonstration far better than instructions alone. The
# shopper's own words are not in the prompt (only what was understood), so the answer cannot echo them.
ANSWER_EXAMPLE = (
    "Products:\n1. Example Co. Everyday Daypack ($49.99, color: black)\n2. Example Co. City Pack ($64.99, "
    "color: black)\nAll meet: backpacks, color black, under $70\nThey differ in: price",
    "Both the Example Co. Everyday Daypack ($49.99) and the Example Co. City Pack ($64.99) are black "
    "backpacks under $70; the Everyday Daypack costs less.",
)
_EXAMPLE_BRAND = "example co."  # the worked example's brand: never a real product's
ECHO_WORDS = 5  # an answer never copies this many consecutive words of the shopper's message


def _sentence_ends(text: str, *, final: bool = True) -> list[int]:
    """Where sentences of ``text`` end (outside parentheses); ``final=False``: of text still streaming."""
    pattern = _SENTENCE_END if final else _SENTENCE_BREAK
    return [m.end() for m in pattern.finditer(text) if text.count("(", 0, m.end()) <= text.count(")", 0, m.end())]


@dataclass
class _Plan:
    """Everything about a turn except the answer text."""

    query: StructuredQuery | None
    constraints: HardConstraints
    cards: list[dict[str, Any]]
    clarifying: bool
    state: ConversationState
    report: GroundingReport
    trace: dict[str, Any]
    user_text: str
    question: str = ""
    personalised: bool = False
    alternatives: list[dict[str, Any]] = field(default_factory=list)  # near: each with "unmet"

    @property
    def shown(self) -> list[dict[str, Any]]:
        """Every card on screen (exact matches, then near alternatives): what the text may name."""
        return [*self.cards, *self.alternatives]


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def copied_span(request: str, text: str, n: int = ECHO_WORDS, *, skip_self: bool = False) -> str | None:
    """The first run of ``n`` consecutive words of ``request`` that ``text`` repeats (None: no echo).
    ``skip_self``: ``request`` is ``text`` itself, and a run counts only where it occurs twice."""
    req, out = _words(request), _words(text)
    if skip_self:
        seen: set[tuple[str, ...]] = set()
        for i in range(len(out) - n + 1):
            gram = tuple(out[i : i + n])
            if gram in seen:
                return " ".join(gram)
            seen.add(gram)
        return None
    grams = {tuple(out[i : i + n]) for i in range(len(out) - n + 1)}
    for i in range(len(req) - n + 1):
        if tuple(req[i : i + n]) in grams:
            return " ".join(req[i : i + n])
    return None


def differences(cards: Sequence[Mapping[str, Any]]) -> list[str]:
    """The option names whose values differ between the cards, then "price" when the prices differ."""
    out: list[str] = []
    keys = list(dict.fromkeys(k for c in cards for k in (c.get("options") or {})))
    for key in keys:
        values = {str((c.get("options") or {}).get(key, "")).lower() for c in cards}
        if len(values) > 1:
            out.append(key)
    if len({round(float(c["price"]), 2) for c in cards}) > 1:
        out.append("price")
    titles = {c.get("title") for c in cards}
    if len(titles) > 1 and not out:
        out.append("model")
    return out


def _card_values(product: Any, variant: Any, key: str) -> set[str]:
    """A variant's values for one constraint key: its option, else the product attribute, else the brand."""
    key = key.lower()
    for k, v in variant.options.items():
        if k.lower() == key:
            return {str(v).lower()}
    for k, v in product.attributes.items():
        if k.lower() == key:
            return {str(x).lower() for x in (v if isinstance(v, list) else [v])}
    if key == "brand" and product.brand:
        return {product.brand.lower()}
    return set()


def _describe_card(card: Mapping[str, Any], keys: Sequence[str]) -> str:
    options = card.get("options") or {}
    bits = []
    for key in keys:
        if key in ("price", "model") or key not in options:
            continue
        value = str(options[key])
        bits.append(value if key in ("color", "colour") else f"{key} {value}")
    return ", ".join(bits)


class AnswerWriter:
    """The answer-text half of the shop assistant (mixed into ``ShopAssistant``)."""

    hub: ServingHub
    catalog: Any
    checker: Any
    vocab: Any
    model_alias: str
    tenant: str | None
    answer_model: bool

    def _question(self, q: StructuredQuery) -> str:
        # One example per top-level department: "dresses, backpacks, bedding ... and more".
        seen: dict[str, str] = {}
        for leaf in self.vocab.leaves:
            seen.setdefault(leaf.split(" > ")[0], leaf.split(" > ")[-1].lower())
        examples = _join([*list(dict.fromkeys(seen.values()))[:6], "more"])
        lead = "Happy to help"
        if q.occasion:
            lead += f" with your {q.occasion}" if q.occasion != "gift" else " find a gift"
        budget = f" under {_money(q.price_max)}" if q.price_max is not None else ""
        return f"{lead}! We have {examples}. What kind of item are you looking for{budget}?"

    def _what(self, plan: _Plan) -> str:
        names = {c["category"].split(" > ")[-1] for c in plan.cards} if plan.cards else set()
        if not names and plan.constraints.categories:
            names = {p.split(" > ")[-1] for p in plan.constraints.categories}
        return names.pop().lower() if len(names) == 1 else "options"

    def template(self, plan: _Plan) -> str:
        """The deterministic answer, always grounded (titles and prices of the cards, the stated bounds): why
        the cards fit (the constraints they all meet), what differs between them, and -- when nothing is an
        exact match -- that the cards shown are near alternatives and what each misses."""
        if plan.clarifying:
            return plan.question
        desc = plan.constraints.describe()
        what = self._what(plan)
        if not plan.cards and plan.alternatives:
            return self._near_text(plan)
        if not plan.cards:
            c = plan.constraints
            if c.price_max is not None:
                tip = "Would you like me to look above that budget?"
            elif c.attributes:
                tip = f"Would you like to try a different {' or '.join(sorted(c.attributes))}?"
            elif c.exclude_terms or c.exclude_attributes:
                tip = "Would you like me to relax the exclusions?"
            else:
                tip = "Could you describe it in other words?"
            return f"Sorry, I couldn't find any {what} in stock{' ' + desc if desc else ''}. {tip}"
        cards = plan.cards
        fit = self._fit(plan)
        listed = [f"{c['title']} ({_money(c['price'])})" for c in cards[:3]]
        more = len(cards) - len(listed)
        if len(cards) == 1:
            text = f"The {listed[0]} fits: {_join(fit)}." if fit else f"The {listed[0]} is the one I found."
        else:
            lead = f"I found {len(cards)} {what}"
            lead += f" that meet all of it ({_join(fit)})" if fit else ""
            text = f"{lead}: {_join(listed)}" + (f", plus {more} more." if more else ".")
            diff = differences(cards[:3])
            keyed = [k for k in diff if k not in ("price", "model")]
            parts = [f"the {c['title']} is {d}" for c in cards[:3] if (d := _describe_card(c, keyed))]
            if parts:
                text += f" They differ in {_join(diff)}: {'; '.join(parts)}."
            elif "price" in diff:
                cheapest = min(cards[:3], key=lambda c: c["price"])
                text += f" They differ in price; the {cheapest['title']} costs least."
        if plan.alternatives:
            text += f" {len(plan.alternatives)} more below come close but miss something you asked for."
        if plan.personalised:
            text += " I put items like the ones you looked at first."
        return text

    def _fit(self, plan: _Plan) -> list[str]:
        """What every exact card meets of the stated constraints, one phrase per constraint ("color black
        or navy", "power 1500 w or 2200 w", "under $120", "no leather"): the reason they are shown."""
        c, out = plan.constraints, []
        pairs = []
        for card in plan.cards:
            variant = self.catalog.get_variant(card["id"])
            product = self.catalog.get_product(card["product_id"]) if variant is not None else None
            if product is None:
                return []
            pairs.append((product, variant))
        for key, wanted in c.attributes.items():
            allowed = {w.lower() for w in wanted}
            have = [sorted(_card_values(p, v, key) & allowed) for p, v in pairs]
            if not all(have):
                continue
            distinct = list(dict.fromkeys(h[0] for h in have))
            if key == "brand":
                out.append("by " + " or ".join(dict.fromkeys(p.brand for p, _ in pairs)))
            elif distinct in (["yes"], ["no"]):
                out.append(key if distinct == ["yes"] else f"not {key}")
            elif key in ("color", "colour"):
                out.append("in " + " or ".join(distinct))
            else:
                out.append(f"{key} {' or '.join(distinct)}")
        if c.price_min is not None and c.price_max is not None:
            out.append(f"between {_money(c.price_min)} and {_money(c.price_max)}".replace(".00", ""))
        elif c.price_max is not None:
            out.append(f"under {_money(c.price_max)}".replace(".00", ""))
        elif c.price_min is not None:
            out.append(f"over {_money(c.price_min)}".replace(".00", ""))
        excluded = [v for vals in c.exclude_attributes.values() for v in vals] + list(c.exclude_terms)
        if excluded:
            out.append("no " + " or ".join(dict.fromkeys(excluded)))
        # Words of the request no rule read that every card carries ("clear" glass jars): met as well.
        read = met_constraints(*pairs[0], c)  # the first card's constraint phrases; the rest are unread words
        for term in plan.cards[0].get("meets") or []:
            if term not in read and all(term in (card.get("meets") or []) for card in plan.cards):
                out.append(term)
        return out

    def _near_text(self, plan: _Plan) -> str:
        """No exact match: say so, then the near alternatives, each with what it misses."""
        parts = []
        for c in plan.alternatives[:3]:
            own = _money(c["price"]).replace(".00", "") + ", "
            misses = [m[len(own) :] if m.startswith(own) else m for m in c.get("unmet") or []]
            parts.append(f"the {c['title']} ({_money(c['price'])}): {'; '.join(misses) or 'not exact'}")
        n = len(plan.alternatives)
        head = "Nothing in stock meets everything you asked for."
        closest = "the closest alternative" if n == 1 else f"{n} close alternatives"
        exact = "not an exact match" if n == 1 else "not exact matches"
        return f"{head} Here {'is' if n == 1 else 'are'} {closest}, {exact}: {'; '.join(parts)}."

    def _answer_request(self, plan: _Plan, feedback: list[Violation] | None = None) -> dict[str, Any]:
        lines = []
        for i, c in enumerate(plan.cards, 1):
            details = ", ".join([_money(c["price"]), *(f"{k}: {v}" for k, v in c["options"].items())])
            lines.append(f"{i}. {c['title']} ({details})")
        user = "Products:\n" + "\n".join(lines)
        fit = self._fit(plan)
        if fit:
            user += "\nAll meet: " + ", ".join(fit)
        diff = differences(plan.cards)
        if len(plan.cards) > 1 and diff:
            user += "\nThey differ in: " + ", ".join(diff)
        if feedback:
            bad = ", ".join(sorted({v.item for v in feedback if v.item}))[:200]
            user += "\nName only products from the list" + (f" (not {bad})." if bad else ".")
        return {
            "messages": [
                {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
                {"role": "user", "content": ANSWER_EXAMPLE[0]},
                {"role": "assistant", "content": ANSWER_EXAMPLE[1]},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "max_tokens": ANSWER_MAX_TOKENS,
        }

    def _with_reasons(self, text: str, plan: _Plan) -> str:
        """A model answer that names none of the met constraints, with them added as one sentence."""
        fit = self._fit(plan)
        if not fit:
            return text
        lead = "It meets" if len(plan.cards) == 1 else "They all meet"
        return f"{text.rstrip()} {lead} {_join(fit)}."

    def check_text(
        self, text: str, plan: _Plan, *, require_product: bool = True, final: bool = True
    ) -> list[Violation]:
        """Grounding of an answer text: only the cards' titles, ids, brands, prices and colours; on topic;
        never the shopper's own words read back."""
        out = self._check_text(text, plan.shown, plan.constraints, require_product=require_product)
        echo = copied_span(plan.user_text, text)
        if echo:
            out.append(Violation(echo, "text_echo", "repeats the shopper's message"))
        plain = text  # product names may recur ("both X and Y ...; the Y costs less"): not a repetition
        for i, card in enumerate(sorted(plan.shown, key=lambda c: -len(str(c.get("title", ""))))):
            if card.get("title"):
                plain = re.sub(re.escape(str(card["title"])), f" p{i} ", plain, flags=re.IGNORECASE)
        again = copied_span(plain, plain, n=4, skip_self=True)
        if again:
            out.append(Violation(again, "text_repeats", "says the same thing twice"))
        if final and require_product and plan.cards:
            # A finished answer says why the cards fit: it names one of the constraints they all meet.
            fit = self._fit(plan)
            low = " ".join(_words(text))
            if fit and not any(" ".join(_words(phrase.split(" ", 1)[-1])) in low for phrase in fit):
                out.append(Violation(text[:40], "text_reasons", "names none of the constraints the cards meet"))
        return out

    def verify(self, answer: ShopAnswer) -> list[Violation]:
        """Re-check a finished answer: its cards against the catalogue, its text against its cards."""
        constraints = (
            HardConstraints.from_dict(answer.constraints) if answer.constraints else HardConstraints()
        )
        _, report = validate_products(answer.products, self.catalog, constraints)
        # Near alternatives are grounded as cards (real, in stock, title and price), not on the constraints.
        validate_products(answer.alternatives, self.catalog, HardConstraints(in_stock=True), report)
        if answer.clarifying:
            return report.violations
        shown = [*answer.products, *answer.alternatives]
        return report.violations + self._check_text(
            answer.message, shown, constraints, require_product=bool(shown)
        )

    def _check_text(
        self,
        text: str,
        cards: Sequence[Mapping[str, Any]],
        c: HardConstraints,
        *,
        require_product: bool = True,
    ) -> list[Violation]:
        out: list[Violation] = []
        if not text.strip():
            return [Violation("", "text_nonempty", "empty answer")]
        if re.search(r"[{}<>|#*`]|\[/?INST\]", text):
            out.append(Violation(text[:40], "text_format", "markup or template tokens"))
        if re.search(r"(?im)^\s*\d+[.)]\s|shopper:|products:", text):
            out.append(Violation(text[:40], "text_format", "echoes the prompt or lists products"))
        if _EXAMPLE_BRAND in text.lower():
            out.append(Violation(text[:40], "text_format", "copies the prompt's worked example"))
        for card in cards:
            if re.search(rf"\b\d{{1,2}}[.)]\s*{re.escape(card['title'])}", text, re.IGNORECASE):
                out.append(Violation(card["title"], "text_format", "list numbering from the prompt"))
        bounds = [p for p in (c.price_min, c.price_max) if p is not None]
        words = [v for vals in c.attributes.values() for v in vals]
        words += [v for vals in c.exclude_attributes.values() for v in vals] + list(c.exclude_terms)
        out += self.checker.check(text, cards, bounds, words)
        out += _exclusion_claims(text, cards, [*(v for vals in c.exclude_attributes.values() for v in vals),
                                               *c.exclude_terms])
        if require_product:
            low = text.lower()
            if not any(card["title"].lower() in low for card in cards):
                out.append(Violation(text[:40], "text_mentions_product", "names none of the products shown"))
        return out

    def _trim(self, text: str, finish_reason: str | None) -> str:
        text = text.strip()
        if finish_reason == "length":
            ends = _sentence_ends(text)
            text = text[: ends[-1]] if ends else ""
        return remove_loops(text)[0]  # a model that repeats itself: one copy (models/replies.py)

    def _generate(self, plan: _Plan, feedback: list[Violation] | None) -> tuple[str, list[Violation]]:
        plan.report.attempts += 1
        plan.trace["model_calls"] += 1
        try:
            response = self.hub.chat(
                self.model_alias, self._answer_request(plan, feedback), tenant=self.tenant
            )
        except Exception as exc:  # noqa: BLE001 - the template answers when the model fails
            plan.trace["model_errors"].append(f"answer: {type(exc).__name__}: {str(exc)[:200]}")
            return "", [Violation("", "model_error", type(exc).__name__)]
        choice = (response.get("choices") or [{}])[0]
        text = self._trim((choice.get("message") or {}).get("content") or "", choice.get("finish_reason"))
        return text, self.check_text(text, plan)

    def _write(self, plan: _Plan) -> str:
        plan.report.add_checks(ANSWER_TEXT_CHECKS)
        if plan.clarifying or not plan.cards or not self.answer_model:
            plan.report.text_source = plan.report.text_source or "template"
            return self.template(plan)
        text, problems = self._generate(plan, None)
        text, problems = self._add_reasons(text, plan, problems)
        if not problems:
            plan.report.text_source = "model"
            return text
        plan.report.text_violations.extend(problems)
        if not any(v.check == "model_error" for v in problems):
            text, again = self._generate(plan, problems)
            text, again = self._add_reasons(text, plan, again)
            if not again:
                plan.report.text_source = "model-repaired"
                return text
            plan.report.text_violations.extend(again)
        plan.report.text_source = "template"
        return self.template(plan)

    def _add_reasons(
        self, text: str, plan: _Plan, problems: list[Violation]
    ) -> tuple[str, list[Violation]]:
        """When the only problem is that the text gives no reason, add the reasons rather than regenerate."""
        if problems and all(v.check == "text_reasons" for v in problems):
            text = self._with_reasons(text, plan)
            return text, self.check_text(text, plan)
        return text, problems

    def _stream_text(self, plan: _Plan) -> Iterator[str]:
        """Model text released sentence by sentence, each release re-checked; template on failure."""
        plan.report.add_checks(ANSWER_TEXT_CHECKS)
        if plan.clarifying or not plan.cards or not self.answer_model:
            plan.report.text_source = plan.report.text_source or "template"
            yield from _chunks(self.template(plan))
            return
        plan.report.attempts += 1
        plan.trace["model_calls"] += 1
        emitted = ""  # released to the shopper: always grounded and on topic
        pending = ""
        finish: str | None = None
        problems: list[Violation] = []
        stream = None
        try:
            stream = self.hub.stream_chat(self.model_alias, self._answer_request(plan), tenant=self.tenant)
            for chunk in stream:
                for choice in chunk.get("choices") or []:
                    pending += (choice.get("delta") or {}).get("content") or ""
                    finish = choice.get("finish_reason") or finish
                ends = _sentence_ends(pending, final=False)
                if not ends:
                    continue
                cut = ends[-1]
                candidate = emitted + pending[:cut]
                problems = self.check_text(candidate, plan, require_product=False)
                if problems:
                    break
                # Hold text back until it names a product shown: an off-topic opening is never sent.
                if emitted or not self.check_text(candidate, plan, final=False):
                    release = pending[:cut] if emitted else pending[:cut].lstrip()
                    yield release
                    emitted += release
                    pending = pending[cut:]
        except Exception as exc:  # noqa: BLE001 - the template answers when the model fails
            plan.trace["model_errors"].append(f"answer: {type(exc).__name__}: {str(exc)[:200]}")
            problems = problems or [Violation("", "model_error", type(exc).__name__)]
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not problems:
            final = self._trim(emitted + pending, finish)
            final, problems = self._add_reasons(final, plan, self.check_text(final, plan))
            if not problems:
                rest = final[len(emitted) :] if final.startswith(emitted) else ""
                if rest:
                    yield rest
                plan.report.text_source = "model"
                return
        plan.report.text_violations.extend(problems)
        if emitted.strip():
            # Part of a good answer is already out: end it there rather than contradict it.
            plan.report.text_source = "model-truncated"
            return
        text = ""
        if not any(v.check == "model_error" for v in problems):
            text, again = self._generate(plan, problems)
            if again:
                plan.report.text_violations.extend(again)
                text = ""
        if text:
            plan.report.text_source = "model-repaired"
        else:
            plan.report.text_source = "template"
            text = self.template(plan)
        yield from _chunks(text)

    def _finish(self, plan: _Plan, message: str, started: float) -> ShopAnswer:
        plan.trace["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 1)
        return ShopAnswer(
            message=message,
            query=plan.query.model_dump() if plan.query else {},
            products=[dict(c) for c in plan.cards],
            clarifying=plan.clarifying,
            state=plan.state.to_dict(),
            alternatives=[dict(c) for c in plan.alternatives],
            constraints=plan.constraints.to_dict(),
            grounding=plan.report.to_dict(),
            trace=plan.trace,
        )


def _chunks(text: str, size: int = 6) -> Iterator[str]:
    """A finished text as word-group deltas (the template streams like model text does)."""
    words = re.findall(r"\S+\s*", text)
    for i in range(0, len(words), size):
        yield "".join(words[i : i + size])


def _exclusion_claims(text: str, cards: Sequence[Mapping[str, Any]], excluded: Sequence[str]) -> list[Violation]:
    """Sentences that call a product by a value the shopper excluded ("a black speaker" for "not black").
    A sentence about a near alternative may say what it misses ("the Y is black"), and any sentence may
    name the exclusion as one ("no leather", "not black")."""
    out: list[Violation] = []
    near = [str(c.get("title", "")).lower() for c in cards if c.get("match") == "near" and c.get("title")]
    titles = sorted({str(c.get("title", "")).lower() for c in cards if c.get("title")}, key=len, reverse=True)
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        low = sentence.lower()
        if any(title in low for title in near):
            continue
        for title in titles:  # a product's own name is no claim about it ("Black Forest Mug" in blue)
            low = low.replace(title, " ")
        for value in dict.fromkeys(str(v).lower() for v in excluded if v):
            for m in re.finditer(rf"(?<![a-z0-9]){re.escape(value)}(?![a-z0-9])", low):
                if not _EXCLUSION_CUE.search(low[max(0, m.start() - 40) : m.start()]):
                    out.append(Violation(value, "text_exclusions", "calls a product by a value the shopper excluded"))
                    break
    return out
