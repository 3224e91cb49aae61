"""`concierge demo`: the main job on the embedded defaults, as a new user first sees it.

Serves the gateway and the web app on loopback with the embedded default deployment
(SmolLM2-135M-Instruct on llama.cpp, all-MiniLM-L6-v2 on ONNX Runtime) and the demo store,
then walks through the three capabilities over their HTTP APIs: a streamed chat completion,
a shopping conversation with a refinement, and a support conversation that cancels a
booking after an explicit yes. The web app stays up until Ctrl-C (``--no-serve`` exits).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from concierge.commands import stop_on_sigterm

console = Console()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo(
    prompt: str = typer.Option(
        "Suggest a name for a small shop that sells hiking gear.", help="What to ask the model."
    ),
    config: Path | None = typer.Option(None, help="Deployment config (default: embedded models)."),
    serve: bool = typer.Option(True, help="Keep the web app and gateway running after the walkthrough."),
    port: int = typer.Option(8000, help="Port (0 picks a free one)."),
    booking_service: bool = typer.Option(
        True, help="Run the home-stay bookings as their own HTTP service (a second process, reached through "
                   "its OpenAPI document), as a company's own system would be; --no-booking-service uses the "
                   "built-in homestay domain."),
) -> None:
    """Start the gateway on the embedded defaults and stream a chat completion through it."""
    with _booking_service(booking_service) as service:  # starts while the model loads
        _demo(prompt, config, serve, port, service)


@contextlib.contextmanager
def _booking_service(start: bool) -> Iterator[tuple[subprocess.Popen[bytes], str, str] | None]:
    """The booking service for the length of the demo, stopped however the demo ends: an error,
    Ctrl-C, or SIGTERM (turned into SystemExit here; its default action would end this process at
    once and leave the service running)."""
    restore = stop_on_sigterm()
    service = _start_booking_service() if start else None
    try:
        yield service
    finally:
        if service is not None:
            service[0].terminate()
            try:
                service[0].wait(10)
            except subprocess.TimeoutExpired:
                service[0].kill()
        restore()


def _start_booking_service() -> tuple[subprocess.Popen[bytes], str, str]:
    """The home-stay booking service as a subprocess on a free loopback port: (process, url, token)."""
    port = _free_port()
    token = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, "-m", "concierge.demo_services.homestay_api", "--port", str(port)],
        env={**os.environ, "HOMESTAY_API_TOKEN": token}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return process, f"http://127.0.0.1:{port}", token


def _connect_booking_service(hub: object, service: tuple[subprocess.Popen[bytes], str, str]) -> None:
    """Wait for the service, then connect it by configuration only: the deployment's ``support:`` section
    names the packaged domain folder and the service's URL; the token comes from the environment."""
    from dataclasses import replace

    process, url, token = service
    for _ in range(300):
        if process.poll() is not None:
            error = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()
            console.print(f"[red]error:[/red] the booking service exited: {error.splitlines()[-1] if error else '?'}")
            raise typer.Exit(2)
        try:
            if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    os.environ["HOMESTAY_API_TOKEN"] = token  # the domain file sends "Bearer ${HOMESTAY_API_TOKEN}"
    folder = Path(__file__).resolve().parents[1] / "demo_services" / "domains" / "homestay-http"
    support = {
        "domains": {"homestay-http": {"path": str(folder), "connectors": {"bookings": {"base_url": url}}}},
        "tenants": {"demo": "homestay-http"},
    }
    hub.deployment = replace(hub.deployment, support=support)  # type: ignore[attr-defined]


def _demo(prompt: str, config: Path | None, serve: bool, port: int,
          service: tuple[subprocess.Popen[bytes], str, str] | None) -> None:
    import uvicorn

    from concierge import tenancy
    from concierge.gateway.settings import GatewaySettings
    from concierge.models.engine import ModelError
    from concierge.models.hub import ModelHub
    from concierge.server import build_app

    try:
        hub = ModelHub.from_config(config)
    except ModelError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    # An operator key: the demo shows what each alias serves, which plain API keys do not see.
    key = tenancy.create_key("demo", scope="operator").key
    # Support writes persist; the walkthrough cancels a booking, so each demo starts from the
    # generated home-stay data again.
    from concierge.support.session import reset_domain_writes

    reset_domain_writes("demo", "homestay")
    chat_alias = next((card.alias for card in hub.models() if card.kind == "chat"), None)
    if chat_alias is None:
        console.print("[red]error:[/red] the deployment has no chat model")
        raise typer.Exit(2)
    with console.status(f"Loading {chat_alias} (llama.cpp, in-process) ..."):
        try:
            hub.warm_up(chat_alias)
        except ModelError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from None
    if service is not None:
        with console.status("Connecting the home-stay booking service ..."):
            _connect_booking_service(hub, service)
    port = port or _free_port()
    from concierge.server import build_demo_services

    with _FirstStart(console) as progress:
        services = build_demo_services(hub, progress=progress)
        for thread in services.warmers:  # the shop's first index; the rest embeds in the background
            thread.join()
    app = build_app(hub, GatewaySettings(), web=True, services=services)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        for _ in range(300):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        console.rule(f"concierge gateway on {base}")
        models = client.get("/v1/models").json()["data"]
        table = Table("alias", "engine", "serves", "context")
        for card in models:
            table.add_row(card["id"], card.get("engine", ""), str(card.get("source", "")), str(card.get("context_length", "")))
        console.print(table)
        console.print(f"[bold]POST /v1/chat/completions[/bold] model={chat_alias} stream=true")
        console.print(f"[cyan]user:[/cyan] {prompt}")
        console.print("[cyan]assistant:[/cyan] ", end="")
        body = {
            "model": chat_alias,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 96,
            "seed": 7,
        }
        started = time.perf_counter()
        first: float | None = None
        usage: dict = {}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    console.print(f"\n[red]error:[/red] {chunk['error']['message']}")
                    break
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content") or ""
                    if text and first is None:
                        first = time.perf_counter() - started
                    console.print(text, end="", highlight=False, markup=False)
                usage = chunk.get("usage") or usage
        elapsed = time.perf_counter() - started
        console.print()
        if usage:
            rate = usage.get("completion_tokens", 0) / elapsed if elapsed else 0.0
            ttft = f"{first * 1000:.0f} ms" if first is not None else "n/a"
            console.print(
                f"[dim]{usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion tokens, "
                f"time to first token {ttft}, {rate:.0f} tokens/s end to end[/dim]"
            )
        embed_alias = next((m["id"] for m in models if m.get("kind") == "embeddings"), None)
        if embed_alias:
            emb = client.post("/v1/embeddings", json={"model": embed_alias, "input": ["trail running shoes", "hiking boots"]})
            vectors = [item["embedding"] for item in emb.json()["data"]]
            cosine = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
            console.print(f"[bold]POST /v1/embeddings[/bold] model={embed_alias}: {len(vectors[0])} dims, cosine(trail running shoes, hiking boots) = {cosine:.2f}")
        _shop_walkthrough(client)
        _support_walkthrough(client, service[1] if service is not None else None)
        console.rule("web app")
        console.print(f"shop       {base}/\nsupport    {base}/support\nconsole    {base}/console  (operator key: {key})")
        if service is not None:
            console.print(f"bookings   {service[1]}/docs  (the home-stay booking service, its own process)")
        console.print(f"[dim]the same key works for the OpenAI API at {base}/v1; usage: `concierge usage`[/dim]")
        if serve:
            console.print("Serving; Ctrl-C stops.")
            try:
                while thread.is_alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    server.should_exit = True
    thread.join(timeout=10)
    # The rest of a first start's search index may still be embedding: stop it before the models go.
    from concierge.server import close_services

    close_services(app)
    hub.close()


