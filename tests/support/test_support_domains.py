"""Support domains without the shared data: the homestay demo, tool typing, validation, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from typer.testing import CliRunner

from concierge.support.domains import load_domain
from concierge.support.domains.homestay import TASKS_PATH, generate
from concierge.support.replay import compare_with_gold, replay_gold
from concierge.support.tasks import load_tasks
from concierge.support.toolkit import (
    DbSource,
    Domain,
    ToolError,
    calculate,
    canonical_json,
    parse_docstring,
    read,
    sha256_text,
    write,
)


@pytest.fixture
def homestay() -> Domain:
    return load_domain("homestay")


def unchanged(domain: Domain, before_hash: str) -> bool:
    return domain.diff() == {} and domain.db_hash() == before_hash


# --------------------------------------------------------------------------- homestay policy


@pytest.mark.parametrize(
    ("reservation", "tier", "days", "refund"),
    [
        ("HS10001", "flexible", 10, 395.0),  # full
        ("HS10002", "moderate", 3, 340.0),  # 50% of 4 x 150 + 40 cleaning
        ("HS10003", "strict", 4, 60.0),  # cleaning fee only
        ("HS10004", "strict", 10, 230.0),  # 50% of 2 x 180 + 50 cleaning
        ("HS10012", "flexible", 20, 590.0),
    ],
)
def test_cancellation_tiers(homestay: Domain, reservation: str, tier: str, days: int, refund: float) -> None:
    quote = homestay.call("quote_cancellation", {"reservation_id": reservation})
    assert (quote["cancellation_policy"], quote["days_before_check_in"], quote["refund"]) == (
        tier,
        days,
        refund,
    )
    total = homestay.db["reservations"][reservation]["total"]
    assert quote["not_refunded"] == round(total - refund, 2)
    cancelled = homestay.call(
        "cancel_reservation", {"reservation_id": reservation, "reason": "change of plans"}
    )
    assert cancelled["status"] == "cancelled" and cancelled["refund_amount"] == refund
    assert cancelled["payment_history"][-1] == {
        "type": "refund",
        "amount": refund,
        "payment_method_id": quote["refund_to"],
    }


def test_wallet_refund_is_credited_at_once(homestay: Domain) -> None:
    homestay.call("cancel_reservation", {"reservation_id": "HS10004", "reason": "travel restrictions"})
    diff = homestay.diff()
    assert set(diff) == {"guests", "reservations"}
    assert diff["guests"]["daniel_reyes_4478"]["payment_methods"]["wallet_4478"]["balance"] == 15.5 + 230.0


def test_date_change_charges_difference(homestay: Domain) -> None:
    args = {"reservation_id": "HS10005", "check_in": "2025-06-20", "check_out": "2025-06-25"}
    before = homestay.db_hash()
    with pytest.raises(ToolError, match="Wallet balance 50.00 does not cover the difference of 190.00"):
        homestay.call("modify_reservation_dates", {**args, "payment_method_id": "wallet_5120"})
    assert unchanged(homestay, before)
    result = homestay.call("modify_reservation_dates", {**args, "payment_method_id": "credit_card_5120"})
    assert (result["nights"], result["total"]) == (5, 505.0)
    assert result["payment_history"][-1] == {
        "type": "payment",
        "amount": 190.0,
        "payment_method_id": "credit_card_5120",
    }


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("cancel_reservation", {"reservation_id": "HS10010", "reason": "change of plans"}, "has started"),
        ("cancel_reservation", {"reservation_id": "HS10011", "reason": "change of plans"}, "is completed"),
        (
            "modify_reservation_dates",
            {
                "reservation_id": "HS10006",
                "check_in": "2025-06-11",
                "check_out": "2025-06-14",
                "payment_method_id": "credit_card_6034",
            },
            "only 5\\+ days before check-in under the moderate policy",
        ),
        (
            "modify_reservation_dates",
            {
                "reservation_id": "HS10007",
                "check_in": "2025-06-21",
                "check_out": "2025-06-23",
                "payment_method_id": "credit_card_7215",
            },
            "not free",
        ),
        (
            "modify_reservation_dates",
            {
                "reservation_id": "HS10007",
                "check_in": "2025-06-25",
                "check_out": "2025-06-27",
                "payment_method_id": "credit_card_1042",  # someone else's card
            },
            "Payment method credit_card_1042 not found",
        ),
        (
            "issue_service_refund",
            {"reservation_id": "HS10009", "amount": 169.5, "reason": "cleanliness"},
            "capped at 20% of the total \\(113.00\\)",
        ),
        (
            "issue_service_refund",
            {"reservation_id": "HS10001", "amount": 10, "reason": "noise"},
            "has not started",
        ),
    ],
)
def test_ineligible_requests_are_refused_and_change_nothing(
    homestay: Domain, tool: str, arguments: dict[str, Any], message: str
) -> None:
    before = homestay.db_hash()
    with pytest.raises(ToolError, match=message):
        homestay.call(tool, arguments)
    assert unchanged(homestay, before)


def test_service_refund_cap_counts_earlier_refunds(homestay: Domain) -> None:
    homestay.call(
        "issue_service_refund", {"reservation_id": "HS10009", "amount": 100, "reason": "cleanliness"}
    )
    with pytest.raises(ToolError, match="13.00 can still be refunded"):
        homestay.call("issue_service_refund", {"reservation_id": "HS10009", "amount": 20, "reason": "noise"})
    homestay.call("issue_service_refund", {"reservation_id": "HS10009", "amount": 13, "reason": "noise"})
    assert sum(r["amount"] for r in homestay.db["reservations"]["HS10009"]["service_refunds"]) == 113


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("find_guest_by_email", {"email": "nobody@example.com"}, "Guest not found"),
        ("get_guest_details", {"guest_id": "nobody_0000"}, "Guest nobody_0000 not found"),
        ("get_reservation_details", {"reservation_id": "HS99999"}, "Reservation HS99999 not found"),
        ("get_listing_details", {"listing_id": "L999"}, "Listing L999 not found"),
        (
            "cancel_reservation",
            {"reservation_id": "XX1", "reason": "change of plans"},
            "Reservation XX1 not found",
        ),
    ],
)
def test_unknown_ids_give_tool_errors(
    homestay: Domain, tool: str, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        homestay.call(tool, arguments)


def test_lookups_and_search(homestay: Domain) -> None:
    assert homestay.call("find_guest_by_email", {"email": " Maya.Okafor@Example.com "}) == "maya_okafor_1042"
    rows = homestay.call("list_guest_reservations", {"guest_id": "liam_obrien_9307"})
    assert [(r["reservation_id"], r["city"], r["status"]) for r in rows] == [
        ("HS10011", "Lisbon", "completed"),
        ("HS10012", "Kyoto", "confirmed"),
    ]
    found = homestay.call(
        "search_listings", {"city": "kyoto", "check_in": "2025-06-12", "check_out": "2025-06-14", "guests": 5}
    )
    assert all(r["max_guests"] >= 5 for r in found)
    assert {"L103", "L109"} <= {r["listing_id"] for r in found}  # both free once Aiko has left L103
    busy = homestay.call(
        "search_listings", {"city": "Kyoto", "check_in": "2025-06-03", "check_out": "2025-06-05", "guests": 1}
    )
    assert "L109" not in {r["listing_id"] for r in busy}  # Grace is staying there


# --------------------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("book_a_castle", {}, "Tool 'book_a_castle' not found."),
        ("get_reservation_details", {}, "missing required argument\\(s\\) reservation_id"),
        (
            "get_reservation_details",
            {"reservation_id": "HS10001", "verbose": True},
            "unexpected argument\\(s\\) verbose",
        ),
        (
            "get_reservation_details",
            {"reservation_id": 10001},
            "reservation_id must be a string, got integer",
        ),
        ("cancel_reservation", {"reservation_id": "HS10001", "reason": "bored"}, "reason must be one of"),
        (
            "issue_service_refund",
            {"reservation_id": "HS10009", "amount": "12", "reason": "noise"},
            "must be a number",
        ),
        (
            "search_listings",
            {"city": "Lisbon", "check_in": "2025-06-10", "check_out": "2025-06-12", "guests": 1.5},
            "integer",
        ),
        (
            "search_listings",
            {"city": "Lisbon", "check_in": "10/06/2025", "check_out": "2025-06-12", "guests": 1},
            "YYYY-MM-DD",
        ),
        ("get_reservation_details", ["HS10001"], "arguments must be a JSON object, got array"),
        ("get_reservation_details", "{not json", "not valid JSON"),
    ],
)
def test_malformed_calls_give_tool_errors(homestay: Domain, name: str, arguments: Any, message: str) -> None:
    before = homestay.db_hash()
    with pytest.raises(ToolError, match=message):
        homestay.call(name, arguments)
    assert unchanged(homestay, before)


def test_execute_and_json_string_arguments(homestay: Domain) -> None:
    outcome = homestay.execute("get_reservation_details", '{"reservation_id": "HS10001"}')
    assert outcome.ok and json.loads(outcome.content)["guest_id"] == "maya_okafor_1042"
    failed = homestay.execute("get_reservation_details", {"reservation_id": "nope"})
    assert (failed.ok, failed.content) == (False, "Error: Reservation nope not found")
    # A float that is a whole number is a valid integer (JSON has one number type).
    assert homestay.call(
        "search_listings",
        {"city": "Lisbon", "check_in": "2025-07-10", "check_out": "2025-07-12", "guests": 2.0},
    )


def test_results_are_copies(homestay: Domain) -> None:
    record = homestay.call("get_reservation_details", {"reservation_id": "HS10001"})
    record["status"] = "cancelled"
    assert homestay.db["reservations"]["HS10001"]["status"] == "confirmed"
    assert homestay.diff() == {}


# --------------------------------------------------------------------------- rollback and sharing


@write
def _careless_write(db: Any, key: str, fail: Literal["tool", "bug", "no"]) -> dict[str, Any]:
    """Change a record and a new one, then fail.

    Args:
        key: The record to change.
        fail: How to fail.
    """
    db["items"][key]["count"] += 1
    db["items"]["new"] = {"count": 0}
    for item in db["items"].values():
        item["seen"] = True
    if fail == "tool":
        raise ToolError("refused after writing")
    if fail == "bug":
        raise KeyError("oops")
    return db["items"][key]


@read
def _peek(db: Any, key: str) -> dict[str, Any]:
    """Read a record.

    Args:
        key: The record.
    """
    return db["items"][key]


def test_failed_write_rolls_back_and_shared_source_is_untouched() -> None:
    source = DbSource({"items": {"a": {"count": 1}, "b": {"count": 5}}})
    first = Domain.build("t", "", [_careless_write, _peek], source=source)
    second = Domain.build("t", "", [_careless_write, _peek], source=source)
    before = first.db_hash()
    with pytest.raises(ToolError, match="refused after writing"):
        first.call("_careless_write", {"key": "a", "fail": "tool"})
    assert unchanged(first, before)
    with pytest.raises(ToolError, match="_careless_write failed: KeyError"):
        first.call("_careless_write", {"key": "b", "fail": "bug"})
    assert unchanged(first, before)
    assert first.call("_careless_write", {"key": "a", "fail": "no"}) == {"count": 2, "seen": True}
    assert first.diff() == {
        "items": {
            "a": {"count": 2, "seen": True},
            "b": {"count": 5, "seen": True},
            "new": {"count": 0, "seen": True},
        }
    }
    # The other domain and the shared source never saw any of it.
    assert second.call("_peek", {"key": "a"}) == {"count": 1}
    assert second.diff() == {} and source.pristine == {"items": {"a": {"count": 1}, "b": {"count": 5}}}
    snapshot = first.snapshot()
    first.call("_careless_write", {"key": "a", "fail": "no"})
    assert first.diff(snapshot)["items"]["a"] == {"count": 3, "seen": True}


def test_db_hash_is_sha256_of_canonical_json(homestay: Domain) -> None:
    assert homestay.db_hash() == sha256_text(canonical_json(homestay.db))
    homestay.call("cancel_reservation", {"reservation_id": "HS10001", "reason": "booked by mistake"})
    assert homestay.db_hash() == sha256_text(canonical_json(homestay.db))


def test_edit_gives_a_private_record(homestay: Domain) -> None:
    other = load_domain("homestay")
    homestay.edit("listings", "L101")["nightly_rate"] = 1.0
    assert other.db["listings"]["L101"]["nightly_rate"] == 120.0
    assert homestay.diff()["listings"]["L101"]["nightly_rate"] == 1.0


def test_initial_state_merges_agent_data_and_runs_actions(homestay: Domain) -> None:
    homestay.apply_initial_state(
        {
            "initialization_data": {"agent_data": {"guests": {"maya_okafor_1042": {"phone": "+1-000"}}}},
            "initialization_actions": [
                {
                    "env_type": "assistant",
                    "func_name": "cancel_reservation",
                    "arguments": {"reservation_id": "HS10001", "reason": "change of plans"},
                }
            ],
        }
    )
    diff = homestay.diff()
    assert diff["guests"]["maya_okafor_1042"]["phone"] == "+1-000"
    assert diff["guests"]["maya_okafor_1042"]["email"] == "maya.okafor@example.com"
    assert diff["reservations"]["HS10001"]["status"] == "cancelled"
    assert load_domain("homestay").db["guests"]["maya_okafor_1042"]["phone"] != "+1-000"


# --------------------------------------------------------------------------- schemas and docs


def test_openai_tools_schema(homestay: Domain) -> None:
    tools = {t["function"]["name"]: t["function"] for t in homestay.openai_tools()}
    assert set(tools) == set(homestay.tools) and len(tools) == 12
    cancel = tools["cancel_reservation"]
    assert cancel["description"].startswith("Cancel a confirmed reservation before check-in")
    assert cancel["parameters"]["required"] == ["reservation_id", "reason"]
    assert cancel["parameters"]["properties"]["reason"]["enum"][0] == "change of plans"
    assert tools["issue_service_refund"]["parameters"]["properties"]["amount"]["type"] == "number"
    assert tools["search_listings"]["parameters"]["properties"]["guests"] == {
        "type": "integer",
        "description": "How many people will stay.",
    }
    kinds = {name: spec.kind for name, spec in homestay.tools.items()}
    assert kinds["cancel_reservation"] == "write" and kinds["quote_cancellation"] == "read"
    assert kinds["transfer_to_human_agents"] == "generic"
    json.dumps(homestay.openai_tools())


def test_airline_schema_and_validation_without_data() -> None:
    from concierge.support.domains import airline

    domain = Domain.build(
        "airline", "", airline.TOOLS, db={"users": {}, "flights": {}, "reservations": {}}
    )
    book = next(t for t in domain.openai_tools() if t["function"]["name"] == "book_reservation")["function"]
    flights = book["parameters"]["properties"]["flights"]
    assert flights["type"] == "array" and flights["items"]["required"] == ["flight_number", "date"]
    assert book["parameters"]["properties"]["cabin"]["enum"] == ["business", "economy", "basic_economy"]
    base = {
        "user_id": "u",
        "origin": "SFO",
        "destination": "JFK",
        "flight_type": "one_way",
        "cabin": "economy",
        "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
        "passengers": [{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}],
        "payment_methods": [{"payment_id": "credit_card_1", "amount": 100}],
        "total_baggages": 0,
        "nonfree_baggages": 0,
        "insurance": "no",
    }
    with pytest.raises(ToolError, match=r"passengers\[0\] is missing dob"):
        domain.call("book_reservation", {**base, "passengers": [{"first_name": "A", "last_name": "B"}]})
    with pytest.raises(ToolError, match=r"payment_methods\[0\].amount must be an integer, got string"):
        domain.call("book_reservation", {**base, "payment_methods": [{"payment_id": "c", "amount": "100"}]})
    with pytest.raises(ToolError, match="flight_type must be one of"):
        domain.call("book_reservation", {**base, "flight_type": "multi_city"})
    with pytest.raises(ToolError, match="User u not found"):
        domain.call("book_reservation", base)


def test_docstring_parsing() -> None:
    description, params, returns = parse_docstring(
        """Do a thing.
        Over two lines.

        Args:
            first: The first,
                continued here.
            second (int): The second.

        Returns:
            Something.
        """
    )
    assert description == "Do a thing.\nOver two lines."
    assert params == {"first": "The first, continued here.", "second": "The second."}
    assert returns == "Something."


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("2 + 2", "4.0"), ("(10 - 4) / 4", "1.5"), ("-3 * 2.5", "-7.5"), ("1 / 3", "0.33")],
)
def test_calculate(expression: str, expected: str) -> None:
    assert calculate({}, expression) == expected


@pytest.mark.parametrize("expression", ["1 / 0", "__import__('os')", "2 +", "9 ** 9 ** 9", ""])
def test_calculate_rejects(expression: str) -> None:
    with pytest.raises(ToolError):
        calculate({}, expression)


# --------------------------------------------------------------------------- tasks, generator, CLI


def test_homestay_tasks_replay() -> None:
    tasks = load_tasks(TASKS_PATH)
    assert len(tasks) == 10 and len({t.id for t in tasks}) == 10
    changed = 0
    for task in tasks:
        assert task.instructions and task.actions
        result = replay_gold(lambda: load_domain("homestay"), task)
        failed = [a["action_id"] for a in result["actions"] if not a["ok"]]
        assert failed == (["move_dates_listing_busy_2"] if task.id == "move_dates_listing_busy" else []), (
            task.id
        )
        changed += result["db_changed"]
        # A replay agrees with itself as a reference row.
        gold = {"action_results": result["actions"], "final_db_diff": result["db_diff"]}
        assert compare_with_gold(replay_gold(lambda: load_domain("homestay"), task), gold) == []
    assert changed == 7


def test_generator_is_deterministic() -> None:
    first, second = generate(), generate()
    assert canonical_json(first) == canonical_json(second)
    assert (len(first["guests"]), len(first["listings"])) == (100, 40)
    assert 300 < len(first["reservations"]) < 800
    assert len(canonical_json(first)) < 400_000
    # No listing is double-booked.
    by_listing: dict[str, list[tuple[str, str]]] = {}
    for r in first["reservations"].values():
        if r["status"] != "cancelled":
            by_listing.setdefault(r["listing_id"], []).append((r["check_in"], r["check_out"]))
    for stays in by_listing.values():
        stays.sort()
        assert all(a[1] <= b[0] for a, b in zip(stays, stays[1:], strict=False))


def test_load_domain_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        load_domain("castle")
    with pytest.raises(ValueError, match="needs a data directory"):
        load_domain("retail")
    with pytest.raises(FileNotFoundError, match="no db.json"):
        load_domain("airline", tmp_path)
    with pytest.raises(ValueError, match="cannot exclude unknown tool"):
        load_domain("homestay", exclude_tools=["nope"])
    domain = load_domain("homestay", exclude_tools=["calculate"])
    with pytest.raises(ToolError, match="Tool 'calculate' not found."):
        domain.call("calculate", {"expression": "1+1"})


def _cli() -> typer.Typer:
    from concierge.commands.eval_support import eval_support

    app = typer.Typer()
    app.command()(eval_support)
    return app


def test_cli_replay_gold_homestay(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    result = CliRunner().invoke(_cli(), ["--domain", "homestay", "--replay-gold", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "replayed 10 tasks" in result.output
    report = json.loads(out.read_text())
    assert report["n_tasks"] == 10 and report["n_failed_actions"] == 1 and report["n_db_changed"] == 7
    assert all(len(r["db_hash"]) == 64 for r in report["results"])


def test_cli_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(_cli(), ["--domain", "homestay", "--mode", "agent", "--model", "x"])
    assert result.exit_code == 2 and "model 'x' does not exist" in result.output
    result = runner.invoke(_cli(), ["--domain", "castle", "--replay-gold"])
    assert result.exit_code == 2 and "unknown domain" in result.output
    result = runner.invoke(
        _cli(), ["--domain", "homestay", "--replay-gold", "--tasks", str(tmp_path / "none.json")]
    )
    assert result.exit_code == 2 and "task file not found" in result.output
    assert "Traceback" not in result.output


def test_builtin_domains_are_folders_with_their_flows() -> None:
    from concierge import plugins
    from concierge.support.domains import DOMAINS_DIR, flows_path
    from concierge.support.guided import load_flows

    entries = plugins.entries("domains")
    for name in ("retail", "airline", "homestay"):
        assert entries[name].target == f"concierge.support.domains.{name}:load"
        assert (DOMAINS_DIR / name / "tools.py").is_file()
        assert flows_path(name).is_file() and load_flows(name).domain == name


def test_support_never_imports_train() -> None:
    import ast

    import concierge.support

    root = Path(concierge.support.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.startswith("concierge.train") for n in names), path


def test_the_copies_a_session_makes_keep_the_domains_clock() -> None:
    """The session forks a domain per tenant and per turn with dataclasses.replace; the home-stay
    policy's fixed "today" must survive it, or guided mode reads dates against the real date."""
    import dataclasses

    home = load_domain("homestay")
    assert home.now is not None
    fork = dataclasses.replace(home, db=home.snapshot(), _initial=None)
    assert fork.now == home.now
    assert fork.undoable is True
