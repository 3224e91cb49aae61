"""Who decides guided mode's command: the rules (default) or the model.

``rules`` (today's mode): the rules' intents stand; the model's intent is used only where the rules
found none, and its slots fill only slots the rules left empty (rule values are exact matches in
the text).

``model``: the model's command decides, its intents and its slots; the rules are the fallback for
output that is invalid (no JSON, an intent or slot the flows do not know: the model call returns
nothing usable) or empty (no intent and no slot), and their slot values fill only the slots the
model left out. This is how a company's own domain runs before anyone writes rules for it.

In both, while the customer is answering a question (a slot, a confirmation) the model may fill
slots but not start a new request: a weak model reads "yes" as anything, and a new request would
drop the pending one.
"""

from __future__ import annotations

from concierge.support.guided.command import Command

LEADS = ("rules", "model")


def choose_command(rules: Command, model: Command | None, *, lead: str = "rules", answering: bool = False) -> Command:
    """The command guided mode acts on, from the rules' and the model's (None: the model gave nothing)."""
    if lead not in LEADS:
        raise ValueError(f"guided lead must be one of {', '.join(LEADS)}, not {lead!r}")
    if model is None or not (model.intents or model.slots):
        return rules
    if lead == "model":
        intents = [] if answering else list(model.intents)
        slots = dict(model.slots)
        for name, value in rules.slots.items():
            slots.setdefault(name, value)
        return Command(intents, slots, "model" if slots.keys() <= model.slots.keys() else "model+rules")
    cmd = Command(list(rules.intents), dict(rules.slots), rules.source)
    if not cmd.intents and model.intents and not answering:
        cmd.intents = list(model.intents)
        cmd.source = "model"
    for name, value in model.slots.items():
        cmd.slots.setdefault(name, value)
    cmd.source = "rules+model" if cmd.source == "rules" else cmd.source
    return cmd
