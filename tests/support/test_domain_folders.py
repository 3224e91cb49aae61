"""Domain folders beyond connectors: Python tools over a db.json, registration through a plugin hook,
the deployment config's ``support:`` section, and the ``concierge support domains`` commands."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from concierge import plugins
from concierge.cli import app
from concierge.models.deployment import DeploymentError, parse_deployment
from concierge.support.domains import flows_path, load_domain
from concierge.support.domains.external import (
    build_domain,
    folder_loader,
    parse_support_config,
)
from concierge.support.session import SupportSession
from helpers.services import DEMO_DOMAINS

FLOWS = """
domain: giftcards
guardrails:
  identify_tools: [find_customer]
  ownership: {card_id: {table: cards, field: owner}}
  handoff_tools: [transfer_to_human_agents]
identify:
  slots_any: [[email]]
  ask: "What is your email?"
  steps:
    - call: find_customer
      args: {email: "{email}"}
      on_error: continue
slots:
  email: {extract: email, keep: true}
  card_id: {pattern: '\\b(GC\\d+)\\b', upper: true, case_sensitive: false}
intents:
  block:
    description: "block a gift card"
    keywords: ['\\bblock\\b']
    steps:
      - ask: card_id
      - confirm: "Block card {card_id} (yes/no)?"
      - call: block_card
        args: {card_id: "{card_id}"}
      - reply: "Card {card_id} is blocked."
"""

TOOLS = '''
from concierge.support.toolkit import Db, ToolError, read, write


@read
def find_customer(db: Db, email: str) -> str:
    """Find a customer's id from their email.

    Args:
        email: The customer's email.
    """
    for key, customer in db["customers"].items():
        if customer["email"] == email.strip().lower():
            return key
    raise ToolError("Customer not found")


@write
def block_card(db: Db, card_id: str) -> dict:
    """Block a gift card. Get the customer's explicit yes first.

    Args:
        card_id: The card id, such as GC1.
    """
    card = db["cards"].get(card_id)
    if card is None:
        raise ToolError(f"Card {card_id} not found")
    card["blocked"] = True
    return card
'''


def giftcards(tmp_path: Path) -> Path:
    folder = tmp_path / "giftcards"
    folder.mkdir()
    (folder / "policy.md").write_text("Identify the customer; block only their own cards, after a yes.\n")
    (folder / "flows.yaml").write_text(FLOWS)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "db.json").write_text(json.dumps({
        "customers": {"ana_1": {"email": "ana@example.com"}, "bo_2": {"email": "bo@example.com"}},
        "cards": {"GC1": {"owner": "ana_1", "blocked": False}, "GC2": {"owner": "bo_2", "blocked": False}},
    }))
    (folder / "domain.yaml").write_text(textwrap.dedent("""
        name: giftcards
        python: tools.py
        db: db.json
        tools:
          - {name: find_customer, kind: read, python: true}
          - {name: block_card, kind: write, python: true}
          - {name: transfer_to_human_agents, builtin: true}
    """))
    return folder


def test_python_tools_over_a_db_json_with_the_guardrails_and_persisted_writes(
    tmp_path: Path, isolated_home: Path
) -> None:
    folder = giftcards(tmp_path)
    plugin = types.SimpleNamespace()
    plugin.register_domains = plugins.hookimpl(lambda register: register("giftcards", folder_loader(folder)))
    plugins.register_plugin(plugin, "acme-giftcards")  # as a package's entry point would
    try:
        assert flows_path("giftcards") == folder / "flows.yaml"
        assert load_domain("giftcards").is_write("block_card")
        session = SupportSession(None, default_mode="guided", use_model=False, default_domain="giftcards")
        first = session.turn("Please block gift card GC2, my email is ana@example.com", tenant="t")
        assert first.confirm  # the flow asks; the guard will check ownership at the write
        refused = session.turn("yes", conversation_id=first.conversation_id, tenant="t")
        assert any("belongs to another customer" in (a.get("error") or "") for a in refused.actions)
        confirm = session.turn("Please block GC1", conversation_id=first.conversation_id, tenant="t")
        assert confirm.confirm and "GC1" in confirm.message
        done = session.turn("yes", conversation_id=first.conversation_id, tenant="t")
        assert done.message.startswith("Card GC1 is blocked")
        # the write is in the tenant's copy, stored like a built-in domain's
        assert session.domain("giftcards", "t").db["cards"]["GC1"]["blocked"] is True
        assert session.domain("giftcards", "t").db["cards"]["GC2"]["blocked"] is False
    finally:
        plugins.unregister_plugin("acme-giftcards")


def test_a_python_tool_declared_with_the_wrong_kind_is_named(tmp_path: Path) -> None:
    folder = giftcards(tmp_path)
    path = folder / "domain.yaml"
    path.write_text(path.read_text().replace("{name: block_card, kind: write", "{name: block_card, kind: read"))
    with pytest.raises(ValueError, match=r"tools\[1\] \(block_card\)\.kind: block_card is declared read but its "
                                         r"function is marked @write"):
        build_domain(folder)


def test_the_deployment_config_carries_a_support_section(tmp_path: Path) -> None:
    data = {"models": {"chat": {"embedded": "smollm2"}},
            "support": {"domains": {"homestay-http": {"path": str(DEMO_DOMAINS / "homestay-http")}},
                        "tenants": {"acme": "homestay-http"}}}
    deployment = parse_deployment(data, path=tmp_path / "deployment.yaml")
    config = parse_support_config(deployment.support, deployment.base_dir)
    assert config.tenants == {"acme": "homestay-http"} and "homestay-http" in config.domains
    with pytest.raises(DeploymentError, match="'support' must be a mapping"):
        parse_deployment({**data, "support": ["homestay-http"]})
    with pytest.raises(ValueError, match=r"support.domains.wrong-name: .* names the domain 'homestay-http'"):
        parse_support_config({"domains": {"wrong-name": {"path": str(DEMO_DOMAINS / "homestay-http")}}})


def test_cli_check_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["support", "domains", "check", str(DEMO_DOMAINS / "homestay-http")])
    assert ok.exit_code == 0 and ok.output.strip().endswith(": ok")
    folder = giftcards(tmp_path)
    (folder / "domain.yaml").write_text((folder / "domain.yaml").read_text().replace("kind: write", "kind: wirte"))
    bad = runner.invoke(app, ["support", "domains", "check", str(folder)])
    assert bad.exit_code == 1
    assert "error: domain.yaml: tools[1] (block_card).kind: must be read or write, got 'wirte'" in bad.output
    assert "Traceback" not in bad.output
    config = tmp_path / "deployment.yaml"
    config.write_text(json.dumps({"models": {"chat": {"embedded": "smollm2"}},
                                  "support": {"domains": {"homestay-mcp": {"path": str(DEMO_DOMAINS / "homestay-mcp")}},
                                              "tenants": {"acme": "homestay-mcp"}}}))
    listed = runner.invoke(app, ["support", "domains", "list", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in map(json.loads, listed.output.splitlines())}
    assert rows["homestay-mcp"]["tenants"] == ["acme"] and rows["homestay-mcp"]["source"].startswith("folder ")
    assert rows["homestay"]["source"] == "package"
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps({"models": {"chat": {"embedded": "smollm2"}}, "support": {"tenants": {"a": "nope"}}}))
    refused = runner.invoke(app, ["support", "domains", "list", "--config", str(broken)])
    assert refused.exit_code == 2 and "support.tenants.a: unknown domain 'nope'" in refused.output
