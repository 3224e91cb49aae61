"""Run one gateway process over a canned hub, for tests that need several real replicas.

    python tests/helpers/launch_gateway.py PORT [--delay S] [--budget-ttl S]

The database is the one ``CONCIERGE_DATABASE_URL`` / ``CONCIERGE_HOME`` name (as in production).
The hub answers every chat with the prompt's words as prompt tokens and ``COMPLETION_TOKENS``
completion tokens after ``--delay`` seconds, and reports each call to the gateway's observer.
Loopback only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import uvicorn  # noqa: E402

from concierge.gateway.app import create_app  # noqa: E402
from concierge.gateway.settings import GatewaySettings  # noqa: E402
from concierge.models.engine import ModelNotFoundError  # noqa: E402
from concierge.models.hub import CallRecord, ModelCard  # noqa: E402

COMPLETION_TOKENS = 5
CONTEXT = 64


class CannedHub:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.observer: Callable[[CallRecord], None] | None = None
        self.cards = {"canned": ModelCard("canned", "chat", None, "fake", "/models/canned.gguf", CONTEXT)}

    def models(self) -> list[ModelCard]:
        return list(self.cards.values())

    def card(self, alias: str) -> ModelCard:
        if alias not in self.cards:
            raise ModelNotFoundError(f"The model `{alias}` does not exist.", param="model")
        return self.cards[alias]

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        time.sleep(self.delay_s)
        prompt = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
        if self.observer is not None:
            elapsed = time.perf_counter() - start
            self.observer(CallRecord(alias, "chat", tenant, prompt, COMPLETION_TOKENS, elapsed, elapsed, 200))
        return {
            "id": "chatcmpl-canned",
            "object": "chat.completion",
            "created": 0,
            "model": alias,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": prompt + COMPLETION_TOKENS,
            },
        }

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Any:
        raise NotImplementedError("the replica tests send plain chat completions only")

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> Any:
        raise NotImplementedError("the replica tests serve no embedding model")

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--budget-ttl", type=float, default=0.5)
    args = parser.parse_args()
    settings = GatewaySettings(
        max_concurrent=16, max_queued=256, budget_cache_ttl_s=args.budget_ttl, key_cache_ttl_s=300.0
    )
    app = create_app(CannedHub(args.delay), settings)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
