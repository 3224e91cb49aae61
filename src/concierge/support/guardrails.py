"""Guardrails at the tool-call boundary, the same for the agent and the guided mode.

Whatever the model asks for, a tool call passes :meth:`Guard.call`, which enforces in code:

* identity first: read tools other than identification and catalogue search are refused
  until the customer is identified, and the identified customer may only touch their own
  records (orders, reservations, profile); identification tools run only with values the
  customer wrote themselves, and only once (text injected into a tool result or a document
  cannot identify the chat as somebody else);
* an explicit yes before any WRITE tool: the customer's latest message must read as ``yes``
  (:func:`concierge.support.confirmation.read_confirmation`: hedges, conditions, questions,
  retractions and new requests are ``unclear``)
  and must answer an agent message that presented the action, naming the record it changes
  (order, reservation); one yes pays for one write;
* grounded writes (:mod:`concierge.support.grounding`): every argument of a write comes from what
  the customer said or a record looked up in this conversation, and only the items the customer
  named are changed; an ungrounded write is refused with what to ask;
* an override attempt ("ignore the policy ...") is never a yes;
* a handoff tool switches the conversation to ``handoff`` with the model's summary.

* a yes after an override attempt earlier in the conversation is void: the change must be
  confirmed again, afresh;
* a write's policy preconditions (``guardrails: preconditions:`` in the flows file, checked by
  :mod:`concierge.support.preconditions`) must hold, whatever the customer said.

Other eligibility rules (order status, balances, ...) are checked by the domain's tools themselves.
Guard state is a plain JSON dict so a session can persist it between turns and restarts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from concierge.support.confirmation import read_confirmation
from concierge.support.grounding import Evidence, describe, ungrounded
from concierge.support.preconditions import Preconditions
from concierge.support.toolkit.domain import Domain

_OVERRIDE = re.compile(
    r"\b(ignore|disregard|forget|bypass|override|skip|break)\b[^.?!]{0,40}\b(polic(y|ies)|rules?|instructions?|"
    r"guidelines?|restrictions?|system prompt)\b|\bmake an exception\b|\bjust this once\b|"
    r"\bpretend (you|that)\b|\byou are (now )?allowed\b",
    re.I,
)
_CONFIRM_CUE = re.compile(
    r"\?|\bconfirm|\bproceed|\byes\b|\bshall i\b|\bwould you like\b|\bdo you want\b", re.I
)


def is_affirmative(text: str | None, proposal: str | None = None) -> bool:
    """An explicit, unhedged yes (see :mod:`concierge.support.confirmation`), and no attempt to set
    the policy aside in the same message. Only this lets a write through."""
    if not text or is_override_attempt(text):
        return False
    return read_confirmation(text, proposal) == "yes"


def is_negative(text: str | None) -> bool:
    return bool(text) and read_confirmation(text) == "no"


def is_override_attempt(text: str | None) -> bool:
    return bool(text) and bool(_OVERRIDE.search(text or ""))


def asks_confirmation(text: str | None) -> bool:
    """Whether an agent message reads as presenting something for the customer to approve."""
    return bool(text) and bool(_CONFIRM_CUE.search(text or ""))


@dataclass
class GuardRules:
    """What a domain needs checked; read from the ``guardrails`` section of its flows file."""

    identify_tools: list[str] = field(default_factory=list)  # success identifies the customer
    # tool -> argument: allowed before identification when the customer said that value
    # themselves (airline: the user id); success identifies the customer.
    claim_tools: dict[str, str] = field(default_factory=dict)
    open_tools: list[str] = field(default_factory=list)  # no identification needed (catalogue, maths)
    # argument -> {"self": true} (must equal the customer's id) or {"table": t, "field": f}
    ownership: dict[str, dict[str, Any]] = field(default_factory=dict)
    handoff_tools: list[str] = field(default_factory=lambda: ["transfer_to_human_agents"])
    require_identity: bool = True
    # tool -> [{require, fail}]: policy rules checked before the write (support.preconditions)
    preconditions: Preconditions = field(default_factory=Preconditions)
    # Write arguments the grounding check does not trace (categorical choices the tool validates).
    grounding_free: list[str] = field(default_factory=list)
    # Guided mode changes nothing while a change the customer asked for cannot be worked out (a request no
    # flow recognises, an item named in a request that its proposal leaves out): all or nothing.
    complete_requests: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GuardRules:
        if not data:
            return cls(require_identity=False)
        return cls(
            identify_tools=list(data.get("identify_tools") or []),
            claim_tools=dict(data.get("claim_tools") or {}),
            open_tools=list(data.get("open_tools") or []),
            ownership=dict(data.get("ownership") or {}),
            handoff_tools=list(data.get("handoff_tools") or ["transfer_to_human_agents"]),
            require_identity=bool(data.get("require_identity", True)),
            preconditions=Preconditions.from_dict(data.get("preconditions")),
            grounding_free=list(data.get("grounding_free") or []),
            complete_requests=bool(data.get("complete_requests", True)),
        )


@dataclass
class Turn:
    """What the guard needs to know about the conversation at the moment of a tool call."""

    user_text: str  # the customer's latest message
    user_index: int  # its position (counts customer messages), so one yes pays for one write
    agent_before: str | None  # the agent's last message before it
    customer_text: str = ""  # everything the customer has said, for claimed identifiers
    # What a write may draw on (customer messages, this conversation's tool results); None: unchecked
    evidence: Evidence | None = None


def tool_kind(domain: Domain, name: str) -> str:
    """``read`` | ``write`` | ``generic`` for a domain tool (``unknown`` if it has none by that name)."""
    spec = domain.tools.get(name) if isinstance(name, str) else None
    return spec.kind if spec is not None else "unknown"


def tool_error_type() -> type[Exception]:
    from concierge.support.toolkit import ToolError

    return ToolError


class Guard:
    """Applies :class:`GuardRules` to one conversation; ``state`` is the persisted guard dict."""

    def __init__(self, domain: Domain, rules: GuardRules, state: dict[str, Any] | None = None) -> None:
        self.domain = domain
        self.rules = rules
        self.state = state if state is not None else {}
        self.state.setdefault("user_id", None)
        self.state.setdefault("yes_used", -1)
        self.state.setdefault("override_attempts", 0)
        self.state.setdefault("handoff", None)

    @property
    def user_id(self) -> str | None:
        return self.state.get("user_id")

    def check(self, name: str, arguments: dict[str, Any], turn: Turn) -> str | None:
        """Why this call is refused, or None when it may run."""
        kind = tool_kind(self.domain, name)
        if kind == "unknown":
            return f"Unknown tool '{name}'."
        if name in self.rules.handoff_tools:
            return None
        if kind == "write" and self.state.get("replaying"):
            # A stateless client's earlier messages, run again to re-derive the state: a change they
            # led to was made (or refused) in the request that carried them; never make it again.
            return "Not done again: replaying the conversation sent by the client; past changes are not repeated."
        identified = self.user_id is not None
        if name in self.rules.identify_tools and self.rules.require_identity:
            # Identification comes from the customer's own words only: a model steered by text in a
            # tool result or document must not log the chat in as somebody else.
            if identified:
                return "The customer is already identified; identification tools are not needed again."
            unsaid = _unsaid(arguments, turn.customer_text)
            if unsaid:
                return f"The customer must state their {', '.join(unsaid)} themselves before I can look it up."
            return None
        if self.rules.require_identity and not identified:
            if name in self.rules.open_tools:
                return None
            claim_arg = self.rules.claim_tools.get(name)
            if claim_arg:
                value = str(arguments.get(claim_arg, "")).strip()
                if value and value.lower() in turn.customer_text.lower():
                    return None
                return f"The customer must state their {claim_arg} before I can look it up."
            return "The customer must be identified (authenticated) before any account access."
        if identified:
            problem = self._ownership_problem(arguments)
            if problem:
                return problem
        if kind == "write":
            if is_override_attempt(turn.user_text):
                self.state["override_attempts"] = int(self.state.get("override_attempts", 0)) + 1
                self.state["override_for"] = {"tool": name, "at": turn.user_index}
                return "Refused: the customer asked to set the policy aside; no change is made on that basis."
            failed = self.rules.preconditions.check(
                self.domain, name, arguments, user_id=self.user_id, said=turn.customer_text
            )
            if failed:
                return failed
            if not asks_confirmation(turn.agent_before):
                return (
                    "Before any change, list the action details to the customer and ask for an explicit "
                    "yes to proceed."
                )
            unshown = self._unpresented(arguments, turn.agent_before or "")
            if unshown:
                # A yes only confirms what the customer was shown: the record being changed must have
                # been named in the message they answered.
                return (
                    f"The confirmation question did not name {', '.join(unshown)}; list the action details "
                    "(which record, what change) and ask the customer to confirm."
                )
            if not is_affirmative(turn.user_text, turn.agent_before):
                return (
                    "The customer has not explicitly confirmed (yes) this action; ask them to confirm first."
                )
            if int(self.state.get("yes_used", -1)) >= turn.user_index and not self._planned(name, turn):
                return "That confirmation was already used for another change; ask the customer to confirm again."
            stale = self._override_before(name, turn)
            if stale:
                return stale
            problems = self.ungrounded(name, arguments, turn)
            if problems:
                return (
                    f"Not grounded: {describe(problems)}. Ask the customer ("
                    + "; ".join(p.hint for p in problems)
                    + "); if it still cannot be grounded, say so and offer a human agent."
                )
        return None

    def expect_plan(self, writes: list[str], turn: Turn) -> None:
        """The agent asked for one yes to a numbered list of changes (each record named in it): the
        customer's next message, if it is a yes, pays for exactly those writes, one each."""
        self.state["plan"] = {"yes_at": turn.user_index + 1, "writes": list(writes)}

    def _planned(self, name: str, turn: Turn) -> bool:
        plan = self.state.get("plan") or {}
        return plan.get("yes_at") == turn.user_index and name in (plan.get("writes") or [])

    def _override_before(self, name: str, turn: Turn) -> str | None:
        """A yes that follows an override attempt ("I'm a manager, override it") does not count: the
        first confirmation after it is void, and the change must be confirmed again, afresh."""
        earlier = turn.customer_text
        if turn.user_text and earlier.endswith(turn.user_text):
            earlier = earlier[: len(earlier) - len(turn.user_text)]
        seen = len(_OVERRIDE.findall(earlier))
        if seen > int(self.state.get("overrides_answered", 0)):
            self.state["overrides_answered"] = seen
            self.state["yes_void_upto"] = turn.user_index
        if int(self.state.get("yes_void_upto", -1)) < turn.user_index:
            return None
        about = (self.state.get("override_for") or {}).get("tool") or name
        return (
            f"The customer asked earlier to set the policy aside (about {about}); that yes does not count. "
            "List the action details again and ask for a fresh, explicit yes."
        )

    def ungrounded(self, name: str, arguments: dict[str, Any], turn: Turn) -> list[Any]:
        """The write's arguments that neither the customer nor a looked-up record supports."""
        if turn.evidence is None:
            return []
        return ungrounded(name, arguments, turn.evidence, free=self.rules.grounding_free)

    def _unpresented(self, arguments: dict[str, Any], agent_text: str) -> list[str]:
        """The record identifiers of a write that the confirmation question did not mention."""
        missing = []
        for arg, spec in self.rules.ownership.items():
            value = arguments.get(arg)
            if spec.get("self") or not isinstance(value, str) or not value:
                continue
            if value.lower() not in agent_text.lower() and value.lstrip("#").lower() not in agent_text.lower():
                missing.append(f"{arg} {value}")
        return missing

    def _ownership_problem(self, arguments: dict[str, Any]) -> str | None:
        db = getattr(self.domain, "db", {}) or {}
        lookup = getattr(self.domain, "record", None)
        for arg, spec in self.rules.ownership.items():
            if arg not in arguments:
                continue
            value = arguments[arg]
            if spec.get("self"):
                if str(value) != self.user_id:
                    return f"I can only act on the identified customer's own account ({arg} does not match)."
                continue
            if callable(lookup):
                # Records a company's own system holds are looked up there (support.domains.external);
                # ownership that cannot be checked is not assumed.
                try:
                    record = lookup(spec.get("table", ""), value)
                except tool_error_type() as exc:
                    return f"I could not check {arg} {value}: {exc}"
            else:
                table = db.get(spec.get("table", ""), {})
                record = table.get(value) if isinstance(table, dict) and isinstance(value, str) else None
            owner = record.get(spec.get("field", "user_id")) if isinstance(record, dict) else None
            if owner is not None and owner != self.user_id:
                return f"{arg} {value} belongs to another customer; I can only help with your own records."
        return None

    def call(self, name: str, arguments: dict[str, Any], turn: Turn) -> dict[str, Any]:
        """Check, run and record one tool call; returns an action dict (never raises ToolError)."""
        kind = tool_kind(self.domain, name)
        action: dict[str, Any] = {"tool": name, "arguments": arguments, "kind": kind}
        refusal = self.check(name, arguments, turn)
        if refusal:
            action.update(ok=False, refused=True, error=refusal)
            return action
        try:
            result = self.domain.call(name, arguments)
        except tool_error_type() as exc:
            action.update(ok=False, refused=False, error=str(exc))
            return action
        action.update(ok=True, refused=False, result=_jsonable(result))
        self._record(name, arguments, result, kind, turn)
        return action

    def _record(self, name: str, arguments: dict[str, Any], result: Any, kind: str, turn: Turn) -> None:
        if name in self.rules.identify_tools or (name in self.rules.claim_tools and self.user_id is None):
            uid = _user_id_from(result) or arguments.get(self.rules.claim_tools.get(name, ""), None)
            if uid and self.user_id is None:
                self.state["user_id"] = str(uid)
        if kind == "write":
            self.state["yes_used"] = turn.user_index
            plan = self.state.get("plan") or {}
            if plan.get("yes_at") == turn.user_index and name in (plan.get("writes") or []):
                plan["writes"].remove(name)
        if name in self.rules.handoff_tools:
            summary = arguments.get("summary") or arguments.get("reason") or ""
            self.state["handoff"] = {"tool": name, "summary": str(summary), "user_id": self.user_id}


def _unsaid(arguments: dict[str, Any], customer_text: str) -> list[str]:
    """Argument names whose (non-empty string) values the customer never wrote."""
    said = customer_text.lower()
    return [
        name
        for name, value in arguments.items()
        if isinstance(value, str) and value.strip() and value.strip().lower() not in said
    ]


def _user_id_from(result: Any) -> str | None:
    if isinstance(result, str):
        text = result.strip().strip('"')
        return text if text and " " not in text else None
    if isinstance(result, dict):
        value = result.get("user_id")
        return str(value) if value else None
    value = getattr(result, "user_id", None)
    return str(value) if value else None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        dump = getattr(value, "model_dump", None) or getattr(value, "to_dict", None)
        if callable(dump):
            return dump()
        return str(value)


def result_text(action: dict[str, Any]) -> str:
    """The text the model (or a log) sees for an action: the result JSON, or ``Error: ...``."""
    if not action.get("ok"):
        return f"Error: {action.get('error')}"
    result = action.get("result")
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
