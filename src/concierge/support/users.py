"""User simulators for evaluating the support agent on τ²-style tasks.

``ScriptedUser`` is deterministic and uses no model: it states the task's reason for calling
and what it knows (from ``user_scenario.instructions``), answers identity questions (email,
name, zip, user id, order or reservation ids) from that text, says yes to confirmations, and
stops when the agent transfers, asks whether there is anything else once every request is said, or
after ``max_turns``.
``CautiousUser`` is the same customer, but it declines a proposed change naming an item or option
value its instructions do not mention, and answers questions only from what it knows.
``LLMUser`` plays the customer with any hub alias, the task instructions as its system prompt.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

from concierge.models.engine import ChatHub
from concierge.support.guardrails import asks_confirmation
from concierge.support.tasks import Task

STOP = "###STOP###"
TRANSFER = "###TRANSFER###"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_USER_ID = re.compile(r"\b([a-z]+)_([a-z]+)_\d{3,5}\b")
_ORDER = re.compile(r"(?<![\w#])#?(W\d{7})\b")
_RESERVATION = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6}\b")
_ZIP = re.compile(r"\b(\d{5})\b")
_NAME = re.compile(
    r"\b(?i:you are|you're|your name is|called|i am|my name is)\s+(?:an? [a-z ]+ (?:called|named) )?"
    r"([A-Z][a-z'-]+)\s+([A-Z][a-z'-]+)"
)
_META = re.compile(
    r"\b(the agent|do not (reveal|mention|share|tell)|don't (reveal|mention|share|tell)|"
    r"not reveal|the customer service|you are playing|never respond|###)",
    re.I,
)


class UserSimulator(Protocol):
    name: str
    usage: dict[str, float]

    def start(self) -> str: ...

    def respond(self, agent_message: str) -> str | None:
        """The customer's next message, or None when they end the conversation."""
        ...


def scenario_parts(task: Task) -> dict[str, str]:
    """reason_for_call / known_info / unknown_info / task_instructions as text (v1: one instruction)."""
    instructions = task.user_scenario.get("instructions") if task.user_scenario else None
    if isinstance(instructions, dict):
        return {
            k: str(instructions.get(k) or "")
            for k in ("reason_for_call", "known_info", "unknown_info", "task_instructions")
        }
    return {
        "reason_for_call": str(instructions or task.instructions or ""),
        "known_info": "",
        "unknown_info": "",
        "task_instructions": "",
    }


_VERBS = set(
    """want wish have had received just are were would will can could do don't did prefer need needed
ordered placed recently also only think know remember live like bought got made realize realized used still
then might may should must plan decide decided believe care mention ask asked say go forgot lost changed won
the not now already really recently currently cannot can't never always expect are'nt intend hope tried try
booked book paid reserved fly flew traveled travel noticed found""".split()
)


def to_first_person(text: str) -> str:
    """Turn a second-person instruction ("You received your order") into the customer's words."""
    fixed = [
        (r"\byou are\b", "I am"),
        (r"\byou're\b", "I'm"),
        (r"\byou've\b", "I've"),
        (r"\byou'd\b", "I'd"),
        (r"\byou'll\b", "I'll"),
        (r"\byou were\b", "I was"),
        (r"\byou name\b", "my name"),
        (r"\byourself\b", "myself"),
        (r"\byours\b", "mine"),
        (r"\byour\b", "my"),
    ]
    for pattern, repl in fixed:
        text = re.sub(
            pattern,
            lambda m, r=repl: r[0].upper() + r[1:] if m.group(0)[0].isupper() else r,
            text,
            flags=re.I,
        )

    def you(m: re.Match[str]) -> str:
        after = text[m.end() :].lstrip().split(" ", 1)[0].lower().strip(".,;:!?")
        start = m.start() == 0 or text[: m.start()].rstrip().endswith((".", "!", "?", ":", "\n"))
        return "I" if start or after in _VERBS else "me"

    text = re.sub(r"\byou\b", you, text, flags=re.I)
    # "I am" after the rewrite can leave "I wants"-style agreement alone: instructions use the base form.
    return re.sub(r"\bI (has)\b", "I have", text)


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text.strip())
    return [p.strip() for p in parts if p.strip()]


