"""Property-based fuzzing of the gateway with schemathesis: no input may produce a 5xx.

The app's own OpenAPI document lists the routes but not their bodies (the handlers read the raw
request so they can answer OpenAI-style errors), so the request models from
``concierge.gateway.{chat,embeddings}.protocol`` are added as request bodies before fuzzing. Cases run against a live
server on loopback over the fake hub of test_gateway, reduced to the aliases that answer normally
(its ``boom``/``down``/``flaky`` aliases fail on purpose). Needs ``schemathesis`` (skipped without it).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the gateway")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from concierge import tenancy  # noqa: E402
from concierge.gateway.app import create_app  # noqa: E402
from concierge.gateway.chat.protocol import ChatCompletionRequest  # noqa: E402
from concierge.gateway.embeddings.protocol import EmbeddingRequest  # noqa: E402
from concierge.gateway.settings import GatewaySettings  # noqa: E402
from concierge.store import db  # noqa: E402
from helpers.hubs import GatewayHub as FakeHub  # noqa: E402  (tests/ is on sys.path under pytest)
from helpers.server import LiveServer  # noqa: E402

ALIASES = ("tiny", "embed")
MAX_EXAMPLES = 40


def _body_schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema(ref_template="#/components/schemas/{model}"))
    components.update(schema.pop("$defs", {}))
    props = schema["properties"]
    # Served aliases, so valid cases reach the hub (unknown names: the path operation and negative cases).
    props["model"] = {"enum": list(ALIASES)}
    if "n" in props:  # the gateway serves one choice; the model says only ge=1
        props["n"] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1}, {"type": "null"}]}
    return schema


def _openapi(app: Any) -> dict[str, Any]:
    spec = copy.deepcopy(app.openapi())
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, model in (("/v1/chat/completions", ChatCompletionRequest), ("/v1/embeddings", EmbeddingRequest)):
        spec["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(model, components)}},
        }
    return spec


class QuickHub(FakeHub):
    def __init__(self) -> None:
        super().__init__()
        self.cards = {alias: self.cards[alias] for alias in ALIASES}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(tmp_path_factory.mktemp("fuzz-home")))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        db.reset_engines()
        yield Path()
    db.reset_engines()


@pytest.fixture(scope="module")
def live(home: Path) -> Iterator[LiveServer]:
    app = create_app(QuickHub(), GatewaySettings(max_body_bytes=64 * 1024))
    with LiveServer(app) as server:
        server.key = tenancy.create_key("fuzz").key  # type: ignore[attr-defined]
        yield server


def _operations() -> list[Any]:
    spec = schemathesis.openapi.from_dict(_openapi(create_app(QuickHub())))
    return [result.ok() for result in spec.get_all_operations()]


OPERATIONS = _operations()
# Negative (schema-violating) cases only where there is a body to violate.
CASES = [(op, schemathesis.GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, schemathesis.GenerationMode.NEGATIVE) for op in OPERATIONS if op.method.upper() == "POST"
]


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label} {m.value}" for op, m in CASES])
def test_no_input_gives_a_server_error(operation: Any, mode: Any, live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}  # type: ignore[attr-defined]
    checked: list[int] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run: a failure here is reproducible
        database=None,
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        response = case.call(base_url=live.url, headers=headers, timeout=20)
        where = f"{case.method} {case.path} body={str(case.body)[:200]!r}"
        assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
        if case.path.startswith("/v1") and response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], where
        checked.append(response.status_code)

    run()
    assert checked  # cases were generated and sent
    if mode == schemathesis.GenerationMode.POSITIVE and operation.method.upper() == "POST":
        assert 200 in checked  # valid cases got past validation to the hub, not only 4xx


def test_server_survives_the_fuzzing(live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}  # type: ignore[attr-defined]
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "still there?"}]},
        headers=headers,
        timeout=20,
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
