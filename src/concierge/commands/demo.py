"""`concierge demo`: the main job on the embedded defaults, as a new user first sees it.

Starts the gateway on loopback with the embedded default deployment (SmolLM2-135M-Instruct
on llama.cpp, all-MiniLM-L6-v2 on ONNX Runtime), creates a demo tenant and key, and
streams a chat completion through the OpenAI-compatible API.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

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
    serve: bool = typer.Option(False, help="Keep the gateway running after the demo."),
    port: int = typer.Option(0, help="Port (0 picks a free one)."),
) -> None:
    """Start the gateway on the embedded defaults and stream a chat completion through it."""
    import uvicorn

    from concierge import tenancy
    from concierge.gateway.app import create_app
    from concierge.gateway.settings import GatewaySettings
    from concierge.models.engine import ModelError
    from concierge.models.hub import ModelHub

    try:
        hub = ModelHub.from_config(config)
    except ModelError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    # An operator key: the demo shows what each alias serves, which plain API keys do not see.
    key = tenancy.create_key("demo", scope="operator").key
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
    port = port or _free_port()
    app = create_app(hub, GatewaySettings())
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
        console.print(f"[dim]usage is metered per tenant: run `concierge usage`; metrics at {base}/metrics[/dim]")
        if serve:
            console.print(f"Gateway running on {base} with key {key} (Ctrl-C to stop)")
            try:
                while thread.is_alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    server.should_exit = True
    thread.join(timeout=10)
    hub.close()
