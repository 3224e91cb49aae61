"""Homestay: a small home-stay booking service, the built-in demo support domain.

Guests, listings and reservations come from a seeded generator (``generate.py``), or from a
``db.json`` in a folder the user gives. Cancellation refunds follow flexible / moderate / strict
tiers by days before check-in (``policy.md``); ``tasks.json`` holds demo tasks in τ²'s schema;
``flows.yaml`` the guided-mode flows.
"""

from __future__ import annotations

from pathlib import Path

from concierge.support.domains.homestay import tools as _tools
from concierge.support.domains.homestay.generate import TODAY, generate, write_db
from concierge.support.toolkit import (
    DbSource,
    Domain,
    calculate,
    db_source,
    transfer_to_human_agents,
)

HERE = Path(__file__).resolve().parent
POLICY_PATH = HERE / "policy.md"
TASKS_PATH = HERE / "tasks.json"

TOOLS = [
    _tools.find_guest_by_email,
    _tools.get_guest_details,
    _tools.list_guest_reservations,
    _tools.get_reservation_details,
    _tools.get_listing_details,
    _tools.search_listings,
    _tools.quote_cancellation,
    _tools.cancel_reservation,
    _tools.modify_reservation_dates,
    _tools.issue_service_refund,
    calculate,
    transfer_to_human_agents,
]

_GENERATED: DbSource | None = None


def _generated_source() -> DbSource:
    global _GENERATED
    if _GENERATED is None:
        _GENERATED = DbSource(generate(), "homestay (generated)")
    return _GENERATED


def load(data_dir: Path | None = None, *, exclude_tools: tuple[str, ...] | list[str] = ()) -> Domain:
    """The homestay domain over the generated database, or ``data_dir/db.json`` when given."""
    policy = POLICY_PATH.read_text(encoding="utf-8")
    if data_dir is not None and (Path(data_dir) / "db.json").is_file():
        source = db_source(Path(data_dir) / "db.json")
        if (Path(data_dir) / "policy.md").is_file():
            policy = (Path(data_dir) / "policy.md").read_text(encoding="utf-8")
    elif data_dir is not None:
        raise FileNotFoundError(
            f"domain 'homestay': no db.json in {data_dir} (leave out --data-dir for the demo db)"
        )
    else:
        source = _generated_source()
    domain = Domain.build("homestay", policy, TOOLS, source=source, exclude_tools=exclude_tools)
    domain.now = TODAY  # the domain's fixed clock, read by guided mode
    return domain


__all__ = ["TASKS_PATH", "TODAY", "TOOLS", "generate", "load", "write_db"]
