"""Backpressure per alias and tenant budgets, on a live gateway over a hub whose calls wait on a gate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from concierge import tenancy
from concierge.commands.budget import budget
from concierge.gateway.app import create_app
from concierge.gateway.errors import GatewayError
from concierge.gateway.limits import _AliasQueue
from concierge.gateway.settings import GatewaySettings
from concierge.models.engine import ModelNotFoundError
from concierge.models.hub import CallRecord
from concierge.store import db
from helpers.hubs import Call, ScriptedHub, card
from helpers.server import LiveServer

COMPLETION_TOKENS = 5


def _words(request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
    return {"prompt_tokens": prompt, "completion_tokens": COMPLETION_TOKENS, "total_tokens": prompt + COMPLETION_TOKENS}


def _answer(request: dict[str, Any], call: Call) -> str:
    """Chat answers four words; a stream three chunks, forty on ``drip`` (which streams slowly)."""
    if not call.stream:
        return "one two three four"
    return "word " * (40 if call.alias == "drip" else 3)


class GatedHub(ScriptedHub):
    """Chat on ``gate`` blocks until ``gate`` is set; ``drip`` streams slowly; ``free`` answers at once.

    A ScriptedHub (metered like the real hub, no embeddings) that counts the calls in progress."""

    def __init__(self) -> None:
        super().__init__(
            default=_answer,
            cards=[card(name, "chat", 4096, engine="fake") for name in ("gate", "free", "drip")],
            usage=_words,
            meter=True,
            chunk_delay={"drip": 0.05},
        )
        self.gate = threading.Event()
        self.running = 0
        self.peak = 0
        self._slots = threading.Lock()

    def _enter(self, alias: str) -> None:
        with self._slots:
            self.running += 1
            self.peak = max(self.peak, self.running)
        if alias == "gate":
            assert self.gate.wait(20), "gate never opened"

    def _exit(self) -> None:
        with self._slots:
            self.running -= 1

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        self._enter(alias)
        try:
            return super().chat(alias, request, tenant)
        finally:
            self._exit()

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        self._enter(alias)  # on the first chunk read: the stream holds its slot until it is closed
        try:
            yield from super().stream_chat(alias, request, tenant)
        finally:
            self._exit()

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        raise ModelNotFoundError("no embeddings here", param="model")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("limits-home")
        mp.setenv("CONCIERGE_HOME", str(path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        db.reset_engines()
        yield path
    db.reset_engines()


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    names = ("acme", "globex", "rpm-co", "tok-co", "seeded-co")
    return {name: tenancy.create_key(name).key for name in names}


@pytest.fixture(scope="module")
def hub() -> GatedHub:
    return GatedHub()


@pytest.fixture(scope="module")
def live(home: Path, keys: dict[str, str], hub: GatedHub, live_server) -> LiveServer:
    settings = GatewaySettings(max_concurrent=1, max_queued=1, budget_cache_ttl_s=0.0)
    return live_server(create_app(hub, settings))


def _chat(live: LiveServer, key: str, model: str = "free", prompt: str = "hello there", **extra: Any):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    return httpx.post(
        live.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _assert_429(response: httpx.Response, code: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == code and error["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


# ---------------------------------------------------------------------------------------------
# Backpressure per alias
# ---------------------------------------------------------------------------------------------
def test_full_queue_is_429_and_queued_calls_complete(live: LiveServer, keys: dict[str, str], hub: GatedHub):
    stats = live.app.state.limits.stats
    hub.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_chat, live, keys["acme"], "gate")
        _wait_for(lambda: hub.running == 1, "the first call to start")
        second = pool.submit(_chat, live, keys["globex"], "gate")
        _wait_for(lambda: stats().get("gate", {}).get("waiting") == 1, "the second call to queue")
        refused = _chat(live, keys["acme"], "gate")
        retry_after = _assert_429(refused, "model_overloaded")
        assert retry_after <= 60
        assert "gate" in refused.json()["error"]["message"]
        # Another alias keeps serving while this one is full.
        assert _chat(live, keys["acme"], "free").status_code == 200
        hub.gate.set()
        assert first.result(20).status_code == 200
        assert second.result(20).status_code == 200
    assert hub.peak <= 1 + 1  # one on "gate", at most one on "free" alongside
    assert stats()["gate"] == {"running": 0, "waiting": 0, "concurrent": 1}
    assert _chat(live, keys["acme"], "gate").status_code == 200


def test_stream_holds_its_slot_until_closed(live: LiveServer, keys: dict[str, str], hub: GatedHub):
    stats = live.app.state.limits.stats
    body = {"model": "drip", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {keys['acme']}"}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, headers=headers, timeout=20) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert stats()["drip"]["running"] == 1
        # While the stream runs, the one queue place is free: a second stream queues, a third is refused.
        _assert_429(_overflow(live, keys), "model_overloaded")
    # The client left mid-stream: the slot comes back.
    _wait_for(lambda: stats()["drip"]["running"] == 0, "the stream's slot to be released")
    full = _chat(live, keys["acme"], "drip", stream=True)
    assert full.status_code == 200 and full.text.rstrip().endswith("data: [DONE]")
    # The slot is released when the server closes the finished stream, just after the last byte.
    _wait_for(lambda: stats()["drip"] == {"running": 0, "waiting": 0, "concurrent": 1}, "the slot to come back")


def _overflow(live: LiveServer, keys: dict[str, str]) -> httpx.Response:
    """Fill the queue of ``drip`` with one waiting call, then return the refused next one."""
    stats = live.app.state.limits.stats
    pool = ThreadPoolExecutor(1)
    pool.submit(_chat, live, keys["globex"], "drip")
    _wait_for(lambda: stats()["drip"]["waiting"] == 1, "a call to queue behind the stream")
    refused = _chat(live, keys["globex"], "drip")
    pool.shutdown(wait=False)
    return refused


def test_queue_is_fifo_and_times_out() -> None:
    async def scenario() -> None:
        gate = _AliasQueue("m", concurrent=1, queued=2)
        await gate.acquire(1.0)
        order: list[int] = []

        async def waiter(n: int) -> None:
            await gate.acquire(5.0)
            order.append(n)
            gate.release()

        tasks = [asyncio.create_task(waiter(n)) for n in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(GatewayError) as full:
            await gate.acquire(1.0)
        assert full.value.status_code == 429 and full.value.code == "model_overloaded"
        gate.release()
        await asyncio.gather(*tasks)
        assert order == [1, 2] and gate.running == 0 and not gate.waiters
        # A waiter that gives up leaves no trace in the queue.
        await gate.acquire(1.0)
        with pytest.raises(GatewayError) as late:
            await gate.acquire(0.05)
        assert "waited" in late.value.message and "Retry-After" in (late.value.headers or {})
        assert not gate.waiters and gate.running == 1
        gate.release()
        assert gate.running == 0

    asyncio.run(scenario())


def test_default_concurrency_follows_llamacpp_slots() -> None:
    from concierge.gateway.limits import Limits
    from concierge.models.deployment import DEFAULT_N_PARALLEL
    from concierge.models.hub import ModelHub

    hub = ModelHub.from_config(include_registry=False)
    limits = Limits(hub, GatewaySettings())
    llama = [a for a in hub.aliases() if hub.spec(a).engine_kind == "llama.cpp"]
    assert llama, "the embedded default deployment serves a llama.cpp alias"
    for alias in llama:
        assert limits.concurrency(alias) == (hub.spec(alias).n_parallel or DEFAULT_N_PARALLEL)
    assert Limits(hub, GatewaySettings(max_concurrent=7)).concurrency(llama[0]) == 7
    assert limits.concurrency("not-an-alias") == GatewaySettings().max_concurrent_other


# ---------------------------------------------------------------------------------------------
# Tenant budgets
# ---------------------------------------------------------------------------------------------
def _not_at_a_minute_boundary() -> None:
    """Requests per minute count per UTC minute: keep a short scenario inside one minute."""
    second = datetime.now(UTC).second
    if second >= 55:
        time.sleep(61 - second)


def test_requests_per_minute_per_tenant(live: LiveServer, keys: dict[str, str]) -> None:
    _not_at_a_minute_boundary()
    assert tenancy.set_budget("rpm-co", rpm=2).requests_per_minute == 2
    assert _chat(live, keys["rpm-co"]).status_code == 200
    assert _chat(live, keys["rpm-co"]).status_code == 200
    refused = _chat(live, keys["rpm-co"])
    retry_after = _assert_429(refused, "requests_per_minute_exceeded")
    assert 1 <= retry_after <= 60
    # Other tenants are not affected.
    for _ in range(3):
        assert _chat(live, keys["globex"]).status_code == 200
    # Lifting the limit takes effect on the next read of the budget.
    tenancy.set_budget("rpm-co", rpm=0)
    assert _chat(live, keys["rpm-co"]).status_code == 200


def test_stale_budget_is_refreshed_in_the_background(home: Path, keys: dict[str, str], hub: GatedHub) -> None:
    """With a cache TTL, a stale budget serves the call at hand while a background read refreshes it."""
    from concierge.gateway.limits import Limits

    _not_at_a_minute_boundary()

    async def scenario() -> None:
        limits = Limits(hub, GatewaySettings(budget_cache_ttl_s=0.05))
        tenancy.set_budget("acme", rpm=1000)
        await limits.check_budget("acme")  # first read waits for the database
        tenancy.set_budget("acme", rpm=1)
        await asyncio.sleep(0.1)
        await limits.check_budget("acme")  # stale: admitted under the old budget, refresh started
        for _ in range(100):
            if not limits._refreshes:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(GatewayError) as refused:  # the refreshed budget (1/min) now applies
            await limits.check_budget("acme")
        assert refused.value.code == "requests_per_minute_exceeded"

    try:
        asyncio.run(scenario())
    finally:
        tenancy.set_budget("acme", rpm=0)


def test_key_cache_refresh_drops_revoked_and_idle_keys(home: Path) -> None:
    from concierge.gateway.auth import KeyAuthenticator

    async def scenario() -> None:
        authn = KeyAuthenticator(ttl_s=0.2, idle_s=60.0)
        kept, revoked = tenancy.create_key("cache-co").key, tenancy.create_key("cache-co").key
        assert await authn.principal(kept) is not None and await authn.principal(revoked) is not None
        tenancy.revoke_key(revoked)
        task = asyncio.get_running_loop().create_task(authn.refresh_forever())
        try:
            await asyncio.sleep(0.5)  # longer than the TTL: only the background refresh keeps `kept`
            assert authn._cached(tenancy.hash_key(kept)) is not None
            assert authn._cached(tenancy.hash_key(revoked)) is None
            assert await authn.principal(revoked) is None
        finally:
            task.cancel()
        authn.idle_s = 0.0
        authn.refresh()
        assert authn._cached(tenancy.hash_key(kept)) is None  # unused for idle_s: dropped

    asyncio.run(scenario())


def test_tokens_per_day_per_tenant(live: LiveServer, keys: dict[str, str]) -> None:
    tenancy.set_budget("tok-co", tokens_per_day=15)
    prompt = " ".join(["word"] * 12)  # 12 prompt + 5 completion tokens: over the budget after one call
    assert _chat(live, keys["tok-co"], prompt=prompt).status_code == 200
    refused = _chat(live, keys["tok-co"], prompt=prompt)
    retry_after = _assert_429(refused, "tokens_per_day_exceeded")
    assert retry_after <= 24 * 3600
    assert _chat(live, keys["acme"], prompt=prompt).status_code == 200
    assert tenancy.get_budget("tok-co").tokens_per_day == 15


def test_tokens_per_day_counts_earlier_usage_from_the_database(live: LiveServer, keys: dict[str, str]):
    tenancy.record_usage(tenancy.UsageRow("seeded-co", "free", "chat", 80, 40))
    assert tenancy.tokens_used("seeded-co", datetime.now(UTC).replace(hour=0, minute=0, second=0)) == 120
    tenancy.set_budget("seeded-co", tokens_per_day=100)
    _assert_429(_chat(live, keys["seeded-co"]), "tokens_per_day_exceeded")
    tenancy.set_budget("seeded-co", tokens_per_day=1000)
    assert _chat(live, keys["seeded-co"]).status_code == 200


def test_set_budget_validation(home: Path, keys: dict[str, str]) -> None:
    with pytest.raises(tenancy.TenancyError, match="no tenant"):
        tenancy.set_budget("nobody", rpm=1)
    with pytest.raises(tenancy.TenancyError, match="rpm"):
        tenancy.set_budget("acme", rpm=-1)
    info = tenancy.set_budget("acme", rpm=10, tokens_per_day=500)
    assert (info.requests_per_minute, info.tokens_per_day) == (10, 500)
    info = tenancy.set_budget("acme", tokens_per_day=0)  # rpm unchanged, token limit removed
    assert (info.requests_per_minute, info.tokens_per_day) == (10, None)
    tenancy.set_budget("acme", rpm=0)
    assert tenancy.get_budget("acme") == tenancy.BudgetInfo("acme", None, None)


def test_budget_cli(home: Path, keys: dict[str, str]) -> None:
    cli = typer.Typer()
    cli.command()(budget)
    runner = CliRunner()
    ok = runner.invoke(cli, ["globex", "--rpm", "30", "--tokens-per-day", "9000"])
    assert ok.exit_code == 0 and "30" in ok.output and "9000" in ok.output
    shown = runner.invoke(cli, ["globex"])
    assert shown.exit_code == 0 and "9000" in shown.output
    for args in (["nobody", "--rpm", "3"], ["globex", "--rpm", "-2"]):
        bad = runner.invoke(cli, args)
        assert bad.exit_code == 2 and "Traceback" not in bad.output
        assert bad.output.strip().startswith("error:") and len(bad.output.strip().splitlines()) == 1
    tenancy.set_budget("globex", rpm=0, tokens_per_day=0)


def test_server_keeps_serving(live: LiveServer, keys: dict[str, str]) -> None:
    for key in keys.values():
        response = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert response.status_code == 200
    assert _chat(live, keys["globex"], "gate").status_code == 200


def test_reservations_settle_to_the_real_count_and_refusals_give_back(home: Path, hub: GatedHub) -> None:
    """A call reserves its estimate on the shared counter and settles its real tokens; a call that
    never ran (refused by a full queue) gives back both its tokens and its request."""
    from concierge.gateway.limits import Limits, _day_bucket, _minute_bucket

    _not_at_a_minute_boundary()
    tenancy.create_tenant("settle-co")
    tenancy.set_budget("settle-co", rpm=100, tokens_per_day=100_000)
    day, minute = _day_bucket(datetime.now(UTC))[0], _minute_bucket(datetime.now(UTC))[0]

    def counters() -> tuple[int, int]:
        limits.flush()
        return tenancy.counter_value("settle-co", day), tenancy.counter_value("settle-co", minute)

    limits = Limits(hub, GatewaySettings(budget_cache_ttl_s=0.0))

    async def scenario() -> None:
        first = await limits.reserve("settle-co", "free")
        assert first is not None and first.tokens == hub.card("free").context_length  # nothing seen yet
        assert counters() == (first.tokens, 1)
        limits.observe(CallRecord("free", "chat", "settle-co", 10, 5, 0.1, 0.1, 200))
        limits.release(first)
        assert counters() == (15, 1)
        second = await limits.reserve("settle-co", "free")  # now reserves the size of recent calls
        assert second is not None and second.tokens == 15 and counters() == (30, 2)
        limits.release(second, refused=True)  # e.g. the alias queue was full
        assert counters() == (15, 1)
        assert limits.db_checks == 2

    asyncio.run(scenario())
