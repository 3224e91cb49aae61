"""Faults: an upstream down, an engine dying mid-stream, SIGKILL during writes, a read-only database.

The gateway runs over the real ModelHub: ``down`` points at a closed port, ``up``/``flaky-up`` at a
second live gateway (the fake hub of test_gateway) reached through the real OpenAI upstream engine,
and ``crashy`` is an in-process engine that dies part-way through an answer when the prompt says
"crash"; the hub then retires it and builds a new one. The gateway also serves ``/v1/support/chat``
with an agent-mode support desk on ``crashy``.

SIGKILL during support-domain write turns is in test_support_persistence.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from concierge import config, tenancy
from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from concierge.models.deployment import AliasSpec, parse_deployment
from concierge.models.engine import EngineInfo, ModelError
from concierge.models.hub import CallRecord, ModelHub, build_engine
from concierge.store import db
from concierge.store.tables import Conversation, Message, UsageRecord
from concierge.support.session import SupportSession
from helpers.hubs import GatewayHub as FakeHub
from helpers.hubs import ShopHub
from helpers.server import LiveServer
from helpers.server import free_port as _free_port

UPSTREAM_KEY_ENV = "CONCIERGE_TEST_FAULTS_UPSTREAM_KEY"


class CrashingEngine:
    """An in-process engine that dies when the prompt says "crash": its stream after two chunks, a
    whole answer at once. Each one is numbered (``chatcmpl-c<serial>`` ids) and kept in BUILT."""

    BUILT: list[CrashingEngine] = []
    _lock = threading.Lock()

    def __init__(self, spec: AliasSpec) -> None:
        time.sleep(0.02)  # loading takes a while: widens the window for concurrent restarts
        self.info = EngineInfo(kind="llama.cpp", model="crashy", context_length=4096, capabilities={"chat"})
        self.closed = False
        with CrashingEngine._lock:
            self.serial = len(CrashingEngine.BUILT)
            CrashingEngine.BUILT.append(self)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        if "crash" in str(request["messages"][-1].get("content")):
            raise RuntimeError("llama_decode failed: /secret/path/model.gguf")
        message = {"role": "assistant", "content": "fine"}
        return {
            "id": f"chatcmpl-c{self.serial}",
            "object": "chat.completion",
            "created": 0,
            "model": "crashy",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        crash = "crash" in str(request["messages"][-1].get("content"))
        base = {"id": f"chatcmpl-c{self.serial}", "object": "chat.completion.chunk", "created": 0, "model": "crashy"}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for i, word in enumerate(["all", "is", "well", "here"]):
            if crash and i == 2:
                raise RuntimeError("llama_decode failed: /secret/path/model.gguf")
            yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def _factory(spec: AliasSpec) -> Any:
    return CrashingEngine(spec) if spec.alias == "crashy" else build_engine(spec)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("faults-home")
        mp.setenv("CONCIERGE_HOME", str(path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        db.reset_engines()
        yield path
    db.reset_engines()


@pytest.fixture(scope="module")
def key(home: Path) -> str:
    return tenancy.create_key("acme").key


@pytest.fixture(scope="module")
def upstream(home: Path, live_server) -> LiveServer:
    return live_server(create_app(FakeHub(), GatewaySettings()))


@pytest.fixture(scope="module")
def down_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there


@pytest.fixture(scope="module")
def hub(upstream: LiveServer, down_url: str) -> Iterator[ModelHub]:
    deployment = parse_deployment(
        {
            "models": {
                "down": {"url": down_url, "served_name": "tiny", "timeout": 5},
                "up": {"url": upstream.url + "/v1", "served_name": "tiny", "api_key_env": UPSTREAM_KEY_ENV},
                "flaky-up": {
                    "url": upstream.url + "/v1",
                    "served_name": "flaky",
                    "api_key_env": UPSTREAM_KEY_ENV,
                },
                "crashy": {"gguf": "/not/loaded/crashy.gguf", "actions": "tools"},  # it answers in plain text
            }
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(UPSTREAM_KEY_ENV, tenancy.create_key("upstream-client").key)
        model_hub = ModelHub(deployment, engine_factory=_factory)
        yield model_hub
        model_hub.close()


@pytest.fixture(scope="module")
def support(hub: ModelHub) -> SupportSession:
    """An agent-mode support desk on the crashy engine (the homestay demo domain)."""
    return SupportSession(hub, alias="crashy", default_mode="agent")


@pytest.fixture(scope="module")
def gateway(hub: ModelHub, support: SupportSession, down_url: str, key: str) -> Iterator[tuple[LiveServer, str]]:
    from concierge.gateway.support.routes import support_router

    app = create_app(hub, GatewaySettings())
    app.include_router(support_router(support, model_alias="crashy"))
    with LiveServer(app) as server:
        yield server, down_url


def _chat(url: str, key: str, model: str, content: str = "hello", stream: bool = False) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _events(response: httpx.Response) -> list[str]:
    return [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]


# ---------------------------------------------------------------------------------------------
# (a) an upstream is down, (b) an engine dies mid-stream
# ---------------------------------------------------------------------------------------------
def test_upstream_down_is_503_naming_it_while_other_aliases_serve(gateway, key: str) -> None:
    server, down_url = gateway
    for stream in (False, True):
        response = _chat(server.url, key, "down", stream=stream)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "service_unavailable" and error["code"] == "engine_unavailable"
        assert down_url in error["message"]
        ok = _chat(server.url, key, "up", stream=stream)
        assert ok.status_code == 200, ok.text
    assert _chat(server.url, key, "up").json()["choices"][0]["message"]["content"].startswith("Hello")


@pytest.mark.parametrize("alias", ["crashy", "flaky-up"])
def test_engine_failure_mid_stream_ends_cleanly(gateway, key: str, alias: str) -> None:
    server, _ = gateway
    response = _chat(server.url, key, alias, content="please crash now", stream=True)
    assert response.status_code == 200  # the header was sent before the engine failed
    events = _events(response)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "/secret/path" not in response.text  # an engine crash's text is not echoed
    deltas = [json.loads(e) for e in events[:-2]]
    assert all("choices" in d for d in deltas) and len(deltas) >= 2
    # The next request on the same alias (and the same upstream) works.
    again = _chat(server.url, key, "crashy" if alias == "crashy" else "up", content="hi", stream=True)
    assert again.status_code == 200 and _events(again)[-1] == "[DONE]"
    assert all("error" not in json.loads(e) for e in _events(again)[:-1])


def test_a_dead_engine_is_replaced_by_a_new_one_on_the_next_request(gateway, hub: ModelHub, key: str) -> None:
    server, _ = gateway
    records: list[CallRecord] = []
    hub.add_observer(records.append)
    try:
        assert _chat(server.url, key, "crashy", content="hi", stream=True).status_code == 200
        first = hub.engine("crashy")
        restarts = hub.engine_restarts.get("crashy", 0)
        response = _chat(server.url, key, "crashy", content="please crash now", stream=True)
        events = _events(response)
        assert response.status_code == 200 and events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]  # the clean SSE error event
        assert set(error) == {"message", "type", "param", "code"} and "/secret/path" not in response.text
        # The engine was retired, closed and counted once; nothing serves from it any more.
        assert hub.engine_restarts["crashy"] == restarts + 1 and first.closed
        assert "crashy" not in hub.loaded()
        assert [r.engine_restarted for r in records if r.alias == "crashy"] == [False, True]
        operator = tenancy.create_key("ops", scope="operator").key
        metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {operator}"}).text
        assert 'concierge_engine_restarts_total{model="crashy"}' in metrics
        again = _chat(server.url, key, "crashy", content="hi again", stream=True)
        second = hub.engine("crashy")
        assert second is not first and not second.closed
        assert json.loads(_events(again)[0])["id"] == f"chatcmpl-c{second.serial}"  # served by the new one
        assert all("error" not in json.loads(e) for e in _events(again)[:-1])
    finally:
        hub.remove_observer(records.append)


def test_concurrent_failures_restart_the_engine_once(hub: ModelHub) -> None:
    hello = {"messages": [{"role": "user", "content": "hello"}]}
    hub.chat("crashy", hello)
    first = hub.engine("crashy")
    restarts = hub.engine_restarts.get("crashy", 0)
    # Three streams in flight on the same engine when it dies: it is retired once.
    streams = [hub.stream_chat("crashy", {"messages": [{"role": "user", "content": "crash"}]}) for _ in range(3)]
    for stream in streams:
        with pytest.raises(ModelError):
            list(stream)
    assert hub.engine_restarts["crashy"] == restarts + 1 and first.closed
    # Many requests arrive at once: one new engine is built and serves them all.
    built = len(CrashingEngine.BUILT)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(hub.chat("crashy", hello)["id"])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(CrashingEngine.BUILT) == built + 1 and answers == [f"chatcmpl-c{built}"] * 8


def test_support_conversation_is_intact_after_the_engine_dies(gateway, hub: ModelHub, key: str) -> None:
    server, _ = gateway

    def turn(text: str, conversation_id: str | None = None) -> dict[str, Any]:
        body = {"message": text, **({"conversation_id": conversation_id} if conversation_id else {})}
        response = httpx.post(
            server.url + "/v1/support/chat", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    first = turn("hello")
    cid = first["conversation_id"]
    assert first["message"] == "fine"
    engine = hub.engine("crashy")
    restarts = hub.engine_restarts.get("crashy", 0)
    crashed = turn("please crash while answering", cid)  # the engine dies during this turn's answer
    assert crashed["conversation_id"] == cid and "try again" in crashed["message"]
    assert hub.engine_restarts["crashy"] == restarts + 1 and engine.closed
    after = turn("hello again", cid)
    assert after["message"] == "fine" and hub.engine("crashy") is not engine  # a new engine answered
    with db.session_scope() as session:
        conversation = session.get(Conversation, cid)
        assert conversation is not None and conversation.state["version"] == 3
        messages = session.scalars(
            select(Message).where(Message.conversation_id == cid).order_by(Message.id)
        ).all()
        # Whole turns only: the earlier messages are there, the failed turn's answer is the short
        # apology (no partial model output), and the conversation went on after it.
        assert [(m.role, m.content) for m in messages] == [
            ("user", "hello"),
            ("assistant", "fine"),
            ("user", "please crash while answering"),
            ("assistant", crashed["message"]),
            ("user", "hello again"),
            ("assistant", "fine"),
        ]
        assert messages[3].data["usage"]["model_errors"] == 1


# ---------------------------------------------------------------------------------------------
# (c) SIGKILL during writes
# ---------------------------------------------------------------------------------------------
UNIT = 40  # messages per conversation, all written in one transaction

_WRITER = """
import itertools, sys
from concierge.store.db import session_scope
from concierge.store.tables import Conversation, Message
tag, unit = sys.argv[1], int(sys.argv[2])
for i in itertools.count():
    with session_scope() as session:
        conversation = Conversation(id=f"{tag}-{i}", kind="support", state={"unit": i})
        session.add(conversation)
        session.flush()
        for j in range(unit):
            session.add(Message(conversation_id=conversation.id, role="user", content="x" * 1500, data={"j": j}))
    print(i, flush=True)