class _FirstStart:
    """A rich progress bar for what a first start prepares: the demo store and its search index.

    ``progress(phase, done, total)`` comes from the server's builders (some from a worker thread;
    rich's Progress is thread-safe). The background ``completing`` phase is not drawn: the bar
    closes once the shop can answer, and the walkthrough's output follows.
    """

    LABELS = {
        "generating": "generating the demo store",
        "writing": "writing the catalogue",
        "embedding": "embedding products for search (a few seconds; the rest in the background)",
    }

    def __init__(self, out: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=out, transient=False,
        )
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> _FirstStart:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.LABELS:
            return
        task = self.tasks.get(phase)
        if task is None:
            task = self.tasks[phase] = self.bar.add_task(self.LABELS[phase], total=total)
        self.bar.update(task, completed=done, total=total)  # type: ignore[arg-type]


def _shop_walkthrough(client: httpx.Client) -> None:
    console.rule("shopping assistant: POST /v1/shop/chat")
    turns = ["I need a tent for camping under $300", "cheaper"]
    conversation = None
    for text in turns:
        with console.status("Waiting for the shop (the first start embeds the demo catalogue) ..."):
            for _ in range(1200):
                response = client.post("/v1/shop/chat", json={"message": text, "conversation_id": conversation})
                if response.status_code != 503:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code != 200:
            console.print(f"[red]shop error {response.status_code}:[/red] {response.json()['error']['message']}")
            return
        answer = response.json()
        conversation = answer["conversation_id"]
        console.print(f"[cyan]shopper:[/cyan] {text}")
        query = {k: v for k, v in (answer.get("query") or {}).items() if v not in (None, [], {}, "")}
        console.print(f"[dim]structured query: {json.dumps(query)}[/dim]")
        table = Table("variant", "title", "price", "reason")
        for product in answer["products"]:
            table.add_row(product["id"], product["title"], f"{product['price']:.2f}", product.get("reason", ""))
        console.print(table)
        console.print(f"[cyan]assistant:[/cyan] {answer['message']}")


def _support_walkthrough(client: httpx.Client, booking_service: str | None = None) -> None:
    if booking_service:
        console.rule("support agent: POST /v1/support/chat (bookings in the home-stay service, guided mode)")
        console.print(f"[dim]domain homestay-http: its tools are the operations of {booking_service}/openapi.json, "
                      "a separate process; writes carry an Idempotency-Key and are audited in the console[/dim]")
    else:
        console.rule("support agent: POST /v1/support/chat (home-stay demo domain, guided mode)")
    turns = [
        "Hi, I want to cancel my Lisbon stay, reservation HS10001, because my plans changed.",
        "My email is maya.okafor@example.com",
        "How much will I get back?",
    ]
    conversation = None
    turn: dict = {}
    while turns:
        text = turns.pop(0)
        body = {"message": text, "conversation_id": conversation}
        if not booking_service:
            body["domain"] = "homestay"
        response = client.post("/v1/support/chat", json=body)  # else the tenant's configured domain
        if response.status_code != 200:
            console.print(f"[red]support error {response.status_code}:[/red] {response.json()['error']['message']}")
            return
        turn = response.json()
        conversation = turn["conversation_id"]
        console.print(f"[cyan]customer:[/cyan] {text}")
        for action in turn.get("actions") or []:
            args = json.dumps(action.get("arguments") or {})
            outcome = "ok" if action.get("ok") else "refused" if action.get("refused") else "error"
            console.print(f"[dim]  {action.get('kind', '')} tool {action.get('tool')}({args}): {outcome}[/dim]")
        console.print(f"[cyan]agent:[/cyan] {turn['message']}")
        if not turns and turn.get("confirm") and text != "yes":
            turns.append("yes")  # the agent asked to confirm the change: the customer agrees
