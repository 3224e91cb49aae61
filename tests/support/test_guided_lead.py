"""Model-led guided mode: the model's command decides, the rules only where its output is invalid or
empty; rules-first stays the default. Chosen per alias (``guided_lead``) or per call (``lead=``, ``--lead``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concierge.support.domains import load_domain
from concierge.support.guided import Command, GuidedAgent
from concierge.support.guided.lead import choose_command
from helpers.hubs import ScriptedHub, card

EMAIL = "maya.okafor@example.com"
# The rules read a cancellation here; a model reading "what have I booked" reads reservation details.
ASK = f"Cancel HS10001 please, plans changed. {EMAIL}"
DETAILS = {"intent": "reservation_details", "slots": {"email": EMAIL}}


def _agent(reply: Any, lead: str | None = None, **card_fields: Any) -> tuple[GuidedAgent, ScriptedHub]:
    hub = ScriptedHub(default=reply if isinstance(reply, str) else json.dumps(reply), cards=[card("m", **card_fields)])
    return GuidedAgent(load_domain("homestay"), hub, "m", lead=lead), hub


def test_rules_lead_by_default_and_keep_their_intent() -> None:
    agent, _ = _agent(DETAILS)
    assert agent.lead == "rules"
    state: dict[str, Any] = {}
    out = agent.respond(state, ASK)
    assert state["commands"][-1]["intent"] == "cancel_reservation"
    assert "Shall I cancel it" in out.message


def test_model_led_runs_the_models_command() -> None:
    agent, _ = _agent(DETAILS, lead="model")
    state: dict[str, Any] = {}
    out = agent.respond(state, ASK)
    assert state["commands"][-1]["intent"] == "reservation_details"
    assert "HS10001" in out.message and "Shall I cancel it" not in out.message
    assert agent.domain.diff() == {}


@pytest.mark.parametrize("reply", ["not json {", {"intent": "none", "slots": {}}, {"intent": "fly", "slots": {}}])
def test_model_led_falls_back_to_the_rules_on_invalid_or_empty_output(reply: Any) -> None:
    agent, _ = _agent(reply, lead="model")
    state: dict[str, Any] = {}
    out = agent.respond(state, ASK)
    assert state["commands"][-1]["intent"] == "cancel_reservation" and "Shall I cancel it" in out.message


def test_the_alias_option_sets_the_lead_and_a_call_overrides_it() -> None:
    assert _agent(DETAILS, guided_lead="model")[0].lead == "model"
    assert _agent(DETAILS, lead="rules", guided_lead="model")[0].lead == "rules"
    no_model = GuidedAgent(load_domain("homestay"), None, None, lead=None)
    assert no_model.lead == "rules"


def test_model_led_while_answering_fills_slots_but_starts_nothing() -> None:
    rules = Command([], {"reservation_id": "HS10001"})
    model = Command([("change_dates", "yes")], {"reason": "change of plans"}, "model")
    cmd = choose_command(rules, model, lead="model", answering=True)
    assert cmd.intents == [] and cmd.slots == {"reason": "change of plans", "reservation_id": "HS10001"}
    cmd = choose_command(rules, model, lead="model", answering=False)
    assert cmd.intents == [("change_dates", "yes")]
    # The model's own slot value wins over the rules' in model-led mode, not in rules-first.
    model = Command([], {"reservation_id": "HS10002"}, "model")
    assert choose_command(rules, model, lead="model").slots["reservation_id"] == "HS10002"
    assert choose_command(rules, model, lead="rules").slots["reservation_id"] == "HS10001"
    with pytest.raises(ValueError, match="guided lead must be one of rules, model"):
        choose_command(rules, model, lead="llm")


def test_deployment_option_and_cli_flag(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from concierge.cli import app
    from concierge.models.deployment import DeploymentError, parse_deployment

    with pytest.raises(DeploymentError, match="guided_lead must be one of rules, model, got 'llm'"):
        parse_deployment({"models": {"a": {"gguf": str(tiny_gguf), "guided_lead": "llm"}}})
    config = tmp_path / "deploy.yaml"
    config.write_text(f"models:\n  tiny: {{gguf: {tiny_gguf}, n_parallel: 1, threads: 1, guided_lead: model}}\n")
    monkeypatch.setenv("CONCIERGE_CONFIG", str(config))
    runner = CliRunner()
    base = ["eval", "support", "--domain", "homestay", "--mode", "guided", "--limit", "1", "--max-turns", "2"]
    for flag, lead in (([], "model"), (["--lead", "rules"], "rules")):
        out = tmp_path / f"{lead}.json"
        result = runner.invoke(app, [*base, "--model", "tiny", *flag, "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["lead"] == lead and f"({lead}-led)" in result.output
    bad = runner.invoke(app, [*base, "--lead", "model"])
    assert bad.exit_code == 2 and "--lead model needs --model" in bad.output
    wrong = runner.invoke(app, [*base, "--model", "tiny", "--lead", "llm"])
    assert wrong.exit_code == 2 and "--lead must be rules or model" in wrong.output