"""


def test_sigkill_mid_write_leaves_whole_transactions_only(tmp_path: Path) -> None:
    env = {**os.environ, "CONCIERGE_HOME": str(tmp_path)}
    env.pop("CONCIERGE_DATABASE_URL", None)
    for round_no, delay in enumerate((0.0, 0.013, 0.029)):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, f"r{round_no}", str(UNIT)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for _ in range(5 + 3 * round_no):  # let some transactions commit first
                assert proc.stdout.readline(), "writer exited early"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL

    connection = sqlite3.connect(tmp_path / "concierge.db")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        per_conversation = connection.execute(
            "SELECT c.id, COUNT(m.id) FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
            "GROUP BY c.id"
        ).fetchall()
        orphans = connection.execute(
            "SELECT COUNT(*) FROM messages WHERE conversation_id NOT IN (SELECT id FROM conversations)"
        ).fetchone()[0]
    finally:
        connection.close()
    assert per_conversation and orphans == 0
    assert {count for _, count in per_conversation} == {UNIT}  # no partly applied transaction
    for round_no in range(3):
        units = sorted(int(cid.split("-")[1]) for cid, _ in per_conversation if cid.startswith(f"r{round_no}-"))
        assert units == list(range(len(units))) and len(units) >= 5 + 3 * round_no


# ---------------------------------------------------------------------------------------------
# (d) a read-only database
# ---------------------------------------------------------------------------------------------
def _needs_sqlite() -> None:
    if not config.database_url().startswith("sqlite"):
        pytest.skip("read-only mode is simulated with SQLite's mode=ro; the store here is not SQLite")


def test_read_only_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        db.reset_engines()
        _needs_sqlite()
        api_key = tenancy.create_key("acme").key
        path = tmp_path / "concierge.db"
        # Opened read-only by SQLite itself (chmod does not stop root, which runs the tests).
        read_only = f"sqlite:///file:{path}?mode=ro&uri=true"

        # Core writes fail loudly and leave nothing behind.
        with pytest.raises(Exception, match="readonly"):
            with db.session_scope(read_only) as session:
                session.add(Conversation(id="ro-1", kind="support", state={}))
        # The gateway still authenticates and answers; the usage rows it cannot write wait in the
        # outbox on disk (a log line says so), and the server keeps serving.
        app = create_app(FakeHub(), GatewaySettings(database_url=read_only))
        with LiveServer(app) as server:
            for _ in range(2):
                response = _chat(server.url, api_key, "tiny")
                assert response.status_code == 200, response.text
            assert not app.state.usage_writer.flush(0.5)
            assert app.state.usage_writer.pending() >= 2 and app.state.usage_writer.dropped == 0
            health = httpx.get(server.url + "/healthz", timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        assert "usage rows kept in the outbox" in caplog.text and "OperationalError" in caplog.text
        # Nothing was written or corrupted; the same file takes writes again once writable.
        with db.session_scope() as session:
            assert session.scalar(select(func.count()).select_from(UsageRecord)) == 0
            assert session.get(Conversation, "ro-1") is None
            session.add(Conversation(id="rw-1", kind="support", state={}))
            session.add(Message(conversation_id="rw-1", role="user", content="ok"))
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            connection.close()
    db.reset_engines()


def test_read_only_database_support_api_answers_a_clean_error(tmp_path: Path) -> None:
    from concierge.gateway.support.routes import support_router
    from concierge.server import build_demo_services

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        db.reset_engines()
        _needs_sqlite()
        hub = ShopHub()
        services = build_demo_services(hub, n_products=20, n_shoppers=3, use_model=False, warm=False)
        api_key = tenancy.create_key("demo").key
        app = create_app(hub)
        app.include_router(support_router(services.support))
        headers = {"Authorization": f"Bearer {api_key}"}
        path = tmp_path / "concierge.db"
        with LiveServer(app) as server:
            def turn() -> httpx.Response:
                return httpx.post(
                    server.url + "/v1/support/chat", json={"message": "hello"}, headers=headers, timeout=30
                )

            assert turn().status_code == 200
            mp.setenv("CONCIERGE_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
            failed = turn()
            assert failed.status_code == 503, failed.text
            error = failed.json()["error"]
            assert error["code"] == "storage_unavailable"
            assert set(error) == {"message", "type", "param", "code"}
            assert "INSERT" not in error["message"] and "sqlite" not in error["message"].lower()
            mp.delenv("CONCIERGE_DATABASE_URL")
            assert turn().status_code == 200  # writable again: the server serves as before
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            conversations = connection.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
        finally:
            connection.close()
        assert conversations == 2  # the refused turn left no conversation behind
    db.reset_engines()


# ---------------------------------------------------------------------------------------------
# (e) a full disk
# ---------------------------------------------------------------------------------------------
def test_full_disk_gives_a_clean_error_and_nothing_half_written(tmp_path: Path) -> None:
    """SQLite's ``max_page_count`` makes the database full: the same SQLITE_FULL error a full disk gives."""
    from sqlalchemy import event

    from concierge.gateway.support.routes import support_router
    from concierge.server import build_demo_services

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        db.reset_engines()
        _needs_sqlite()
        hub = ShopHub()
        services = build_demo_services(hub, n_products=20, n_shoppers=3, use_model=False, warm=False)
        api_key = tenancy.create_key("demo").key
        app = create_app(hub)
        app.include_router(support_router(services.support))
        headers = {"Authorization": f"Bearer {api_key}"}
        path = tmp_path / "concierge.db"
        with LiveServer(app) as server:
            def turn(text: str, cid: str | None = None) -> httpx.Response:
                body = {"message": text, **({"conversation_id": cid} if cid else {})}
                return httpx.post(server.url + "/v1/support/chat", json=body, headers=headers, timeout=30)

            first = turn("hello")
            assert first.status_code == 200
            cid = first.json()["conversation_id"]
            # From now on the database may not grow by a single page.
            engine = db.get_engine()
            pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
            engine.dispose()

            def limit(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

            event.listen(engine, "connect", limit)
            # Long messages fill whatever room is left in the last pages, then a turn needs a page.
            for _ in range(20):
                with db.session_scope() as session:
                    before = session.scalar(select(func.count()).select_from(Message))
                full = turn("x" * 3900, cid)
                if full.status_code != 200:
                    break
            assert full.status_code == 503, full.text
            error = full.json()["error"]
            assert error["code"] == "storage_unavailable" and full.headers["Retry-After"]
            assert set(error) == {"message", "type", "param", "code"}
            assert "INSERT" not in error["message"] and "sqlite" not in error["message"].lower()
            with db.session_scope() as session:  # nothing of the refused turn was written
                assert session.scalar(select(func.count()).select_from(Message)) == before
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
            # Space again: the same conversation goes on.
            event.remove(engine, "connect", limit)
            engine.dispose()
            again = turn("hello again", cid)
            assert again.status_code == 200, again.text
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            connection.close()
    db.reset_engines()
