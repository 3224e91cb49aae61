"""Fixtures of the gateway tests: a home with its own database, tenants' keys, and the real hub
(a tiny random Qwen2 GGUF on llama.cpp, MiniLM embeddings, an upstream alias at a closed port)
behind a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from concierge import tenancy
from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from concierge.store import db
from helpers.server import LiveServer
from helpers.server import free_port as _free_port


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("gateway-home")
        mp.setenv("CONCIERGE_HOME", str(path))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        db.reset_engines()
        yield path
    db.reset_engines()


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    return {
        "acme": tenancy.create_key("acme").key,
        "globex": tenancy.create_key("globex").key,
        "ops": tenancy.create_key("ops", "operator").key,
    }


@pytest.fixture(scope="module")
def real_live(home: Path, keys: dict[str, str], tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    from concierge.models import hub as hub_module

    if not hasattr(getattr(hub_module, "ModelHub", None), "from_config"):
        pytest.skip("concierge.models.hub.ModelHub.from_config is not available")
    closed_port = _free_port()  # nothing listens there once the probe socket is closed
    config = tmp_path_factory.mktemp("deployment") / "deployment.yaml"
    config.write_text(
        "models:\n"
        f"  tiny: {{model: qwen2.5-0.5b-instruct, gguf: {tiny_gguf}, n_ctx: 1024, n_parallel: 1}}\n"
        "  embed: {model: all-minilm-l6-v2, embedded: minilm}\n"
        f"  remote: {{model: qwen2.5-0.5b-instruct, url: 'http://127.0.0.1:{closed_port}/v1', timeout: 5}}\n"
    )
    real_hub = hub_module.ModelHub.from_config(config)
    try:
        with LiveServer(create_app(real_hub, GatewaySettings())) as server:
            yield server
    finally:
        real_hub.close()


@pytest.fixture(scope="module")
def real_client(real_live: LiveServer) -> openai.OpenAI:
    key = tenancy.create_key("initech").key  # its own tenant: usage counts stay separate
    return openai.OpenAI(base_url=real_live.url + "/v1", api_key=key, max_retries=0, timeout=60)
