"""The guided-mode engine (Rasa CALM style): the model only turns the conversation into a command.

Per customer message the model produces ``{intent, slots}`` under a JSON schema built from the
domain's flows file (intent enum + slot properties); a rule-based extractor (regexes and
keyword lists from the same file) backs it up and is merged with it, so a weak model still
works. Business logic is declarative: ONE YAML file per domain (``flows/<domain>.yaml``) lists
intents, their slots and steps (look-ups, checks, ask-to-confirm with a summary, the write
call, reply templates). This module is the generic engine that runs those steps through the
guardrails into ``domain.call``. All state is a JSON dict, persisted by the session.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any

from concierge.models.engine import ChatHub
from concierge.models.hub import alias_option
from concierge.models.replies import bound_reply
from concierge.support.agent import TurnResult, add_usage, current_turn
from concierge.support.grounding import Evidence, conditional_clause, unaddressed, ungrounded
from concierge.support.guardrails import Guard, is_affirmative, is_negative, result_text, tool_kind
from concierge.support.guided.command import (
    PROMPT_VERSION,
    Command,
    command_request,
    described_command_request,
)
from concierge.support.guided.flows import Flows, load_flows
from concierge.support.guided.lead import choose_command
from concierge.support.guided.slots import RuleExtractor, asks_for_change, model_slot_value
from concierge.support.toolkit.expr import MISSING, ExprError, evaluate, render, render_text

# --------------------------------------------------------------------------- the engine

def is_conditional(text: str) -> bool:
    return bool(conditional_clause(text)) or bool(re.search(r"\binstead\b", text or "", re.I))


_GO = re.compile(r"\b(go ahead|proceed|yes|do (it|this|that)|this one|the first)\b", re.I)
_NOTHING = re.compile(r"\b(change nothing|nothing|leave it|no|don'?t|do not|neither)\b", re.I)
_OTHER = re.compile(r"\b(other|instead|alternative|the second)\b", re.I)


def _read_choice(text: str) -> str:
    """``go`` | ``nothing`` | ``other`` | ``unclear``: the customer's pick on a conditional request."""
    if _OTHER.search(text or "") and not _NOTHING.search(text or ""):
        return "other"
    if _NOTHING.search(text or ""):
        return "nothing"
    if _GO.search(text or "") and not is_conditional(text):
        return "go"
    return "unclear"


def _now_text(now: Any) -> str:
    """The domain's clock as ISO text (``YYYY-MM-DDTHH:MM:SS``) for the flows' expressions."""
    from datetime import date, datetime

    if now is None:
        return datetime.now().replace(microsecond=0).isoformat()
    if isinstance(now, datetime):
        return now.replace(microsecond=0).isoformat()
    if isinstance(now, date):
        return f"{now.isoformat()}T00:00:00"
    text = str(now)
    return text if "T" in text else f"{text}T00:00:00"


def _change_text(proposal: str, *, notes: bool = False) -> str:
    """A confirmation question as a statement of the change: without "To confirm:" and the closing
    question (and, unless ``notes``, without the "Please make sure ..." reminders before it)."""
    ending = r"Shall I proceed" if notes else r"(Shall I proceed|Please make sure|This can only)"
    text = re.sub(r"\s*" + ending + r"[^?]*\?\s*$", "", proposal.strip())
    return re.sub(r"^To confirm[:,]\s*", "", text.strip())


def _last_agent(messages: list[dict[str, Any]]) -> str | None:
    """The agent's last message before the customer's latest one (the proposal a yes answers)."""
    for m in reversed(messages[:-1]):
        if m.get("role") == "assistant" and m.get("content"):
            return str(m["content"])
    return None


class _Pause(Exception):
    """A step is waiting for the customer (a question or a confirmation)."""


class _EndFlow(Exception):
    """The flow is over (finished, refused or failed)."""


class _Handoff(Exception):
    """The conversation goes to a human."""


class _Restart(Exception):
    """A missing piece was supplied: run the flow again from its first step."""


class _Planned(Exception):
    """The flow reached its confirmation while other requests are pending: its change waits in the plan."""


def _unable(active: dict[str, Any]) -> None:
    """Mark a request the agent could not carry out (a missing or ungrounded detail, a failed look-up),
    as opposed to one the policy refuses or the customer declines."""
    active["outcome"] = "unable"