class ScriptedUser:
    """A deterministic customer built from the task's instructions."""

    name = "scripted"

    def __init__(self, task: Task, max_turns: int = 12) -> None:
        self.task = task
        self.max_turns = max_turns
        self.usage: dict[str, float] = {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "model_calls": 0,
            "seconds": 0.0,
        }
        parts = scenario_parts(task)
        self.reason = parts["reason_for_call"]
        self.known = parts["known_info"]
        self.unknown = parts["unknown_info"].lower()
        self.instructions_text = parts["task_instructions"]
        everything = " ".join(parts.values())
        facts = f"{self.known} {self.reason}"
        self.email = (
            None if "email" in self.unknown and "not remember" in self.unknown else _first(_EMAIL, facts)
        )
        uid = _USER_ID.search(facts)
        self.user_id = uid.group(0) if uid else task.user_id
        name = _NAME.search(to_first_person(facts)) or _NAME.search(everything)
        if name:
            self.first_name, self.last_name = name.group(1), name.group(2)
        elif self.user_id and _USER_ID.fullmatch(self.user_id):
            m = _USER_ID.fullmatch(self.user_id)
            assert m is not None
            self.first_name, self.last_name = m.group(1).title(), m.group(2).title()
        else:
            self.first_name = self.last_name = None
        zips = [z for z in _ZIP.findall(self.known or facts)]
        self.zip = zips[-1] if zips else None
        self.order_ids = list(dict.fromkeys("#" + o for o in _ORDER.findall(facts)))
        self.reservation_ids = list(
            dict.fromkeys(r for r in _RESERVATION.findall(facts) if r not in self.order_ids)
        )
        # What the customer says about their request: instructions about the agent stay private.
        self.request = [to_first_person(s) for s in _sentences(self.reason) if not _META.search(s)]
        self.turns = 0
        self.fallbacks = 0
        self.sent = 0
        self.done = False

    def _identity(self) -> str:
        bits = []
        if self.first_name and self.last_name:
            bits.append(f"My name is {self.first_name} {self.last_name}")
        if self.zip:
            bits.append(f"my zip code is {self.zip}")
        if not bits and self.user_id:
            bits.append(f"my user id is {self.user_id}")
        return (" and ".join(bits) + ".") if bits else "I don't have those details at hand."

    def _choose(self, options: list[str]) -> str:
        """The offered option closest to what the instructions say (the first one if none is)."""
        said = set(re.findall(r"[a-z]+", f"{self.reason} {self.instructions_text}".lower()))
        scores = [len(set(re.findall(r"[a-z]+", o.lower())) & said) for o in options]
        pick = options[scores.index(max(scores))] if max(scores) > 0 else options[0]
        return f"{pick[0].upper()}{pick[1:]}."

    def rest(self) -> str | None:
        """The answer to "anything else?": the requests not said yet, all of them, or None (done)."""
        if self.sent >= len(self.request):
            return None
        rest = " ".join(self.request[self.sent :])
        self.sent = len(self.request)
        return rest

    def start(self) -> str:
        self.turns = 1
        first = " ".join(self.request[:4]) or "I need help with my account."
        self.sent = min(4, len(self.request))
        known = to_first_person(self.known).strip()
        return f"Hi! {first} {known}".strip()

    def respond(self, agent_message: str) -> str | None:
        if self.done or self.turns >= self.max_turns:
            return None
        self.turns += 1
        text = agent_message.lower()
        if "transfer" in text and ("human" in text or "hold on" in text):
            return None
        if "anything else" in text:
            rest = self.rest()
            if rest or not _PROPOSAL.search(text):
                return rest  # the rest of the requests, or done; a proposal still gets its answer below
        asks_identity = "?" in agent_message or re.search(
            r"\b(provide|give|share|tell|verify|confirm)\b", text
        )
        if asks_identity and "email" in text:
            if self.email:
                return f"My email is {self.email}."
            return f"I don't remember my email. {self._identity()}"
        if asks_identity and ("zip" in text or re.search(r"\b(first|full|last) name\b|\byour name\b", text)):
            return self._identity()
        if asks_identity and "user id" in text:
            return f"My user id is {self.user_id}." if self.user_id else "I don't know my user id."
        if asks_identity and re.search(r"\border (id|number)\b|\bwhich order\b", text):
            if self.order_ids:
                return "The order id is " + " and ".join(self.order_ids) + "."
            return "I don't remember the order id. Can you look it up?"
        if asks_identity and re.search(
            r"\b(reservation|booking|confirmation) (id|number|code)\b|\bwhich reservation\b", text
        ):
            if self.reservation_ids:
                return "The reservation id is " + " and ".join(self.reservation_ids) + "."
            return "I don't remember the reservation id. Can you look it up?"
        options = _offered_options(agent_message)
        if options and "?" in agent_message and not re.search(r"\b(proceed|go ahead)\b", text):
            return self._choose(options)
        if asks_confirmation(agent_message) and re.search(
            r"\b(proceed|confirm|go ahead|shall i|should i|would you like me to|do you want me to)\b", text
        ):
            return "Yes, please proceed."
        if self.sent < len(self.request):
            nxt = self.request[self.sent]
            self.sent += 1
            return nxt
        self.fallbacks += 1
        if self.fallbacks > 2:
            return None
        return " ".join(self.request) if self.fallbacks == 1 else "Thank you. Is that everything you can do?"


