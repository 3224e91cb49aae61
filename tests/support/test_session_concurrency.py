"""A tenant's support turns do not take their forks one at a time behind a database round trip:
the overlay rows are read outside the tenant copy's lock, and a read that comes back late never
undoes what a newer one applied."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from concierge.support import session as session_module
from concierge.support.domains import load_domain
from concierge.support.session import SupportSession, _Live


def test_a_slow_database_read_of_one_turn_does_not_hold_another_turns_fork(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    session = SupportSession(None, db_url=f"sqlite:///{tmp_path / 's.db'}", default_mode="guided", use_model=False,
                             domains={"homestay": load_domain("homestay")})
    session.domain("homestay", tenant="acme")  # the tenant's copy exists; the schema is made
    real_scope = session_module.session_scope
    entered, release = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def scope(url: str | None = None) -> Any:
        if threading.current_thread().name == "slow-turn":
            entered.set()
            assert release.wait(10), "the slow read was never released"
        with real_scope(url) as db:
            yield db

    monkeypatch.setattr(session_module, "session_scope", scope)
    slow = threading.Thread(target=lambda: session._fork("homestay", "acme"), name="slow-turn")
    slow.start()
    try:
        assert entered.wait(10)
        done = threading.Event()
        other = threading.Thread(target=lambda: (session._fork("homestay", "acme"), done.set()))
        other.start()
        # While the first turn's read is stuck in the database, the second turn still gets its fork.
        assert done.wait(5), "the second turn waited behind the first turn's database read"
        other.join(5)
    finally:
        release.set()
        slow.join(10)
    assert not slow.is_alive()


def test_rows_read_before_a_newer_sync_do_not_overwrite_it() -> None:
    live = _Live(load_domain("homestay"))
    key = next(iter(live.domain.db["reservations"]))
    newer = {**live.domain.db["reservations"][key], "status": "cancelled"}
    older = {**live.domain.db["reservations"][key], "status": "confirmed"}
    SupportSession._sync(live, [("reservations", key, newer, 9), ("", "", None, 10)])
    assert live.rev == 10
    SupportSession._sync(live, [("reservations", key, older, 8)])  # a read that started earlier, applied late
    assert live.domain.db["reservations"][key]["status"] == "cancelled"
    assert live.rev == 10
