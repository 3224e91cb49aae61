"""Bounded load test of the gateway: chat completions, shop and support conversations at once.

    .venv/bin/python scripts/load_test.py --duration 180 --concurrency 32          # in-process gateway
    .venv/bin/python scripts/load_test.py --spawn --hub instant --mix chat=1,shop=0,support=0  # own process
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:8000 --key ck-... \\
        --chat-key ck-... --database-url sqlite:////root/.concierge/concierge.db   # a running one

Without ``--url`` the gateway is started in this process (uvicorn in a thread, ``concierge serve``'s
wiring: embedded default models, the demo store with ``--products`` products, the homestay support
desk in guided mode) on a fresh ``CONCIERGE_HOME`` (or ``--home``; ``CONCIERGE_DATABASE_URL`` selects
PostgreSQL), with keys made for it. ``--hub instant`` swaps the models for canned instant answers, to
measure the gateway, flows and database alone.
With ``--spawn`` that gateway runs in a child process (this script's ``--serve`` mode), so the load
client does not share its GIL; the report then adds the CPU each side spent per request and the SQL
statements and outbox commits the gateway made per request. ``--client raw`` (default) is a minimal
keep-alive HTTP/1.1 client (httpx, ``--client httpx``, costs ten times its CPU per request).
``--rate`` starts requests at a fixed rate (open loop, still at most ``--concurrency`` in flight);
``--budget`` gives the chat tenant a budget it never reaches, so every call claims on the shared
counters.

``--concurrency`` workers each run one conversation at a time, turn after turn, so that many
conversation ids are open at once: a shop conversation (3 turns), a support conversation (2-3 turns
as a homestay guest), or one ``/v1/chat/completions`` call (``--max-tokens``), in the ``--mix``
proportions. It stops at ``--requests`` requests or ``--duration`` seconds, whichever comes first
(requests in flight then finish, up to ``--timeout``).

Reported per route and overall: requests/s, latency p50/p95/p99 (of every answered request),
429s (backpressure: a full model queue or a tenant budget) apart from errors (other non-2xx and
transport failures). Afterwards, in the database: every shop/support message whose request got a
2xx must be stored as that conversation's user message, in order (a turn the client timed out on
may be stored too); every 2xx chat completion must
have its usage row. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

SHOP_SCRIPTS = [
    ["I need running shoes under $120", "something cheaper", "in blue please"],
    ["a warm jacket for winter", "not leather", "what about size M?"],
    ["a gift for someone who loves cooking", "under $50", "show me more like that"],
    ["black jeans", "slim fit", "cheaper ones?"],
    ["a backpack for hiking", "waterproof", "in green"],
]
CHAT_PROMPTS = [
    "Say hello in five words.",
    "Name a colour.",
    "Give me one word that rhymes with cat.",
    "What is 2 + 2?",
]


@dataclass
class Result:
    route: str
    status: int  # 0: no HTTP answer (timeout, connection error)
    latency_s: float
    conversation_id: str | None = None
    text: str | None = None
    error: str | None = None


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    sent: int = 0
    started: float = 0.0
    ended: float = 0.0
    cpu: dict[str, float] | None = None  # CPU seconds of the gateway and the client (--spawn)
    rate: float | None = None  # --rate: requests started per second, at most
    paced_from: float = 0.0  # time.perf_counter() of request 0's start slot
    late: int = 0  # requests that started more than 10 ms after their slot (every worker was busy)
    server_stats: dict[str, Any] | None = None  # --spawn: SQL statements and outbox commits while serving


# ---------------------------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------------------------
def homestay_guests() -> list[tuple[str, list[str]]]:
    """(email, confirmed reservation ids) of the homestay demo guests (the deterministic generator)."""
    from concierge.support.domains import load_domain

    db = load_domain("homestay", None).db
    out = []
    for guest in db["guests"].values():
        confirmed = [r for r in guest.get("reservations") or [] if db["reservations"][r]["status"] == "confirmed"]
        out.append((guest["email"], confirmed))
    return out


def support_script(guest: tuple[str, list[str]], rng: random.Random) -> list[str]:
    email, reservations = guest
    kind = rng.choice(["details", "cancel", "policy"]) if reservations else rng.choice(["details", "policy"])
    if kind == "details":
        return [f"Hi, I'm {email}. What are my reservations?", "thanks"]
    if kind == "cancel":
        rid = rng.choice(reservations)
        return [f"Please cancel reservation {rid}, my plans changed. I'm {email}", "no, keep it", "thanks"]
    return ["What is your cancellation policy?", f"I'm {email}, how long do refunds take?"]


class HttpxClient:
    """``--client httpx``: requests through one shared ``httpx.AsyncClient`` (a real client's costs)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, route: str, body: bytes, key: str) -> tuple[int, bytes]:
        response = await self.client.post(route, content=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        return response.status_code, response.content

    async def close(self) -> None:
        pass


class RawConnection:
    """``--client raw`` (default): one keep-alive HTTP/1.1 connection per worker, answers parsed by
    httptools (the parser uvicorn uses). httpx costs about 3 ms of CPU per request, more than the
    gateway itself; this costs a tenth of that, so the figures measure the gateway, not the client."""

    def __init__(self, base_url: str, timeout: float) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, route: str, body: bytes, key: str) -> tuple[int, bytes]:
        import httptools

        try:
            async with asyncio.timeout(self.timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                assert self.reader is not None
                head = (f"POST {route} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                self.writer.write(head + body)
                chunks: list[bytes] = []
                state = {"done": False, "keep": True}

                class Answer:
                    def on_body(self, data: bytes) -> None:
                        chunks.append(data)

                    def on_message_complete(self) -> None:
                        state["done"] = True

                parser = httptools.HttpResponseParser(Answer())
                while not state["done"]:
                    data = await self.reader.read(65536)
                    if not data:
                        raise ConnectionError("the server closed the connection")
                    parser.feed_data(data)
                status = parser.get_status_code()
                if not parser.should_keep_alive():
                    await self.close()
                return status, b"".join(chunks)
        except BaseException:
            await self.close()  # a half-read answer leaves the connection unusable
            raise

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()


async def post(client: Any, run: Run, route: str, body: dict[str, Any], key: str,
               text: str | None = None) -> Result:
    # The request's number is taken before any wait, so each worker sleeps until its own slot: taken
    # after the wait, every idle worker read the same number, slept to the same slot and sent at once
    # (bursts of up to --concurrency requests, whose queueing was most of the measured p50).
    index = run.sent
    run.sent += 1
    if run.rate:
        slot = run.paced_from + index / run.rate  # open loop: request i starts at i / rate
        wait = slot - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.01:
            run.late += 1
    started = time.perf_counter()
    try:
        status, content = await client.post(route, json.dumps(body).encode(), key)
        result = Result(route, status, time.perf_counter() - started, text=text)
        if 200 <= status < 300:
            result.conversation_id = json.loads(content).get("conversation_id")
        else:
            result.error = (json.loads(content).get("error") or {}).get("code") if content else None
    except (httpx.HTTPError, OSError, TimeoutError, ValueError, ImportError) as exc:
        result = Result(route, 0, time.perf_counter() - started, text=text, error=type(exc).__name__)
    run.results.append(result)
    return result


async def worker(index: int, client: Any, run: Run, args: argparse.Namespace,
                 kinds: itertools.cycle, guests: list[tuple[str, list[str]]], deadline: float) -> None:
    rng = random.Random(args.seed * 1000 + index)

    def more() -> bool:
        return run.sent < args.requests and time.monotonic() < deadline

    while more():
        kind = next(kinds)
        if kind == "chat":
            body = {"model": args.chat_model, "max_tokens": args.max_tokens, "temperature": 0.0,
                    "messages": [{"role": "user", "content": rng.choice(CHAT_PROMPTS)}]}
            await post(client, run, "/v1/chat/completions", body, args.chat_key or args.key)
            continue
        if kind == "shop":
            turns, route = rng.choice(SHOP_SCRIPTS), "/v1/shop/chat"
        else:
            turns, route = support_script(rng.choice(guests), rng), "/v1/support/chat"
        conversation_id = None
        for text in turns:
            if not more():
                break
            body: dict[str, Any] = {"message": text}
            if conversation_id:
                body["conversation_id"] = conversation_id
            result = await post(client, run, route, body, args.key, text)
            if not 200 <= result.status < 300:
                break  # the conversation cannot go on from a refused turn
            conversation_id = result.conversation_id


async def drive(args: argparse.Namespace, base_url: str) -> Run:
    weights = dict(part.split("=") for part in args.mix.split(","))
    order = [kind for kind, w in weights.items() for _ in range(int(w))]
    random.Random(args.seed).shuffle(order)
    kinds = itertools.cycle(order)
    guests = homestay_guests()
    run = Run()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as shared:
        clients = [HttpxClient(shared) if args.client == "httpx" else RawConnection(base_url, args.timeout)
                   for _ in range(args.concurrency)]
        run.started = run.paced_from = time.perf_counter()
        run.rate = args.rate
        deadline = time.monotonic() + args.duration
        await asyncio.gather(*(worker(i, clients[i], run, args, kinds, guests, deadline)
                               for i in range(args.concurrency)))
        run.ended = time.perf_counter()
        for client in clients:
            await client.close()
    return run


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU time of a process so far (this one by default; Linux /proc for another)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(run: Run) -> dict[str, Any]:
    wall = max(run.ended - run.started, 1e-9)
    by_route: dict[str, list[Result]] = defaultdict(list)
    for r in run.results:
        by_route[r.route].append(r)
    by_route["all"] = list(run.results)
    out: dict[str, Any] = {"wall_s": round(wall, 1), "routes": {}, "rate": run.rate, "late": run.late}
    if run.cpu is not None and run.results:
        # CPU per request does not depend on how busy the shared machine was, unlike requests/s.
        out["cpu_ms_per_request"] = {side: round(seconds * 1000 / len(run.results), 3)
                                     for side, seconds in run.cpu.items()}
    if run.server_stats is not None and run.results:
        n = len(run.results)
        sql = run.server_stats["sql_statements"]
        out["per_request"] = {"sql_statements": round(sum(sql.values()) / n, 2),
                              "by_kind": {k: round(v / n, 2) for k, v in sorted(sql.items())},
                              "outbox_commits": None if run.server_stats["outbox_commits"] is None
                              else round(run.server_stats["outbox_commits"] / n, 3)}
    for route, rows in by_route.items():
        answered = [r.latency_s for r in rows if r.status]
        ok = [r for r in rows if 200 <= r.status < 300]
        throttled = [r for r in rows if r.status == 429]
        errors = [r for r in rows if not (200 <= r.status < 300) and r.status != 429]
        out["routes"][route] = {
            "requests": len(rows),
            "ok": len(ok),
            "requests_per_s": round(len(rows) / wall, 2),
            "ok_per_s": round(len(ok) / wall, 2),
            "p50_ms": round(percentile(answered, 0.50) * 1000, 1),
            "p95_ms": round(percentile(answered, 0.95) * 1000, 1),
            "p99_ms": round(percentile(answered, 0.99) * 1000, 1),
            "throttled_429": len(throttled),
            "errors": len(errors),
            "error_rate": round(len(errors) / len(rows), 4) if rows else 0.0,
            "errors_by_status": dict(Counter(f"{r.status or 'transport'}:{r.error}" for r in errors)),
        }
    return out


def check_database(run: Run, db_url: str | None, chat_tenant: str | None) -> dict[str, Any]:
    """Every 2xx shop/support message stored in its conversation, in order; every 2xx chat metered."""
    from sqlalchemy import func, select

    from concierge.store.db import session_scope
    from concierge.store.tables import Message, Tenant, UsageRecord

    expected: dict[str, list[str]] = defaultdict(list)
    for r in run.results:
        if r.route != "/v1/chat/completions" and 200 <= r.status < 300 and r.conversation_id:
            expected[r.conversation_id].append(r.text or "")
    missing: list[str] = []
    with session_scope(db_url) as session:
        for cid, texts in expected.items():
            stored = session.scalars(
                select(Message.content).where(Message.conversation_id == cid, Message.role == "user")
                .order_by(Message.id)
            ).all()
            # The 2xx turns are the conversation's first ones (a worker stops a conversation at its first
            # refused turn); a turn the client gave up on may still have been stored after them.
            if list(stored)[: len(texts)] != texts:
                missing.append(cid)
        chat_ok = sum(1 for r in run.results if r.route == "/v1/chat/completions" and 200 <= r.status < 300)
        metered = None
        if chat_tenant:
            metered = session.scalar(
                select(func.count(UsageRecord.id)).join(Tenant, Tenant.id == UsageRecord.tenant_id)
                .where(Tenant.name == chat_tenant, UsageRecord.status == 200)
            )
    return {
        "conversations": len(expected),
        "messages_expected": sum(len(t) for t in expected.values()),
        "conversations_with_missing_messages": missing[:20],
        "missing_count": len(missing),
        "chat_ok": chat_ok,
        "chat_usage_rows": metered,
        "ok": not missing and (metered is None or metered == chat_ok),
    }


def print_report(fig: dict[str, Any], check: dict[str, Any] | None, meta: dict[str, Any]) -> None:
    print(f"\n{meta['date']}  {meta['machine']}  {meta['command']}")
    print(f"wall {fig['wall_s']} s, concurrency {meta['concurrency']}, models {meta['models']}, "
          f"database {meta['database']}, client in {meta['client']}, gateway processes {meta.get('gateway_processes', 1)}")
    print(f"load average (1, 5, 15 min) before {meta['load_average']}, after {meta.get('load_average_after')}")
    if fig.get("rate"):
        print(f"offered {fig['rate']} requests/s; {fig['late']} started over 10 ms late (every worker busy)")
    if "cpu_ms_per_request" in fig:
        cpu = fig["cpu_ms_per_request"]
        print(f"CPU per request: gateway {cpu['server_s']} ms, client {cpu['client_s']} ms")
    if "per_request" in fig:
        per = fig["per_request"]
        print(f"per request: {per['sql_statements']} SQL statements {per['by_kind']}, "
              f"{per['outbox_commits']} outbox commits")
    header = f"{'route':<22}{'req':>6}{'ok':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'429':>6}{'err':>5}"
    print(header)
    for route, f in fig["routes"].items():
        print(f"{route:<22}{f['requests']:>6}{f['ok']:>6}{f['requests_per_s']:>8}{f['p50_ms']:>9}"
              f"{f['p95_ms']:>9}{f['p99_ms']:>9}{f['throttled_429']:>6}{f['errors']:>5}")
        if f["errors_by_status"]:
            print(f"{'':<22}errors: {f['errors_by_status']}")
    if check is not None:
        verdict = "OK" if check["ok"] else "FAILED"
        print(f"database check {verdict}: {check['messages_expected']} accepted messages in "
              f"{check['conversations']} conversations, {check['missing_count']} conversations missing some; "
              f"{check['chat_ok']} chat completions answered, {check['chat_usage_rows']} metered")


# ---------------------------------------------------------------------------------------------
# In-process gateway
# ---------------------------------------------------------------------------------------------
def _emptiest(schema: dict[str, Any]) -> Any:
    """The emptiest value a JSON schema allows (a model that found nothing in the message)."""
    if "enum" in schema:
        return None if None in schema["enum"] else schema["enum"][0]
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "null" in kinds:
        return None
    if "object" in kinds:
        props = schema.get("properties", {})
        return {name: _emptiest(props[name]) for name in schema.get("required", list(props))}
    return [] if "array" in kinds else "" if "string" in kinds else False if "boolean" in kinds else 0


class InstantHub:
    """``--hub instant``: the ModelHub contract with canned answers at once and hashing embeddings.

    Takes the models out of the measurement, so the figures are the gateway's own: auth, limits,
    metering, the shop's search and grounding, the support flows, and the database writes.
    """

    def __init__(self) -> None:
        from concierge.models.hub import ModelCard
        from concierge.shop.search import HashingEmbedder

        self.observer: Any = None
        self._embed = HashingEmbedder(64)
        self.cards = [ModelCard(a, "chat", "instant", "instant", "-", 8192) for a in
                      ("chat", "shop-assistant", "support-agent")]
        self.cards.append(ModelCard("embed", "embeddings", "hashing-64", "instant", "-", 512))

    def models(self) -> list[Any]:
        return list(self.cards)

    def card(self, alias: str) -> Any:
        from concierge.models.engine import ModelNotFoundError

        for card in self.cards:
            if card.alias == alias:
                return card
        raise ModelNotFoundError(f"The model `{alias}` does not exist.", param="model")

    def _report(self, alias: str, endpoint: str, tenant: str | None, prompt: int, completion: int) -> None:
        if self.observer is not None:
            from concierge.models.hub import CallRecord

            self.observer(CallRecord(alias, endpoint, tenant, prompt, completion, 0.0, 0.0, 200))

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        self.card(alias)
        fmt = request.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        content = json.dumps(_emptiest(schema)) if schema else "Here are a few options."
        prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages") or [])
        self._report(alias, "chat", tenant, prompt, 5)
        return {"id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()), "model": alias,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5}}

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Any:
        answer = self.chat(alias, request, tenant)
        text = answer["choices"][0]["message"]["content"]
        base = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "model": alias}
        yield {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": answer["usage"]}

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        tokens = sum(len(t.split()) for t in texts)
        self._report(alias, "embeddings", tenant, tokens, 0)
        return self._embed(list(texts)).tolist(), tokens

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InProcessGateway:
    """``concierge serve``'s app on a free loopback port, in a thread of this process."""

    def __init__(self, args: argparse.Namespace, port: int = 0) -> None:
        self.args = args
        self.port = port

    def __enter__(self) -> InProcessGateway:
        import uvicorn

        from concierge import tenancy
        from concierge.gateway.app import create_app
        from concierge.gateway.settings import GatewaySettings
        from concierge.models.hub import ModelHub
        from concierge.server import build_demo_services, mount_all

        print(f"starting the gateway ({self.args.hub} models, demo store) ...", flush=True)
        self.hub = InstantHub() if self.args.hub == "instant" else ModelHub.from_config(None)
        settings = GatewaySettings(warm_up=True, log_requests=self.args.log_requests)
        if self.args.metering_sigkill_safe:
            settings.metering_power_safe = False
        self.app = create_app(self.hub, settings)
        services = build_demo_services(self.hub, n_products=self.args.products, n_shoppers=max(20, self.args.products // 10),
                                       warm=False)
        # Build the shop's search index now, so the run measures serving, not the first index build.
        services.shop.assistant(services.tenant, services.catalog)
        services.support.domain(services.support_domain)
        mount_all(self.app, services)
        self.args.key = tenancy.create_key(services.tenant).key
        self.args.chat_key = tenancy.create_key("load-chat").key
        if self.args.budget:
            # Limits far above what a run uses: every admitted call still claims on the shared counters.
            tenancy.set_budget("load-chat", rpm=10**9, tokens_per_day=10**12)
        port = self.port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        sockets = None
        if getattr(self.args, "reuse_port", False):  # --workers: the kernel spreads connections over the processes
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sockets = [sock]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": sockets}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the gateway did not start")
            time.sleep(0.05)
        while httpx.get(self.url + "/healthz", timeout=10).json().get("warm_up") in ("pending", "running"):
            time.sleep(0.5)
        return self

    def flush(self) -> None:
        self.app.state.usage_writer.flush(30)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.hub.close()


def serve(args: argparse.Namespace) -> int:
    """``--serve``: the in-process gateway alone, until SIGTERM; prints one ``READY {json}`` line."""
    os.environ["CONCIERGE_HOME"] = str(args.home)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from concierge import config

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    statements = Counter()

    def counted(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements[statement.split(None, 1)[0].upper() if statement.strip() else "?"] += 1

    with InProcessGateway(args, port=args.port or 0) as gateway:
        ready = {"url": gateway.url, "key": args.key, "chat_key": args.chat_key,
                 "database_url": config.database_url(), "pid": os.getpid()}
        # Statements sent to the database while serving (SQLAlchemy's, not the outbox file's).
        event.listen(Engine, "before_cursor_execute", counted)
        print("READY " + json.dumps(ready), flush=True)
        stop.wait()
        event.remove(Engine, "before_cursor_execute", counted)
        outbox = gateway.app.state.usage_writer.outbox
        stats = {"sql_statements": dict(statements), "outbox_commits": getattr(outbox, "commits", None)}
        gateway.flush()
    print("STATS " + json.dumps(stats), flush=True)
    return 0


class SpawnedGateway:
    """``--spawn``: the gateway as its own process (this script with ``--serve``), so the load client
    does not share its GIL; stopped with SIGTERM, which writes every usage row before it exits.

    ``--workers N``: N such processes on one port (SO_REUSEPORT), as ``concierge serve --workers N``
    runs them; each is started once the one before it is ready (the first prepares the store)."""

    def __init__(self, args: argparse.Namespace, home: Path) -> None:
        self.args = args
        self.home = home
        self.processes: list[Any] = []
        self.pids: list[int] = []
        self.stats: dict[str, Any] | None = None

    def __enter__(self) -> dict[str, Any]:
        import subprocess

        workers = max(1, self.args.workers)
        port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--home", str(self.home),
                   "--hub", self.args.hub, "--products", str(self.args.products), "--port", str(port)]
        if workers > 1:
            command.append("--reuse-port")
        if self.args.log_requests:
            command.append("--log-requests")
        if self.args.budget:
            command.append("--budget")
        if self.args.metering_sigkill_safe:
            command.append("--metering-sigkill-safe")
        print(f"starting {workers} gateway process(es) ({self.args.hub} models, demo store) ...", flush=True)
        first: dict[str, Any] | None = None
        for _ in range(workers):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
            self.processes.append(process)
            assert process.stdout is not None
            ready = None
            for line in process.stdout:
                if line.startswith("READY "):
                    ready = json.loads(line[len("READY "):])
                    break
                print(line, end="")
            if ready is None:
                raise SystemExit(f"a gateway process exited ({process.wait()}) before it was ready")
            self.pids.append(int(ready["pid"]))
            first = first or ready
        assert first is not None
        return {**first, "pids": list(self.pids)}

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        merged: dict[str, Any] | None = None
        for process in self.processes:
            try:
                out, _ = process.communicate(timeout=60)
            except Exception:  # noqa: BLE001
                process.kill()
                out, _ = process.communicate()
            stats = next((json.loads(line[len("STATS "):]) for line in (out or "").splitlines()
                          if line.startswith("STATS ")), None)
            if stats is None:
                continue
            if merged is None:
                merged = {"sql_statements": Counter(), "outbox_commits": 0}
            merged["sql_statements"].update(stats["sql_statements"])
            merged["outbox_commits"] = None if stats["outbox_commits"] is None or merged["outbox_commits"] is None \
                else merged["outbox_commits"] + stats["outbox_commits"]
        if merged is not None:
            merged["sql_statements"] = dict(merged["sql_statements"])
        self.stats = merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway (default: start one in this process)")
    parser.add_argument("--spawn", action="store_true",
                        help="start the gateway (as without --url) in a process of its own, not in this one")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # what --spawn starts
    parser.add_argument("--workers", type=int, default=1,
                        help="with --spawn: gateway processes sharing the port (as `concierge serve --workers`)")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)  # --serve: the port to bind
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # --serve: SO_REUSEPORT
    parser.add_argument("--key", help="API key of the tenant that owns the demo store (with --url)")
    parser.add_argument("--chat-key", help="API key used only for /v1/chat/completions, so its usage rows "
                        "can be counted (default: --key, and the usage check is skipped)")
    parser.add_argument("--chat-tenant", help="tenant of --chat-key, for the usage check (with --url)")
    parser.add_argument("--database-url", help="the gateway's database, for the check (with --url)")
    parser.add_argument("--home", type=Path,
                        help="CONCIERGE_HOME for the in-process gateway, kept (default: a temp dir, removed)")
    parser.add_argument("--products", type=int, default=500, help="demo store size (in-process)")
    parser.add_argument("--hub", choices=["default", "instant"], default="default",
                        help="in-process models: the embedded default deployment, or canned instant answers")
    parser.add_argument("--log-requests", action="store_true", help="turn the request log on (in-process)")
    parser.add_argument("--metering-sigkill-safe", action="store_true",
                        help="GatewaySettings.metering_power_safe=False: the outbox commits without fsync")
    parser.add_argument("--budget", action="store_true",
                        help="give the chat tenant a (never reached) budget, so every call claims on the shared counters")
    parser.add_argument("--requests", type=int, default=5000, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=180.0, help="stop after this many seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="conversations in flight at once")
    parser.add_argument("--rate", type=float, help="start at most this many requests per second in all "
                        "(open loop, up to --concurrency in flight); default: each worker as fast as it can")
    parser.add_argument("--mix", default="chat=2,shop=3,support=3", help="weights of chat, shop, support")
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each chat completion")
    parser.add_argument("--chat-model", default="chat", help="alias for the chat completions")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="HTTP client: a minimal keep-alive one (default, cheap) or httpx")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures and the check here")
    args = parser.parse_args(argv)
    if args.url and not args.key:
        parser.error("--url needs --key")
    if args.serve:
        return serve(args)

    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        # Keys never go into the report.
        "command": "scripts/load_test.py " + " ".join(
            "ck-..." if a.startswith("ck-") else a for a in (argv if argv is not None else sys.argv[1:])
        ),
        "concurrency": args.concurrency,
        "models": "the gateway at --url" if args.url else args.hub,
        "client": "own process" if args.url or args.spawn else "the gateway's process",
        "gateway_processes": max(1, args.workers) if args.spawn else 1,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    check = None
    if args.url:
        meta["database"] = args.database_url or "(not checked)"
        run = asyncio.run(drive(args, args.url.rstrip("/")))
        if args.database_url:
            time.sleep(3)  # the gateway writes usage rows from a background thread
            check = check_database(run, args.database_url, args.chat_tenant if args.chat_key else None)
    elif args.spawn:
        home = args.home or Path(tempfile.mkdtemp(prefix="concierge-load-"))
        try:
            spawned = SpawnedGateway(args, home)
            with spawned as ready:
                args.key, args.chat_key = ready["key"], ready["chat_key"]
                meta["database"] = ready["database_url"].split("@")[-1]
                server_cpu = sum(cpu_seconds(pid) for pid in ready["pids"])
                client_cpu = cpu_seconds()
                run = asyncio.run(drive(args, ready["url"]))
                run.cpu = {"server_s": sum(cpu_seconds(pid) for pid in ready["pids"]) - server_cpu,
                           "client_s": cpu_seconds() - client_cpu}
            run.server_stats = spawned.stats
            # The process has exited: every usage row is written.
            check = check_database(run, ready["database_url"], "load-chat")
        finally:
            if not args.home:
                shutil.rmtree(home, ignore_errors=True)
    else:
        home = args.home or Path(tempfile.mkdtemp(prefix="concierge-load-"))
        os.environ["CONCIERGE_HOME"] = str(home)
        from concierge import config

        meta["database"] = config.database_url().split("@")[-1]
        try:
            with InProcessGateway(args) as gateway:
                run = asyncio.run(drive(args, gateway.url))
                gateway.flush()
                check = check_database(run, None, "load-chat")
        finally:
            if not args.home:
                shutil.rmtree(home, ignore_errors=True)
    meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    fig = figures(run)
    print_report(fig, check, meta)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "figures": fig, "check": check,
                                         "results": [asdict(r) for r in run.results]}, indent=1))
    return 0 if check is None or check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