_STOPWORDS = set(
    """a an the and or of to for in on at by with from your you my me i is are was be it this that these those
what which who whom when where why how do does did can could would will shall should may might please
have has had any some there here their them they our we us so if not no yes also about into than then
just only very more most like want need know tell give let confirm provide share order item items
one ones new current""".split()
)
_PROPOSAL = re.compile(
    r"\b(proceed|confirm|go ahead|shall i|should i|would you like me to|do you want me to)\b", re.I
)
# A product named in a proposal: Title Case words before "(" (its options) or a quoted/bold name.
_NAMED_ITEM = re.compile(r"([A-Z][\w-]*(?:\s+[A-Z][\w-]*){0,3})\s*\(|\*\*([^*]{3,60})\*\*|" r'"([^"]{3,60})"')
# An option set in a proposal: "color: blue", "size: M" (inside parentheses or lists).
_OPTION = re.compile(r"\b([a-z][a-z ]{0,20}[a-z])\s*:\s*([^,;()\n]+?)\s*(?=[,;)\n]|$)", re.I)
_NOT_ITEMS = {"order", "reservation", "flight", "refund", "payment", "total", "price", "note", "summary"}


def _words(text: str) -> set[str]:
    """Lower-case words, with a plural's singular too ("keyboards" → "keyboard")."""
    words = set(re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z])-(?=[a-z])", "", text.lower())))
    return words | {w[:-1] for w in words if len(w) > 3 and w.endswith("s")}


