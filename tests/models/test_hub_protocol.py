"""The Hub protocol layers (ChatHub < ServingHub < Hub): ModelHub, the tests' shared fake hubs, as_hub."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from concierge.models.deployment import Deployment, parse_deployment
from concierge.models.engine import (
    BadRequestError,
    ChatHub,
    EngineInfo,
    Hub,
    ModelNotFoundError,
    Roles,
    ServingHub,
)
from concierge.models.hub import CallRecord, HubAdapter, ModelCard, ModelHub, as_hub
from helpers.hubs import GatewayHub, ScriptedHub, ShopHub


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))


class _Engine:
    def __init__(self, spec: Any) -> None:
        self.info = EngineInfo(kind="fake", model="fake", context_length=512, capabilities={"chat", "embeddings"})

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    def stream_chat(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0] for _ in texts], len(texts)

    def close(self) -> None:
        pass


CONFIG = {
    "models": {
        "chatty": {"gguf": "/models/x.gguf"},
        "vec": {"url": "http://127.0.0.1:9/v1", "served_name": "m", "kind": "embeddings"},
    },
    "defaults": {"support": "chatty"},
}


def test_model_hub_is_a_hub_and_its_deployment_names_roles() -> None:
    hub = ModelHub(parse_deployment(CONFIG), engine_factory=_Engine)
    assert isinstance(hub, Hub) and isinstance(hub, ServingHub) and isinstance(hub, ChatHub)
    assert isinstance(hub.deployment, Roles)
    assert hub.deployment.default("support") == "chatty"
    assert hub.deployment.default("shop") == "shop"  # unset: the role's own name, as before
    assert hub.deployment.role("support") == "chatty"
    assert hub.deployment.role("shop") is None
    assert hub.deployment.role("shop", "shop-assistant") == "shop-assistant"
    assert as_hub(hub) is hub
    hub.close()


def test_the_default_deployment_configures_the_three_roles() -> None:
    hub = ModelHub.from_config(None, include_registry=False)
    assert {r: hub.deployment.role(r) for r in ("support", "shop", "embed")} == {
        "support": "support-agent", "shop": "shop-assistant", "embed": "embed"
    }
    # The embedded 135M model does not write shop answers (chosen on the dev half, docs/benchmarks.md),
    # and still shares its one engine with the other chat aliases.
    assert hub.card("shop-assistant").answer_model == "never" and hub.card("chat").answer_model == "always"
    specs = hub.deployment.aliases
    assert specs["shop-assistant"].engine_key() == specs["chat"].engine_key()
    hub.close()


def test_an_empty_deployment_has_no_roles() -> None:
    assert Deployment(aliases={}).role("embed") is None


class _BareChat:
    """A fake with ``chat`` only (the shape of the guided-mode tests' JSON hubs)."""

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return {"choices": [{"message": {"role": "assistant", "content": "{}"}}]}


# The shared fakes of tests/helpers, as the test modules configure them.
SERVING_FAKES: dict[str, Callable[[], Any]] = {
    "gateway-hub": lambda: GatewayHub(),
    "shop-hub": lambda: ShopHub(),
    "scripted-hub": lambda: ScriptedHub(cards=["tiny", "embed"]),
    "scripted-hub-with-roles": lambda: ScriptedHub(roles={"shop": "shop-assistant"}, embed_dim=384),
}
# Code that takes a bare ChatHub: a ScriptedHub seen through ``chat_only()`` (configured as the
# train, support-agent, support-eval, knowledge and shop-assistant tests configure it) or a bare fake.
CHAT_ONLY_FAKES: dict[str, Callable[[], Any]] = {
    "train-teacher": lambda: ScriptedHub({"content": "x"}, usage=None).chat_only(),
    "support-agent": lambda: ScriptedHub(default="Is there anything else I can help you with?").chat_only(),
    "bare-chat": _BareChat,
    "support-eval-echo": lambda: ScriptedHub("hi", usage={"prompt_tokens": 7, "completion_tokens": 3}).chat_only(),
    "knowledge-citing": lambda: ScriptedHub(default="", usage=None).chat_only(),
    "shop-assistant": lambda: ScriptedHub(structured="{}", roles={"shop": "shop-assistant"}).chat_only(),
}


@pytest.mark.parametrize("name", list(SERVING_FAKES))
def test_serving_fakes_are_serving_hubs_and_as_hub_completes_them(name: str) -> None:
    pytest.importorskip("fastapi")
    fake = SERVING_FAKES[name]()
    assert isinstance(fake, ServingHub)
    assert not isinstance(fake, Hub)  # no open_stream/observers/...: as_hub fills them in
    hub = as_hub(fake)
    assert isinstance(hub, HubAdapter) and isinstance(hub, Hub)
    assert isinstance(hub.deployment, Roles)


@pytest.mark.parametrize("name", list(CHAT_ONLY_FAKES))
def test_chat_only_fakes_are_chat_hubs(name: str) -> None:
    fake = CHAT_ONLY_FAKES[name]()
    assert isinstance(fake, ChatHub)
    assert not isinstance(fake, ServingHub)
    with pytest.raises(TypeError, match="not a model hub"):
        as_hub(fake)


class _Serving:
    """A minimal serving hub with one ``observer`` slot (like the gateway's fake)."""

    def __init__(self) -> None:
        self.observer: Any = None
        self.calls: list[str] = []
        self.card_ = ModelCard("tiny", "chat", None, "fake", "/m.gguf", 64)

    def chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        self.calls.append(f"chat:{alias}:{request.get('max_tokens')}")
        if self.observer is not None:
            self.observer(CallRecord(alias=alias, endpoint="chat", tenant=tenant))
        return {"choices": []}

    def stream_chat(self, alias: str, request: dict[str, Any], tenant: str | None = None) -> Iterator[dict]:
        return iter([{"choices": [{"index": 0, "delta": {"content": "x"}}]}])

    def embed(self, alias: str, texts: list[str], tenant: str | None = None) -> tuple[list[list[float]], int]:
        self.calls.append(f"embed:{alias}")
        return [[1.0]], 1

    def models(self) -> list[ModelCard]:
        return [self.card_]

    def card(self, alias: str) -> ModelCard:
        if alias != "tiny":
            raise ModelNotFoundError(alias)
        return self.card_

    def close(self) -> None:
        self.calls.append("close")


def test_adapter_defaults() -> None:
    inner = _Serving()
    first: list[CallRecord] = []
    inner.observer = first.append
    hub = as_hub(inner)
    assert hub.deployment.role("shop", "shop-assistant") == "shop-assistant"
    assert hub.deployment.default("shop") == "shop"
    stream, pushed = hub.open_stream("tiny", {"messages": []})
    assert pushed is False and next(stream)["choices"][0]["delta"]["content"] == "x"
    assert hub.loaded() == []
    hub.warm_up("tiny")
    assert inner.calls == ["chat:tiny:1"]
    with pytest.raises(ModelNotFoundError):
        hub.spec("tiny")
    with pytest.raises(BadRequestError):
        hub.register("new", {"gguf": "/x.gguf"})

    seen: list[CallRecord] = []
    hub.add_observer(seen.append)
    hub.chat("tiny", {})
    assert len(seen) == 1 and len(first) == 2  # the observer already there still hears every call
    hub.remove_observer(seen.append)
    assert inner.observer == first.append
    hub.chat("tiny", {})
    assert len(seen) == 1 and len(first) == 3
    assert hub.calls is inner.calls  # other attributes read through
    hub.close()
    assert inner.calls[-1] == "close"


def test_adapter_keeps_a_fake_deployment_with_only_default() -> None:
    from types import SimpleNamespace

    inner = _Serving()
    inner.deployment = SimpleNamespace(default=lambda role: {"shop": "shop-assistant"}.get(role, role))  # type: ignore[attr-defined]
    hub = as_hub(inner)
    assert hub.deployment.default("shop") == "shop-assistant"
    assert hub.deployment.role("shop") == "shop-assistant"


def test_adapter_uses_the_inner_hubs_own_methods() -> None:
    inner = ModelHub(parse_deployment(CONFIG), engine_factory=_Engine)
    hub = HubAdapter(inner)  # as_hub would return inner itself; the adapter must still delegate
    assert hub.deployment is inner.deployment
    hub.warm_up("chatty")
    assert hub.loaded() == inner.loaded() == ["chatty"]
    assert hub.spec("chatty").alias == "chatty"
    records: list[CallRecord] = []
    hub.add_observer(records.append)
    hub.chat("chatty", {"messages": [{"role": "user", "content": "x"}]})
    assert [r.alias for r in records] == ["chatty"]
    hub.remove_observer(records.append)
    hub.close()


def test_adapter_copies_without_recursion() -> None:
    import copy

    hub = as_hub(_Serving())
    clone = copy.copy(hub)
    assert clone.models() == hub.models()
