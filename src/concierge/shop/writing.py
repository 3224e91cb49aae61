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
from dataclasses import dataclass
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

log = logging.getLogger("concierge.shop.assistant")

ANSWER_MAX_TOKENS = 80
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
ANSWER_TEXT_CHECKS = ("text_nonempty", "text_format", *TEXT_CHECKS, "text_mentions_product")

ANSWER_SYSTEM_PROMPT = (
    "You are a friendly shop assistant. Answer the shopper in one or two short sentences, recommending "
    "products from the list you are given by their exact names. Do not mention anything else."
)
# One worked example: small models follow a demonstration far better than instructions alone.
ANSWER_EXAMPLE = (
    "Products:\n1. Example Co. Everyday Daypack ($49.99, black)\nShopper: a black backpack",
    "The Example Co. Everyday Daypack in black, at $49.99, is a great everyday pick.",
)


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


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


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
        """The deterministic answer: always grounded (titles and prices of the cards, the stated bounds)."""
        if plan.clarifying:
            return plan.question
        desc = plan.constraints.describe()
        what = self._what(plan)
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
        listed = [f"{c['title']} ({_money(c['price'])})" for c in plan.cards[:3]]
        more = len(plan.cards) - len(listed)
        text = f"Here {'is' if len(plan.cards) == 1 else 'are'} {len(plan.cards)} {what}"
        text += f" {desc}" if desc else ""
        text += f": {_join(listed)}"
        text += f", plus {more} more." if more else "."
        if plan.personalised:
            text += " I put items like the ones you looked at first."
        return text

    def _answer_request(self, plan: _Plan, feedback: list[Violation] | None = None) -> dict[str, Any]:
        lines = []
        for i, c in enumerate(plan.cards, 1):
            details = ", ".join([_money(c["price"]), *c["options"].values()])
            lines.append(f"{i}. {c['title']} ({details})")
        user = "Products:\n" + "\n".join(lines) + f"\nShopper: {plan.user_text}"
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

    def check_text(self, text: str, plan: _Plan, *, require_product: bool = True) -> list[Violation]:
        """Grounding of an answer text: only the cards' titles, ids, brands, prices and colours; on topic."""
        return self._check_text(text, plan.cards, plan.constraints, require_product=require_product)

    def verify(self, answer: ShopAnswer) -> list[Violation]:
        """Re-check a finished answer: its cards against the catalogue, its text against its cards."""
        constraints = (
            HardConstraints.from_dict(answer.constraints) if answer.constraints else HardConstraints()
        )
        _, report = validate_products(answer.products, self.catalog, constraints)
        if answer.clarifying:
            return report.violations
        return report.violations + self._check_text(
            answer.message, answer.products, constraints, require_product=bool(answer.products)
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
        for card in cards:
            if re.search(rf"\b\d{{1,2}}[.)]\s*{re.escape(card['title'])}", text, re.IGNORECASE):
                out.append(Violation(card["title"], "text_format", "list numbering from the prompt"))
        bounds = [p for p in (c.price_min, c.price_max) if p is not None]
        words = [v for vals in c.attributes.values() for v in vals]
        words += [v for vals in c.exclude_attributes.values() for v in vals] + list(c.exclude_terms)
        out += self.checker.check(text, cards, bounds, words)
        if require_product:
            low = text.lower()
            if not any(card["title"].lower() in low for card in cards):
                out.append(Violation(text[:40], "text_mentions_product", "names none of the products shown"))
        return out

    def _trim(self, text: str, finish_reason: str | None) -> str:
        text = text.strip()
        if finish_reason == "length":
            ends = list(_SENTENCE_END.finditer(text))
            text = text[: ends[-1].end()] if ends else ""
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
        if not problems:
            plan.report.text_source = "model"
            return text
        plan.report.text_violations.extend(problems)
        if not any(v.check == "model_error" for v in problems):
            text, again = self._generate(plan, problems)
            if not again:
                plan.report.text_source = "model-repaired"
                return text
            plan.report.text_violations.extend(again)
        plan.report.text_source = "template"
        return self.template(plan)

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
                ends = list(_SENTENCE_END.finditer(pending))
                if not ends:
                    continue
                cut = ends[-1].end()
                candidate = emitted + pending[:cut]
                problems = self.check_text(candidate, plan, require_product=False)
                if problems:
                    break
                # Hold text back until it names a product shown: an off-topic opening is never sent.
                if emitted or not self.check_text(candidate, plan):
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
            problems = self.check_text(final, plan)
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
            constraints=plan.constraints.to_dict(),
            grounding=plan.report.to_dict(),
            trace=plan.trace,
        )


def _chunks(text: str, size: int = 6) -> Iterator[str]:
    """A finished text as word-group deltas (the template streams like model text does)."""
    words = re.findall(r"\S+\s*", text)
    for i in range(0, len(words), size):
        yield "".join(words[i : i + size])