class CautiousUser(ScriptedUser):
    """A deterministic customer who says yes only to what its instructions ask for.

    Like :class:`ScriptedUser` it reads only the task's instructions. It declines a proposed change
    that names a product its instructions do not (by its head noun: "Hiking Boots" is named by
    "the boots"; "all items" names every one), or sets an option value they never
    mention, and it answers the agent's other questions only from what it knows, saying so when it
    does not know. ``scripted`` (always yes) stays the worst case for the agent's guardrails.
    """

    name = "cautious"

    def __init__(self, task: Task, max_turns: int = 12) -> None:
        super().__init__(task, max_turns=max_turns)
        parts = scenario_parts(task)
        self.knowledge = " ".join(parts[k] for k in ("reason_for_call", "known_info", "task_instructions"))
        self.known_words = _words(self.knowledge)
        self.declined: list[str] = []
        # "return all things ordered", "cancel all pending orders": any item of theirs is asked for.
        self.any_item = bool(
            re.search(
                r"\b(all (the |my |your )?(things|items|orders|pending)|everything)\b", self.knowledge, re.I
            )
        )

    def unknown_in_proposal(self, agent_message: str) -> list[str]:
        """Items and option values the proposal names that the instructions never mention."""
        strange = []
        for m in _NAMED_ITEM.finditer(agent_message):
            name = next(g for g in m.groups() if g)
            words = _words(name) - _STOPWORDS
            if not words or words & _NOT_ITEMS or re.search(r"\d", name) or self.any_item:
                continue
            # The product's head noun ("Hiking Boots" → boots) must be one the instructions use.
            head = re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z])-(?=[a-z])", "", name.lower()))[-1]
            if not _words(head) & self.known_words:
                strange.append(name.strip())
        for key, value in self._options(agent_message):
            if len(key.split()) > 3:
                continue
            value_words = _words(value) - _STOPWORDS
            if not value_words or re.fullmatch(r"[\d\s.$#,-]+", value):
                continue  # prices, ids and amounts are the agent's figures, not options
            if not value_words <= self.known_words:
                strange.append(f"{key.strip()}: {value.strip()}")
        return strange

    @staticmethod
    def _options(agent_message: str) -> list[tuple[str, str]]:
        """Option settings of the named items: "Mechanical Keyboard (switch type: clicky, size: full)"
        (the parentheses right after a Title Case name) and quoted pairs ("'color': 'red'")."""
        pairs = []
        for m in re.finditer(r"[A-Z][\w-]*(?:\s+[A-Z][\w-]*){0,3}\s*\(([^()]*)\)", agent_message):
            pairs.extend(_OPTION.findall(m.group(1)))
        pairs.extend(
            re.findall(r"['\"]([a-z][a-z ]{0,20})['\"]\s*:\s*['\"]([^'\"]+)['\"]", agent_message, re.I)
        )
        return pairs

    def _answer_from_knowledge(self, question: str) -> str:
        """The sentence of the instructions that best answers ``question``, or "I don't know"."""
        asked = _words(question) - _STOPWORDS
        if asked & (_words(self.unknown) - _STOPWORDS - {"remember", "recall", "know"}):
            return "I'm sorry, I don't know that."
        best, score = None, 0
        for sentence in _sentences(self.knowledge):
            if _META.search(sentence):
                continue
            hits = len(asked & (_words(sentence) - _STOPWORDS))
            if hits > score:
                best, score = sentence, hits
        if best is None:
            return "I'm sorry, I don't know that."
        return to_first_person(best)

    def respond(self, agent_message: str) -> str | None:
        if self.done or self.turns >= self.max_turns:
            return None
        text = agent_message.lower()
        if "transfer" in text and ("human" in text or "hold on" in text):
            return None
        if "anything else" in text:
            rest = self.rest()
            if rest or not _PROPOSAL.search(text):
                self.turns += 1
                return rest
        if asks_confirmation(agent_message) and _PROPOSAL.search(text):
            self.turns += 1
            strange = self.unknown_in_proposal(agent_message)
            if strange:
                self.declined.extend(strange)
                return f"No, please don't. I did not ask for {', '.join(strange)}."
            return "Yes, please proceed."
        identity = re.search(
            r"email|zip|\bname\b|user id|order (id|number)|which order|"
            r"(reservation|booking|confirmation) (id|number|code)|which reservation",
            text,
        )
        if "?" in agent_message and not identity and not _offered_options(agent_message):
            self.turns += 1
            question = " ".join(s for s in _sentences(agent_message) if "?" in s) or agent_message
            return self._answer_from_knowledge(question)
        return super().respond(agent_message)