class GuidedAgent:
    """Runs a domain's declarative flows; the model (if any) only proposes commands."""

    mode = "guided"

    def __init__(
        self,
        domain: Any,
        hub: ChatHub | None = None,
        alias: str | None = "support-agent",
        *,
        flows: Flows | None = None,
        use_model: bool = True,
        tenant: str | None = None,
        knowledge: Any = None,
        max_flow_runs: int = 12,
        lead: str | None = None,
    ) -> None:
        self.domain = domain
        self.hub = hub
        self.alias = alias
        self.flows = flows or load_flows(domain.name)
        self.rules = self.flows.guardrails
        self.now = getattr(domain, "now", None)  # the domain's clock (None: today)
        self.extractor = RuleExtractor(self.flows, now=self.now)
        self.use_model = use_model and hub is not None and bool(alias)
        self.tenant = tenant
        self._knowledge = knowledge
        self.max_flow_runs = max_flow_runs
        self._trained_prompt: bool | None = None
        # Who decides the command (rules | model): given, else the alias's guided_lead, else rules.
        self.lead = lead or (alias_option(hub, alias, "guided_lead") if self.use_model else None) or "rules"

    # -- commands

    def trained_prompt(self) -> bool:
        """Whether the alias was trained on the compact ``concierge-command-v1`` prompt (its provenance).

        An in-house adapter scores far better on the prompt it was trained on than on this
        module's longer one, so inference must use the same prompt. Looked up once per agent.
        """
        if self._trained_prompt is None:
            try:
                spec = self.hub.spec(self.alias)
                prompt = (getattr(spec, "provenance", None) or {}).get("prompt")
            except Exception:  # noqa: BLE001 - a hub without specs (or an unknown alias): the default prompt
                prompt = None
            self._trained_prompt = prompt == PROMPT_VERSION
        return self._trained_prompt

    def command_request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat request that asks the model for a command: the training prompt if the alias has one."""
        convo = [m for m in messages if m.get("role") in ("user", "assistant") and m.get("content")][-6:]
        if self.trained_prompt():
            transcript = [{"role": str(m["role"]), "content": str(m["content"])} for m in convo]
            return command_request(self.flows, transcript, max_tokens=200)
        return described_command_request(self.flows, convo, max_tokens=200)

    def model_command(self, messages: list[dict[str, Any]], usage: dict[str, float]) -> Command | None:
        """The model's ``{intent, slots}`` for the latest message (None if it gave nothing usable)."""
        request = self.command_request(messages)
        started = time.perf_counter()
        try:
            response = self.hub.chat(self.alias, request, tenant=self.tenant)
        except Exception as exc:  # noqa: BLE001 - the rules still work if the model fails
            usage["model_errors"] = usage.get("model_errors", 0) + 1
            usage["last_model_error"] = str(exc)[:200]  # type: ignore[assignment]
            return None
        add_usage(usage, response, time.perf_counter() - started)
        content = ((response.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            match = re.search(r"\{.*\}", content, re.S)
            try:
                data = json.loads(match.group(0)) if match else None
            except json.JSONDecodeError:
                data = None
        if not isinstance(data, dict):
            return None
        last = str(messages[-1].get("content") or "")
        intent = data.get("intent")
        slots = data.get("slots") if isinstance(data.get("slots"), dict) else {}
        valid = {}
        for k, v in slots.items():
            normalised = model_slot_value(self.flows.slots[k], v, last) if k in self.flows.slots else None
            if normalised is not None:
                valid[k] = normalised
        intents = [(intent, last)] if intent in self.flows.intents else []
        return Command(intents, valid, "model")

    def command(
        self, messages: list[dict[str, Any]], usage: dict[str, float], *, answering: bool = False,
        rules: Command | None = None,
    ) -> Command:
        """Rules and model merged as ``self.lead`` says (:mod:`.lead`): by default rule values win
        (they are exact) and the model fills gaps; with ``lead="model"`` the model decides.
        ``rules``: the rules' command for the last message, when the caller already has it."""
        text = str(messages[-1].get("content") or "")
        rules = rules if rules is not None else self.extractor.command(text)
        model = self.model_command(messages, usage) if self.use_model else None
        cmd = choose_command(rules, model, lead=self.lead, answering=answering)
        ruled = {i for i, _ in rules.intents}
        # A change the model alone read into the message starts only if the customer asked for a change.
        cmd.intents = [
            (i, t) for i, t in cmd.intents if i in ruled or not self._writes_in(i) or asks_for_change(t or text)
        ]
        return cmd

    # -- turns

    def respond(self, state: dict[str, Any], user_text: str) -> TurnResult:
        messages: list[dict[str, Any]] = state.setdefault("messages", [])
        guard = Guard(self.domain, self.rules, state.setdefault("guard", {}))
        flow_state: dict[str, Any] = state.setdefault("flow", {"active": None, "queue": [], "slots": {}})
        messages.append({"role": "user", "content": user_text})
        flow_state["at"] = sum(1 for m in messages if m.get("role") == "user") - 1
        result = TurnResult("")
        pending = flow_state.get("active") or {}
        rules = self.extractor.command(user_text)
        cmd = self.command(messages, result.usage, answering=bool(pending.get("awaiting")), rules=rules)
        state.setdefault("commands", []).append(cmd.to_dict())
        uncovered = self.extractor.uncovered(user_text) if self.rules.complete_requests else []
        ruled = {i for i, _ in rules.intents}
        if len([i for i, _ in cmd.intents if i not in ruled]) >= len(uncovered):
            uncovered = []  # the model recognised what the rules did not: those sentences are its requests
        for sentence in uncovered:
            # A change asked for that no flow recognises: the other changes wait for a person too.
            flow_state.setdefault("unable", []).append({"intent": None, "label": f'"{sentence}"', "at": flow_state["at"]})
        if self.lead == "model" and self.rules.complete_requests:
            # The model decides, but a change the rules read in this message that the model's command
            # leaves out would be carried out by nobody: it holds the others back (all or nothing).
            for intent in self._left_out(rules, cmd, flow_state):
                label = str(self.flows.intents[intent].get("description") or intent)
                flow_state.setdefault("unable", []).append({"intent": intent, "label": label, "at": flow_state["at"]})
        replies: list[str] = []
        try:
            self._dispatch(flow_state, cmd, user_text, guard, messages, result, replies)
        except _Handoff:
            result.status = "handoff"
            result.handoff = guard.state.get("handoff")
            flow_state["active"] = None
            flow_state["queue"] = []
        text = "\n".join(r for r in replies if r).strip() or self.flows.message("not_understood")
        text = bound_reply(text, 4000).text  # model-written answers (knowledge) too: bounded, loops cut
        messages.append({"role": "assistant", "content": text})
        result.message = text
        if result.status != "open":
            state["status"] = result.status
        return result

    def _dispatch(
        self,
        fs: dict[str, Any],
        cmd: Command,
        user_text: str,
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        keep = {k: v for k, v in cmd.slots.items() if self.flows.slots[k].get("keep")}
        fs["slots"].update(keep)
        active = fs.get("active")
        new_intents = [(i, t) for i, t in cmd.intents if not active or i != active["intent"]]
        offered = fs.pop("offered_handoff", False)
        if offered and not active and not new_intents and is_affirmative(user_text, _last_agent(messages)):
            # "If you like, I can transfer you to a human agent." - "Yes, please."
            self._handoff(self._case_summary(fs, user_text), guard, messages, result, replies)
        commit: list[dict[str, Any]] = []
        if fs.get("plan_wait") and not active:
            # The answer to one confirmation that lists every change of the plan.
            fs["plan_wait"] = False
            plan = fs.pop("plan", [])
            if not new_intents and is_affirmative(user_text, _last_agent(messages)):
                commit = plan
            elif is_negative(user_text) and not new_intents:
                replies.append(self.flows.message("declined"))
                return
            else:
                # Not a yes (a question, a correction, another request): work the plan out again.
                for item in plan:
                    item.update(step=0, awaiting=None)
                    item["text"] = f"{item['text']}\n{user_text}"
                fs["queue"] = [{"resume": item} for item in plan] + fs.get("queue", [])
        if active:
            active["text"] = f"{active['text']}\n{user_text}"
            waiting = active.get("awaiting")
            if waiting == "decide":
                # The customer's choice on a conditional request: only they pick the branch.
                choice = _read_choice(user_text)
                if choice == "go":
                    active["decision"], active["awaiting"] = "go", None
                else:
                    replies.append(
                        self.flows.message("declined")
                        if choice == "nothing"
                        else "I will not choose for you, so I have not changed anything for this request. "
                        "If you like, I can transfer you to a human agent."
                    )
                    if choice == "other":
                        fs["queue"] = [
                            {"intent": i, "text": t, "slots": self.extractor.slots(t)}
                            for i, t in active.get("alternatives") or []
                        ] + fs.get("queue", [])
                    fs["active"] = None
                    active = None
            elif waiting == "ground":
                # The answer to a grounding question (or a decision on a conditional request): work it out again.
                if is_negative(user_text):
                    replies.append(self.flows.message("declined"))
                    fs["active"] = None
                    active = None
                else:
                    active["step"], active["awaiting"] = 0, None
            elif waiting == "confirm":
                if is_affirmative(user_text, _last_agent(messages)):
                    active["step"] += 1
                    active["awaiting"] = None
                elif new_intents and not is_negative(user_text) and self.rules.complete_requests:
                    # Another request while a change waits for its yes: they are confirmed together.
                    active["awaiting"] = None
                    fs.setdefault("plan", []).append(active)
                    fs["active"] = None
                    active = None
                elif is_negative(user_text) or new_intents:
                    replies.append(self.flows.message("declined"))
                    fs["active"] = None
                    active = None
                else:
                    # Anything else (a correction, a question): take its details and work it out again.
                    active["step"], active["awaiting"] = 0, None
            if active is not None:
                # A new request that does not answer the pending question replaces the current one.
                if new_intents and waiting in ("slot", "identify") and not self._answers(active, cmd):
                    fs["active"] = None
                    active = None
                else:
                    self._absorb(active, cmd.slots)
        if (
            not new_intents
            and fs.get("active") is None
            and keep
            and guard.user_id is None
            and "identify" in self.flows.intents
        ):
            # Identity details alone ("I'm Jo Doe, 12345"): identify now and ask what they need.
            new_intents = [("identify", user_text)]
        alternatives: list[str] = []
        if len(new_intents) > 1 and is_conditional(user_text):
            # "If X is not available, cancel it instead": the branches are the customer's to choose.
            plain = [(i, t) for i, t in new_intents if not is_conditional(t)] or new_intents[:1]
            alternatives = [[i, t] for i, t in new_intents if (i, t) not in plain]
            new_intents = plain
        if new_intents:
            queued = [{"intent": i, "text": t, "slots": {}} for i, t in new_intents]
            if fs.get("active") is None:
                first = queued.pop(0)
                fs["active"] = self._start(first["intent"], first["text"], first["slots"])
                self._absorb(fs["active"], self.extractor.slots(first["text"]))
                for k, v in cmd.slots.items():
                    # Model-only slots have no segment to come from; they belong to the first intent.
                    if k not in fs["active"]["slots"] and k not in self.extractor.slots(user_text):
                        fs["active"]["slots"][k] = v
                for q in queued:
                    q["slots"] = self.extractor.slots(q["text"])
                if alternatives:
                    fs["active"]["alternatives"] = alternatives
            fs["queue"] = queued + fs.get("queue", [])
        if commit:
            self._commit(fs, commit, guard, messages, result, replies)
            return
        if fs.get("active") is None and not fs.get("queue"):
            if not replies:
                replies.append(self.flows.message("not_understood"))
            return
        runs = 0
        finished: dict[str, Any] | None = None
        while runs < self.max_flow_runs:
            runs += 1
            if fs.get("active") is None:
                if not fs.get("queue"):
                    if fs.get("plan"):
                        self._propose_plan(fs, guard, messages, replies)
                        return
                    if not fs.get("offered_handoff"):
                        replies.append(self.flows.message("anything_else"))
                    return
                nxt = fs["queue"].pop(0)
                if nxt.get("resume"):
                    fs["active"] = nxt["resume"]
                else:
                    slots = {k: v for k, v in (nxt.get("slots") or {}).items() if v not in (None, "", [])}
                    if nxt.get("batch") and finished is not None and finished["intent"] == nxt["intent"]:
                        # "Cancel all of them": what the customer answered for one applies to the next.
                        slots = {**finished["slots"], **slots}
                    fs["active"] = self._start(nxt["intent"], nxt["text"], slots)
            try:
                self._run(fs, fs["active"], guard, messages, result, replies)
            except _Pause:
                return
            except _Planned:
                pass
            except _EndFlow:
                self._note_unable(fs, fs["active"])
            finished = fs["active"]
            fs["active"] = None

    # -- plans: several changes in one conversation happen together or not at all

    def _left_out(self, rules: Command, cmd: Command, fs: dict[str, Any]) -> list[str]:
        """Change requests the rules read in the message that neither the command nor the conversation's
        open requests (the active one, the queue, the plan) carry."""
        open_ = {i for i, _ in cmd.intents}
        for item in [fs.get("active") or {}, *(fs.get("queue") or []), *(fs.get("plan") or [])]:
            open_.add((item.get("resume") or item).get("intent"))
        return [i for i, _ in rules.intents if i not in open_ and self._writes_in(i)]

    def _writes_in(self, intent: str | None) -> bool:
        steps = (self.flows.intents.get(intent or "") or {}).get("steps") or []
        return any("call" in s and tool_kind(self.domain, s["call"]) == "write" for s in steps)

    def _batching(self, fs: dict[str, Any], active: dict[str, Any]) -> bool:
        """Whether the change about to be confirmed must wait for the other pending requests."""
        if fs.get("committing"):
            return False
        if fs.get("plan"):
            return True
        return any(
            self._writes_in((q.get("resume") or q).get("intent")) for q in fs.get("queue") or []
        )

    def _note_unable(self, fs: dict[str, Any], active: dict[str, Any] | None) -> None:
        """Remember a change request the agent could not carry out: the others then wait for a person."""
        if active and active.get("outcome") == "unable" and self._writes_in(active.get("intent")):
            label = str(self.flows.intents[active["intent"]].get("description") or active["intent"])
            fs.setdefault("unable", []).append({"intent": active["intent"], "label": label, "at": fs.get("at", 0)})

    def _retried(self, fs: dict[str, Any], active: dict[str, Any]) -> None:
        """A request that failed earlier and is now worked out (asked again in a later message) no longer
        holds the others back; a failure in the same message still does."""
        for entry in list(fs.get("unable") or []):
            if entry["intent"] == active["intent"] and entry["at"] < fs.get("at", 0):
                fs["unable"].remove(entry)
                break

    def _refuse_partial(self, fs: dict[str, Any], ready: list[dict[str, Any]], replies: list[str]) -> None:
        """Some of the customer's change requests could not be worked out: do none of them (a half-done
        set of changes is worse than none), say what could and could not be done, and offer a person."""
        could = "; ".join(
            _change_text(str(item.get("proposal") or ""))
            for item in ready
            if item.get("proposal")
        )
        unable = "; ".join(dict.fromkeys(e["label"] for e in fs.get("unable") or []))
        text = (
            f"I could not work out everything you asked for ({unable}), and I would rather not do only part "
            "of it, so I have not changed anything."
        )
        if could:
            text += f" What I could do: {could}."
        text += " If you like, I can transfer you to a human agent who can handle all of it."
        replies.append(text)
        fs["plan"] = []
        fs["offered_handoff"] = True

    def _propose_plan(
        self, fs: dict[str, Any], guard: Guard, messages: list[dict[str, Any]], replies: list[str]
    ) -> None:
        """Every pending request is worked out: ask for one yes to the whole list of changes."""
        plan = fs.get("plan") or []
        if fs.get("unable"):
            self._refuse_partial(fs, plan, replies)
            return
        if len(plan) == 1:
            # One change after all (the others were refused or answered): its own confirmation.
            item = fs["plan"].pop()
            item["awaiting"] = "confirm"
            fs["active"] = item
            replies.append(self._invite(str(item["proposal"])))
            return
        lines = []
        for n, item in enumerate(plan, 1):
            what = _change_text(str(item["proposal"]), notes=True)
            lines.append(f"{n}. {what}")
        replies.append(
            f"To confirm, I will make these {len(plan)} changes together:\n"
            + "\n".join(lines)
            + "\n"
            + self._invite(f"Shall I proceed with {'both' if len(plan) == 2 else f'all {len(plan)}'} (yes/no)?")
        )
        fs["plan_wait"] = True
        guard.expect_plan([w for item in plan for w in item.get("writes") or []], current_turn(messages))

    def _commit(
        self,
        fs: dict[str, Any],
        plan: list[dict[str, Any]],
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        """The customer said yes to the whole plan: make its changes, those that must come last last.

        All or nothing: if one write fails (a gift card without the balance, a record changed since)
        the changes already made in this plan are undone where the domain can (its own database) and
        the customer is told nothing was changed."""
        order = sorted(
            range(len(plan)), key=lambda i: (bool(self.flows.intents[plan[i]["intent"]].get("commit_last")), i)
        )
        undoable = callable(getattr(self.domain, "restore", None)) and getattr(self.domain, "undoable", True)
        before = self.domain.snapshot() if undoable else None
        first_action = len(result.actions)
        said: list[str] = []
        failed: str | None = None
        fs["committing"] = True
        try:
            for i in order:
                item = plan[i]
                item.update(step=int(item["step"]) + 1, awaiting=None)
                fs["active"] = item
                try:
                    self._run(fs, item, guard, messages, result, said)
                except (_Pause, _Planned):
                    break
                except _EndFlow:
                    pass
                fs["active"] = None
                replaying = bool(guard.state.get("replaying"))
                bad = [
                    a
                    for a in result.actions[first_action:]
                    if a.get("kind") == "write" and not a.get("ok") and not (replaying and a.get("refused"))
                ]
                if bad:
                    failed = str(bad[0].get("error") or "the change was refused")
                    break
        finally:
            fs["committing"] = False
            fs["active"] = None
        if failed is None:
            replies.extend(said)
            replies.append(self.flows.message("anything_else"))
            return
        done = [a for a in result.actions[first_action:] if a.get("kind") == "write" and a.get("ok")]
        if done and before is not None:
            self.domain.restore(before)
            for a in done:
                a["rolled_back"] = True
            replies.append(
                f"I could not complete one of the changes ({failed}), so I have undone the others: "
                "nothing has been changed. If you like, I can transfer you to a human agent."
            )
        elif done:
            replies.extend(said)
            replies.append(
                f"I could not complete one of the changes ({failed}); the others above were made. "
                "If you like, I can transfer you to a human agent."
            )
        else:
            replies.append(
                f"I could not complete the changes ({failed}), so nothing has been changed. "
                "If you like, I can transfer you to a human agent."
            )
        fs["offered_handoff"] = True

    def _invite(self, proposal: str) -> str:
        """A proposal that also asks for the rest: what the customer still wants changed is done together
        with it (a plan), not after it (half a set of changes if the rest then fails)."""
        if not self.rules.complete_requests or "Shall I proceed" not in proposal:
            return proposal
        return proposal.replace(
            "Shall I proceed",
            "Is there anything else you want changed? Tell me now and I will do it all together; "
            "otherwise, shall I proceed",
            1,
        )

    def _case_summary(self, fs: dict[str, Any], user_text: str) -> str:
        unable = "; ".join(dict.fromkeys(e["label"] for e in fs.get("unable") or []))
        return f"Customer asked for a human agent after the assistant could not complete: {unable or user_text}"

    def _answers(self, active: dict[str, Any], cmd: Command) -> bool:
        slot = active.get("slot")
        if active.get("awaiting") == "identify":
            return any(self.flows.slots[k].get("keep") for k in cmd.slots)
        return bool(slot and slot in cmd.slots)

    def _start(self, intent: str, text: str, slots: dict[str, Any]) -> dict[str, Any]:
        return {
            "intent": intent,
            "text": text,
            "step": 0,
            "slots": dict(slots),
            "vars": {},
            "awaiting": None,
            "slot": None,
            "asked": {},
        }

    def _absorb(self, active: dict[str, Any], slots: dict[str, Any]) -> None:
        for k, v in slots.items():
            if self.flows.slots.get(k, {}).get("keep"):
                continue
            if active.get("awaiting") == "slot" and active.get("slot") == k:
                active["slots"][k] = v  # the answer to the question just asked overrides
            else:
                active["slots"].setdefault(k, v)

    # -- running a flow

    def _variables(
        self, fs: dict[str, Any], active: dict[str, Any], guard: Guard, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        variables: dict[str, Any] = {name: None for name in self.flows.slots}
        variables.update(fs.get("slots") or {})
        variables.update(fs.get("vars") or {})
        variables.update(active["slots"])
        variables.update(active["vars"])
        if guard.user_id is not None or "user_id" not in variables:
            # The identified customer; before that, a `user_id` slot keeps what the customer claimed.
            variables["user_id"] = guard.user_id
        variables["text"] = active["text"]
        variables["last"] = str(messages[-1].get("content") or "") if messages else ""
        variables["intent"] = active["intent"]
        variables["now"] = _now_text(self.now)
        return variables

    def _run(
        self,
        fs: dict[str, Any],
        active: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        spec = self.flows.intents[active["intent"]]
        if spec.get("identify", True) and self.rules.require_identity and guard.user_id is None:
            self._identify(fs, active, guard, messages, result, replies)
        for slot in spec.get("slots") or []:
            if active["slots"].get(slot) in (None, "", []) and not (fs.get("slots") or {}).get(slot):
                self._ask(
                    active,
                    slot,
                    self.flows.slots[slot].get("ask") or f"Could you tell me the {slot}?",
                    fs,
                    guard,
                    messages,
                    replies,
                )
        steps = spec.get("steps") or []
        restarts = 0
        while active["step"] < len(steps):
            step = steps[active["step"]]
            try:
                self._step(step, fs, active, guard, messages, result, replies)
            except _Restart:
                restarts += 1
                if restarts > 5:
                    raise _EndFlow from None
                active["step"] = 0
                continue
            active["step"] += 1

    def _identify(
        self,
        fs: dict[str, Any],
        active: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        ident = self.flows.identify
        pool = fs["slots"]
        complete = [alt for alt in ident.get("slots_any") or [] if all(pool.get(s) for s in alt)]
        if not complete:
            active["awaiting"] = "identify"
            replies.append(render_text(ident.get("ask", "Please identify yourself."), {**pool}))
            raise _Pause
        scratch = {"step": 0, "vars": {}, "slots": {}, "text": active["text"], "intent": "identify"}
        for step in ident.get("steps") or []:
            try:
                self._step(step, fs, scratch, guard, messages, result, replies)
            except _EndFlow:
                break
        if guard.user_id is None:
            # Forget what failed so the customer can try again with other details.
            for alt in complete:
                for s in alt:
                    pool.pop(s, None)
            active["awaiting"] = "identify"
            replies.append(
                render_text(
                    ident.get("fail", "I could not find your account. Please check the details."),
                    {**pool, "error": scratch["vars"].get("error", "")},
                )
            )
            raise _Pause
        fs.setdefault("vars", {}).update(scratch["vars"])
        if active.get("awaiting") == "identify":
            active["awaiting"] = None
        if ident.get("success"):
            replies.append(render_text(ident["success"], self._variables(fs, active, guard, messages)))

    def _ask(
        self,
        active: dict[str, Any],
        slot: str,
        prompt: str,
        fs: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        replies: list[str],
    ) -> None:
        asked = active.setdefault("asked", {})
        if active.get("awaiting") == "slot" and active.get("slot") == slot:
            spec = self.flows.slots.get(slot, {})
            if spec.get("free_text"):
                active["slots"][slot] = str(messages[-1].get("content") or "").strip()
                active["awaiting"] = None
                return
        asked[slot] = asked.get(slot, 0) + 1
        if asked[slot] > 3:
            replies.append(
                f"I still do not have the {slot.replace('_', ' ')}, so I cannot continue with this request."
            )
            _unable(active)
            raise _EndFlow
        active["awaiting"], active["slot"] = "slot", slot
        replies.append(render_text(prompt, self._variables(fs, active, guard, messages)))
        raise _Pause

    def _step(
        self,
        step: dict[str, Any],
        fs: dict[str, Any],
        active: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        variables = self._variables(fs, active, guard, messages)
        try:
            if "when" in step and not evaluate(str(step["when"]), variables):
                return
            if "call" in step:
                self._call_step(step, variables, active, guard, messages, result, replies)
            elif "set" in step:
                value = (
                    evaluate(str(step["value"]), variables)
                    if "value" in step
                    else render(step["template"], variables)
                )
                active["vars"][step["set"]] = None if value is MISSING else value
            elif "check" in step:
                if not evaluate(str(step["check"]), variables):
                    replies.append(render_text(step.get("fail", "I'm sorry, I cannot do that."), variables))
                    active["outcome"] = "refused"  # the policy says no: not a failure of the agent
                    raise _EndFlow
            elif "ask" in step:
                slot = step["ask"]
                # A value set by an earlier step counts too (vars override slots in expressions).
                empty = variables.get(slot) in (None, "", []) or variables.get(slot) is MISSING
                answered = active.get("awaiting") == "slot" and active.get("slot") == slot
                if answered and not empty:
                    active["awaiting"] = None
                    if step.get("restart"):
                        raise _Restart
                elif empty or step.get("when"):
                    # With a `when`, a value already there did not work (e.g. no such order): ask again.
                    active["slots"].pop(slot, None)
                    self._ask(
                        active,
                        slot,
                        step.get("prompt") or self.flows.slots.get(slot, {}).get("ask", slot),
                        fs,
                        guard,
                        messages,
                        replies,
                    )
                    active["awaiting"] = None  # a free-text answer was taken as it is
                    if step.get("restart"):
                        raise _Restart
            elif "confirm" in step:
                # Reached only before a yes: the dispatcher moves past this step when the customer agrees.
                self._check_grounded(fs, active, guard, messages, replies)
                proposal = render_text(step["confirm"], variables)
                customer = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
                condition = conditional_clause(active["text"]) or conditional_clause(customer)
                if (condition or active.get("alternatives")) and active.get("decision") != "go":
                    # A conditional request: give the facts, and let the customer choose the branch.
                    active["awaiting"] = "decide"
                    facts = _change_text(proposal)
                    said = "; ".join([c for c in [condition] if c] + [t for _, t in active.get("alternatives") or []])
                    options = ["go ahead with this", *(["do the other thing instead"] if active.get("alternatives") else []), "change nothing"]
                    replies.append(
                        f"You made this depend on something (\"{said}\"), so the choice is yours, not mine. "
                        f"Here is what I found: {facts} What would you like: "
                        + ", ".join(f"'{o}'" for o in options[:-1])
                        + f" or '{options[-1]}'?"
                    )
                    raise _Pause
                self._retried(fs, active)
                left = unaddressed(active["text"], proposal, Evidence.from_messages(messages))
                if left and self.rules.complete_requests:
                    fs.setdefault("unable", []).append(
                        {"intent": None, "label": "what to do with the " + ", ".join(left), "at": fs.get("at", 0)}
                    )
                if fs.get("unable") and not fs.get("committing"):
                    self._refuse_partial(fs, [active], replies)
                    raise _EndFlow
                active["proposal"] = proposal
                active["writes"] = [n for n, _ in self._upcoming_writes(fs, active, guard, messages)]
                if self._batching(fs, active):
                    # Other requests are pending: nothing is changed until every one of them is ready.
                    fs.setdefault("plan", []).append(active)
                    raise _Planned
                active["awaiting"] = "confirm"
                replies.append(self._invite(proposal))
                raise _Pause
            elif "reply" in step:
                replies.append(render_text(step["reply"], variables))
            elif "answer" in step:
                kb = self.knowledge()
                question = render_text(step["answer"], variables)
                if kb is None:
                    replies.append("I have no documentation to answer that from.")
                else:
                    ans = kb.answer(str(question), hub=self.hub if self.use_model else None, alias=self.alias)
                    replies.append(ans.text)
                    result.actions.append(
                        {
                            "tool": "knowledge",
                            "arguments": {"question": question},
                            "kind": "read",
                            "ok": True,
                            "refused": False,
                            "result": {"citations": ans.citations},
                        }
                    )
            elif "enqueue" in step:
                items = evaluate(str(step["foreach"]), variables) if "foreach" in step else [None]
                entries = []
                for it in items or []:
                    slots = render(step.get("slots") or {}, {**variables, "it": it})
                    entries.append(
                        {"intent": step["enqueue"], "text": active["text"], "slots": slots, "batch": True}
                    )
                fs["queue"] = entries + fs.get("queue", [])
            elif "handoff" in step:
                summary = render_text(step["handoff"], variables)
                self._handoff(str(summary), guard, messages, result, replies)
            elif "end" in step:
                if step.get("reply"):
                    replies.append(render_text(step["reply"], variables))
                raise _EndFlow
            else:
                raise ExprError(f"unknown step {step}")
        except ExprError as exc:
            # A broken flow file must not crash a conversation: say so and hand the case to a person.
            replies.append("Sorry, something went wrong on my side with this request.")
            _unable(active)
            result.actions.append(
                {
                    "tool": "flow",
                    "ok": False,
                    "refused": False,
                    "error": str(exc),
                    "arguments": {"intent": active.get("intent"), "step": active.get("step")},
                }
            )
            raise _EndFlow from exc
        if step.get("end") and "end" not in step:
            raise _EndFlow

    def _upcoming_writes(
        self, fs: dict[str, Any], active: dict[str, Any], guard: Guard, messages: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The write calls the flow makes after the confirmation it is about to ask (rendered arguments)."""
        steps = self.flows.intents[active["intent"]].get("steps") or []
        variables = self._variables(fs, active, guard, messages)
        writes = []
        for step in steps[active["step"] + 1 :]:
            if "confirm" in step:
                break
            if "call" not in step or tool_kind(self.domain, step["call"]) != "write" or "foreach" in step:
                continue
            try:
                if "when" in step and not evaluate(str(step["when"]), variables):
                    continue
                args = render(step.get("args") or {}, {**variables, "it": None})
            except ExprError:
                continue
            writes.append((step["call"], {k: v for k, v in args.items() if v is not None}))
        return writes

    def _check_grounded(
        self,
        fs: dict[str, Any],
        active: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        replies: list[str],
    ) -> None:
        """Before asking for a yes: every argument of the coming write must be grounded, else ask (once)
        and then say so and offer a person. Nothing is changed on an ungrounded argument."""
        evidence = Evidence.from_messages(messages)
        problems = [
            p
            for name, args in self._upcoming_writes(fs, active, guard, messages)
            for p in ungrounded(name, args, evidence, free=self.rules.grounding_free)
        ]
        if not problems:
            return
        asked = int(active.get("ground_asked", 0))
        hints = "; ".join(dict.fromkeys(p.hint for p in problems))
        if asked >= 1:
            replies.append(
                f"I'm sorry, I still cannot tell {hints} from what you said or your records, so I have not "
                "changed anything. If you like, I can transfer you to a human agent."
            )
            _unable(active)
            fs["offered_handoff"] = True
            raise _EndFlow
        active["ground_asked"] = asked + 1
        active["awaiting"] = "ground"
        replies.append(f"Before I change anything I need to be sure: could you tell me {hints}?")
        raise _Pause

    def _call_step(
        self,
        step: dict[str, Any],
        variables: dict[str, Any],
        active: dict[str, Any],
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        name = step["call"]
        items = evaluate(str(step["foreach"]), variables) if "foreach" in step else None
        turn = current_turn(messages)
        outputs = []
        for it in items if items is not None else [None]:
            scope = {**variables, "it": it}
            args = render(step.get("args") or {}, scope)
            args = {k: v for k, v in args.items() if v is not None or step.get("keep_null")}
            action = guard.call(name, args, turn)
            result.actions.append(action)
            messages.append({"role": "tool", "name": name, "content": result_text(action), "arguments": args})
            if action.get("ok") and name in self.rules.handoff_tools:
                replies.append(self.flows.message("handoff"))
                raise _Handoff
            if not action.get("ok"):
                if action.get("refused") and guard.state.get("replaying") and action.get("kind") == "write":
                    # A stateless client's earlier turn, run again: that change was made (or not) then.
                    active["outcome"] = "replayed"
                    raise _EndFlow
                active["vars"]["error"] = action.get("error")
                on_error = step.get("on_error", "reply")
                if on_error == "continue" or (items is not None and on_error == "skip"):
                    outputs.append(None)
                    continue
                template = step.get("fail") or self.flows.message("error")
                replies.append(render_text(template, {**scope, "error": action.get("error")}))
                _unable(active)
                raise _EndFlow
            outputs.append(action.get("result"))
        if step.get("save"):
            active["vars"][step["save"]] = outputs if items is not None else outputs[0]

    def _handoff(
        self,
        summary: str,
        guard: Guard,
        messages: list[dict[str, Any]],
        result: TurnResult,
        replies: list[str],
    ) -> None:
        tool = self.rules.handoff_tools[0] if self.rules.handoff_tools else None
        if tool and tool in getattr(self.domain, "tools", {}):
            action = guard.call(tool, {"summary": summary}, current_turn(messages))
            result.actions.append(action)
            messages.append({"role": "tool", "name": tool, "content": result_text(action)})
        else:
            guard.state["handoff"] = {"tool": None, "summary": summary, "user_id": guard.user_id}
        replies.append(self.flows.message("handoff"))
        raise _Handoff

    def knowledge(self) -> Any:
        """Retrieval over the domain's policy (built on first use) unless one was injected."""
        if self._knowledge is None and getattr(self.domain, "policy", ""):
            self._knowledge = _policy_knowledge(f"{self.domain.name}-policy", self.domain.policy)
        return self._knowledge


@functools.lru_cache(maxsize=32)
def _policy_knowledge(name: str, policy: str) -> Any:
    """The policy's sections indexed once per text (an agent is built per turn; a policy question
    rebuilt the index each time, 6 % of a support turn's CPU). Searching it only reads."""
    from concierge.support.knowledge import KnowledgeBase

    return KnowledgeBase.from_markdown(name, policy)
