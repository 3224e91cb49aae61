"""Tenant budgets shared by replicas: two real gateway processes over one SQLite file / PostgreSQL.

Each test starts two ``tests/helpers/launch_gateway.py`` servers on loopback ports over one database and
fires concurrent requests at both: the tenant's accepted tokens stay within its daily budget plus
one request per replica, its accepted requests within its requests per minute, and the rest are
429 with Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from concierge import tenancy
from concierge.store import db
from concierge.store.tables import Tenant, UsageRecord
from helpers.launch_gateway import COMPLETION_TOKENS
from helpers.replicas import chat, database, replicas

WORDS = 12
PER_CALL = WORDS + COMPLETION_TOKENS


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url
    db.reset_engines()


def _fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda i: chat(urls[i % len(urls)], key, WORDS), range(count)))


def _refusals(responses: list[httpx.Response], code: str) -> list[httpx.Response]:
    refused = [r for r in responses if r.status_code != 200]
    for r in refused:
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == code
        assert int(r.headers["Retry-After"]) >= 1
    return refused


def _usage_rows(db_url: str, tenant: str) -> int:
    with db.session_scope(db_url) as session:
        return int(
            session.scalar(
                select(func.count(UsageRecord.id)).join(Tenant, Tenant.id == UsageRecord.tenant_id).where(Tenant.name == tenant)
            )
            or 0
        )


def test_tokens_per_day_hold_across_two_replicas(tmp_path: Path, db_url: str) -> None:
    key = tenancy.create_key("tok-co", db_url=db_url).key
    budget = 20 * PER_CALL
    tenancy.set_budget("tok-co", tokens_per_day=budget, db_url=db_url)
    day = f"tpd:{datetime.now(UTC):%Y-%m-%d}"
    accepted = 0
    with replicas(tmp_path, db_url) as servers:
        urls = [s.url for s in servers]
        for _ in range(20):  # rounds of 32 concurrent calls until the budget is spent
            responses = _fire(urls, key, 32)
            ok = [r for r in responses if r.status_code == 200]
            assert all(r.json()["usage"]["total_tokens"] == PER_CALL for r in ok)
            accepted += len(ok)
            refused = _refusals(responses, "tokens_per_day_exceeded")
            time.sleep(0.6)  # the replicas settle their reservations (written every 0.25 s)
            spent = tenancy.counter_value("tok-co", day, db_url=db_url) >= budget
            if spent and not ok and all("has used its" in r.json()["error"]["message"] for r in refused):
                break
        else:
            pytest.fail("the budget was never reported spent")
        # Over the budget by at most one call per replica; and the budget was used up, not refused early.
        assert budget <= accepted * PER_CALL <= budget + len(servers) * PER_CALL
        assert tenancy.counter_value("tok-co", day, db_url=db_url) == accepted * PER_CALL
        late = chat(urls[0], key)
        assert late.status_code == 429 and int(late.headers["Retry-After"]) > 1
    assert _usage_rows(db_url, "tok-co") == accepted  # both replicas metered every accepted call


def test_requests_per_minute_hold_across_two_replicas(tmp_path: Path, db_url: str) -> None:
    key = tenancy.create_key("rpm-co", db_url=db_url).key
    tenancy.set_budget("rpm-co", rpm=10, db_url=db_url)
    with replicas(tmp_path, db_url) as servers:
        urls = [s.url for s in servers]
        second = datetime.now(UTC).second
        if second >= 45:  # the count is per UTC minute: keep the burst inside one
            time.sleep(61 - second)
        responses = _fire(urls, key, 40)
        accepted = [r for r in responses if r.status_code == 200]
        assert len(accepted) == 10
        refused = _refusals(responses, "requests_per_minute_exceeded")
        assert len(refused) == 30 and all(int(r.headers["Retry-After"]) <= 60 for r in refused)
        # Both replicas refused some: neither kept its own count of 10.
        assert {str(r.url).split("/v1")[0] for r in refused} == set(urls)