def _offered_options(message: str) -> list[str]:
    """Choices the agent offers: quoted ('no longer needed' or 'ordered by mistake'), or listed
    after a colon in a question ("why: change of plans, travel restrictions, or booked by mistake?").
    """
    quoted = re.findall(r"'([^']{3,40})'", message)
    if len(quoted) >= 2:
        return quoted
    m = re.search(r":\s*([^:?]{5,200})\?", message)
    if m:
        parts = [p.strip(" .") for p in re.split(r",\s*(?:or\s+)?|\s+or\s+", m.group(1)) if p.strip(" .")]
        parts = [re.sub(r"^(a|an|the)\s+", "", p) for p in parts]
        if 2 <= len(parts) <= 6 and all(len(p) <= 40 for p in parts):
            return parts
    return []


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    m = pattern.search(text)
    return m.group(0).rstrip(".") if m else None


class LLMUser:
    """A customer played by a model through the hub (τ²-bench's user simulator setup)."""

    name = "llm"

    def __init__(
        self, task: Task, hub: ChatHub, alias: str, max_turns: int = 20, tenant: str | None = None
    ) -> None:
        self.task = task
        self.hub = hub
        self.alias = alias
        self.max_turns = max_turns
        self.tenant = tenant
        self.turns = 0
        self.messages: list[dict[str, str]] = []
        self.usage: dict[str, float] = {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "model_calls": 0,
            "seconds": 0.0,
        }
        self.system = (
            "You are a customer contacting a customer service agent. Play the customer described below; never act "
            "as the agent. Reveal information only when it is needed, one step at a time, and stay within the "
            f"instructions. When your request is fully handled, or cannot be, reply with exactly {STOP}. If you "
            f"are transferred to a human agent, reply with exactly {TRANSFER}.\n\n"
            f"Instructions:\n{task.instructions}"
        )
        self.name = f"llm:{alias}"

    def _ask(self) -> str:
        request = {
            "messages": [{"role": "system", "content": self.system}, *self.messages],
            "temperature": 0.0,
            "max_tokens": 256,
        }
        started = time.perf_counter()
        response = self.hub.chat(self.alias, request, tenant=self.tenant)
        self.usage["seconds"] += time.perf_counter() - started
        usage = response.get("usage") or {}
        self.usage["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self.usage["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        self.usage["model_calls"] += 1
        text = ((response.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        return text.strip()

    def start(self) -> str:
        self.turns = 1
        # From the simulator's side the agent speaks first, as in τ²-bench.
        self.messages.append({"role": "user", "content": "Hi! How can I help you today?"})
        text = self._ask() or "Hi, I need some help."
        self.messages.append({"role": "assistant", "content": text})
        return text

    def respond(self, agent_message: str) -> str | None:
        if self.turns >= self.max_turns:
            return None
        self.turns += 1
        self.messages.append({"role": "user", "content": agent_message})
        text = self._ask()
        self.messages.append({"role": "assistant", "content": text})
        if not text or STOP in text or TRANSFER in text:
            return None
        return text


def make_user(
    kind: str,
    task: Task,
    *,
    hub: ChatHub | None = None,
    alias: str | None = None,
    max_turns: int = 12,
    tenant: str | None = None,
) -> UserSimulator:
    """``scripted``, ``cautious`` or ``llm`` (the latter needs a hub and a model alias)."""
    if kind == "scripted":
        return ScriptedUser(task, max_turns=max_turns)
    if kind == "cautious":
        return CautiousUser(task, max_turns=max_turns)
    if kind == "llm":
        if hub is None or not alias:
            raise ValueError("the llm user needs a hub and a model alias")
        return LLMUser(task, hub, alias, max_turns=max_turns, tenant=tenant)
    raise ValueError(f"unknown user simulator {kind!r} (scripted, cautious or llm)")
