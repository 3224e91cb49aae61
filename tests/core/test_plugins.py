"""The plugin door: a real outside package (tests/fixtures/acme_plugin) installed with pip adds an
engine, a support domain, a recommender, a chat format and a CLI command; the built-ins, which
register through the same hooks, resolve exactly as they did before; broken plugins are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer

from concierge import plugins
from concierge.models.chat_format import ChatFormat
from concierge.models.deployment import DeploymentError, parse_deployment
from concierge.models.engine import EngineInfo, EngineUnavailableError, ModelFileMissingError
from concierge.models.formats import family_formats, parse_message, resolve_format
from concierge.models.hub import ModelHub, build_engine
from concierge.plugins import PluginError, hookimpl
from concierge.shop.recommend import make_model, model_names
from helpers.paths import FIXTURES, ROOT

FIXTURE = FIXTURES / "acme_plugin"
SRC = ROOT / "src"


# --------------------------------------------------------------------------- the outside package


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme-concierge installed for real (pip, from a copy so the fixture folder stays clean)."""
    work = tmp_path_factory.mktemp("acme")
    shutil.copytree(
        FIXTURE, work / "pkg", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
         "--no-deps", "--no-build-isolation", "--target", str(target), str(work / "pkg")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


def _env(site: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONCIERGE_BLOCK_PLUGINS", "CONCIERGE_CONFIG")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(SRC)])
    env["CONCIERGE_HOME"] = str(home)
    return env


def _run(site: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=_env(site, home), capture_output=True, text=True, timeout=180
    )


def test_plugins_command_lists_the_outside_plugin_and_the_builtins(acme_site: Path, tmp_path: Path) -> None:
    proc = _run(acme_site, tmp_path, "-m", "concierge.cli", "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {item["name"]: item for item in json.loads(proc.stdout)["plugins"]}
    acme = listed["acme"]
    assert (acme["package"], acme["version"], acme["builtin"]) == ("acme-concierge", "0.1.0", False)
    assert acme["engines"] == ["acme-echo"]
    assert acme["domains"] == ["acme-orders"]
    assert acme["recommenders"] == ["acme-newest"]
    assert acme["chat_formats"] == ["acme-think"]
    assert acme["commands"] == ["acme-hello"]
    assert {"llama.cpp", "openai-upstream", "onnx-embedding"} <= set(
        listed["concierge.models.plugin"]["engines"]
    )
    assert {"retail", "airline", "homestay"} <= set(listed["concierge.support.plugin"]["domains"])
    assert "serve" in listed["concierge.commands.plugin"]["commands"]
    assert "plugins" in listed["concierge.commands.plugin"]["commands"]
    assert list(listed)[:4] == list(plugins.DEFAULT_PLUGINS)  # built-ins first

    text = _run(acme_site, tmp_path, "-m", "concierge.cli", "plugins")
    assert text.returncode == 0 and "acme (acme-concierge 0.1.0)" in text.stdout
    assert "engines: acme-echo" in text.stdout


def test_the_plugin_command_runs(acme_site: Path, tmp_path: Path) -> None:
    proc = _run(acme_site, tmp_path, "-m", "concierge.cli", "acme-hello", "Bob")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Hello Bob, from ACME's concierge plugin"


def test_engine_domain_recommender_and_format_of_the_outside_plugin(acme_site: Path, tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text(
        textwrap.dedent(
            """\
            models:
              orders-bot: {engine: acme-echo, options: {greeting: "Hi from ACME"}}
              embed: {embedded: minilm}
            defaults: {support: orders-bot}
            """
        ),
        encoding="utf-8",
    )
    script = textwrap.dedent(
        """\
        import json, sys
        import numpy as np
        from concierge.evals.recsys import Interactions, leave_last_out
        from concierge.models.formats import parse_message
        from concierge.models.hub import ModelHub
        from concierge.shop.recommend import make_model, model_names, recommend
        from concierge.support.domains import load_domain
        from concierge.support.toolkit import ToolError

        out = {}
        hub = ModelHub.from_config(sys.argv[1], include_registry=False)
        request = {"messages": [{"role": "user", "content": "where is A-1001?"}]}
        out["chat"] = hub.chat("orders-bot", request)["choices"][0]["message"]["content"]
        chunks = list(hub.stream_chat("orders-bot", request))
        out["stream"] = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        out["usage"] = chunks[-1]["usage"]["completion_tokens"]
        card = hub.card("orders-bot")
        out["card"] = [card.engine, card.source]
        hub.close()

        domain = load_domain("acme-orders")
        out["tools"] = [t["function"]["name"] for t in domain.openai_tools()]
        out["order"] = domain.call("get_order", {"order_id": "a-1002"})["status"]
        try:
            domain.call("get_order", {"order_id": "A-9"})
        except ToolError as exc:
            out["missing"] = exc.message

        model = make_model("acme-newest", epochs=1, seed=0)
        users = np.array([1, 1, 1, 2, 2, 2]); items = np.array([10, 11, 12, 10, 12, 13])
        split = leave_last_out(Interactions(users, items, np.arange(6)))
        model.fit(split)
        out["recommend"] = recommend(model, [0], k=2)
        out["names"] = model_names()[-1]
        out["parsed"] = parse_message("<think>plan</think>Done.", "acme-think")
        print(json.dumps(out))
        """
    )
    proc = _run(acme_site, tmp_path, "-c", script, str(tmp_path / "deployment.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["chat"] == "Hi from ACME: where is A-1001?"
    assert out["stream"] == out["chat"] and out["usage"] == 6
    assert out["card"] == ["acme-echo", "acme-echo:orders-bot"]
    assert out["tools"] == ["get_order"]
    assert out["order"] == "processing"
    assert out["missing"] == "Order A-9 not found"
    assert out["recommend"] == [3, 2]  # the newest items first, item 0 (in the history) left out
    assert out["names"] == "acme-newest"
    assert out["parsed"] == {"role": "assistant", "content": "Done.", "reasoning_content": "plan"}


def test_deployment_check_names_the_alias_and_the_engine(acme_site: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  bot: {engine: acme-echo}\n", encoding="utf-8")
    ok = _run(acme_site, tmp_path, "-m", "concierge.cli", "models", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "engine:acme-echo" in ok.stdout

    typo = tmp_path / "typo.yaml"
    typo.write_text("models:\n  bot: {engine: acme-ecko}\n", encoding="utf-8")
    bad = _run(acme_site, tmp_path, "-m", "concierge.cli", "models", "check", str(typo))
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"{typo}: alias 'bot': engine 'acme-ecko' is not registered (did you mean 'acme-echo'? known: acme-echo)"
    )


# --------------------------------------------------------------------------- broken outside plugins


def _fake_install(site: Path, name: str, module_source: str) -> None:
    """A minimal installed distribution (dist-info with an entry point) whose plugin is ``module_source``."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[concierge]\nbroken = {name}_plugin\n", encoding="utf-8")
    (site / f"{name}_plugin.py").write_text(textwrap.dedent(module_source), encoding="utf-8")


BROKEN = {
    "import": (
        "import acme_sdk_not_installed\n",
        ["'broken'", "acme_sdk_not_installed", "CONCIERGE_BLOCK_PLUGINS"],
    ),
    "hook-typo": (
        """\
        from concierge.plugins import hookimpl

        @hookimpl
        def register_engine(register):
            register("x", object)
        """,
        ["'broken'", "register_engine", "register_engines"],
    ),
    "duplicate": (
        """\
        from concierge.plugins import hookimpl

        @hookimpl
        def register_engines(register):
            register("llama.cpp", object)
        """,
        ["engine 'llama.cpp' is registered twice (by concierge.models.plugin and by broken)"],
    ),
    "raises": (
        """\
        from concierge.plugins import hookimpl

        @hookimpl
        def register_recommenders(register):
            raise RuntimeError("licence server unreachable")
        """,
        ["plugin 'broken' failed in register_recommenders: RuntimeError: licence server unreachable"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_not_a_traceback(case: str, tmp_path: Path) -> None:
    source, expected = BROKEN[case]
    site = tmp_path / "site"
    site.mkdir()
    _fake_install(site, "broken_acme", source)
    proc = _run(site, tmp_path, "-m", "concierge.cli", "plugins")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in expected:
        assert fragment in lines[0]
    if case == "import":  # the way out the message offers works
        env = _env(site, tmp_path) | {"CONCIERGE_BLOCK_PLUGINS": "broken"}
        ok = subprocess.run(
            [sys.executable, "-m", "concierge.cli", "plugins"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert ok.returncode == 0 and "broken" not in ok.stdout


# --------------------------------------------------------------------------- in-process registry


class _Plugin:
    """A plugin object registered at run time; each test gives it the hooks it needs."""

    def __init__(self, **hooks: Any) -> None:
        for name, fn in hooks.items():
            setattr(self, name, hookimpl(fn))


@pytest.fixture
def with_plugin():
    added: list[str] = []

    def add(name: str, **hooks: Any) -> None:
        plugins.register_plugin(_Plugin(**hooks), name)
        added.append(name)

    yield add
    for name in added:
        plugins.unregister_plugin(name)


def test_a_name_registered_twice_names_both_plugins(with_plugin) -> None:
    with_plugin("dup-test", register_recommenders=lambda register: register("pop", object))
    with pytest.raises(PluginError, match=r"recommender 'pop' is registered twice \(by "
                       r"concierge\.shop\.recommend\.plugin and by dup-test\)"):  # fmt: skip
        make_model("pop")


def test_a_command_registered_twice_names_both_plugins(with_plugin) -> None:
    def hello() -> None:
        """Shadow the gateway."""

    with_plugin("dup-cli", register_commands=lambda cli: cli.command("serve")(hello))
    with pytest.raises(
        PluginError,
        match=r"command 'serve' is registered twice \(by concierge\.commands\.plugin and by dup-cli\)",
    ):
        plugins.add_commands(typer.Typer())


class _Canned:
    """An engine for the hub tests: counts how many were built."""

    built: list[dict[str, Any]] = []

    def __init__(self, spec: Any, options: dict[str, Any]) -> None:
        self.options = options
        self.info = EngineInfo(kind="canned", model="canned", capabilities={"chat"})
        _Canned.built.append(options)

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        text = f"{self.options.get('say', 'ok')} <think>thought</think>"
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}], "usage": {}}

    def stream_chat(self, request: dict[str, Any]):
        yield {"choices": [], "usage": {}}

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[1.0] for _ in texts], len(texts)

    def close(self) -> None:
        pass


def test_engine_aliases_share_an_engine_per_engine_and_options(with_plugin) -> None:
    with_plugin("canned-test", register_engines=lambda register: register("canned", _Canned))
    _Canned.built.clear()
    deployment = parse_deployment(
        {
            "models": {
                "a": {"engine": "canned", "options": {"say": "one"}},
                "b": {"engine": "canned", "options": {"say": "one"}},
                "c": {"engine": "canned", "options": {"say": "two"}},
                "q": {"engine": "canned", "model": "qwen3-4b"},
            }
        }
    )
    hub = ModelHub(deployment)
    say = {a: hub.chat(a, {"messages": [{"role": "user", "content": "hi"}]}) for a in "abcq"}
    assert [say[a]["choices"][0]["message"]["content"].split()[0] for a in "abc"] == ["one", "one", "two"]
    assert _Canned.built == [{"say": "one"}, {"say": "two"}, {}]
    # Like an upstream, a plugin engine's raw tags are parsed for the alias's catalogue family.
    assert say["q"]["choices"][0]["message"]["reasoning_content"] == "thought"
    assert hub.card("a").engine == "canned" and hub.card("q").context_length == 32768
    hub.close()


def test_an_engine_factory_that_returns_no_engine_is_named(with_plugin) -> None:
    with_plugin("junk-test", register_engines=lambda register: register("junk", lambda spec, options: "text"))
    spec = parse_deployment({"models": {"j": {"engine": "junk"}}}).aliases["j"]
    with pytest.raises(
        EngineUnavailableError, match=r"alias 'j': engine 'junk' from plugin junk-test returned a str"
    ):
        build_engine(spec)


def test_a_hook_that_raises_is_a_plugin_error_naming_it(with_plugin) -> None:
    from concierge.support.domains import load_domain

    def boom(register: Any) -> None:
        raise RuntimeError("boom")

    with_plugin("boom-test", register_domains=boom)
    with pytest.raises(
        PluginError, match=r"plugin 'boom-test' failed in register_domains: RuntimeError: boom"
    ):
        load_domain("homestay")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"engine": "nope"}, "alias 'x': engine 'nope' is not registered (no plugin has registered one"),
        ({"engine": "llama.cpp"}, "alias 'x': engine 'llama.cpp' is built in: use gguf: or embedded: smollm2"),
        ({"engine": "openai-upstream"}, "engine 'openai-upstream' is built in: use url:"),
        ({"engine": "cannned"}, "did you mean 'canned'? known: canned"),
        ({"gguf": "m.gguf", "options": {"a": 1}}, "alias 'x': options only applies to engine: sources"),
        ({"engine": "canned", "options": ["a"]}, "alias 'x': options must be a mapping"),
        ({"engine": "canned", "n_ctx": 8}, "alias 'x': n_ctx only applies to gguf and embedded sources; give engine"),
        ({"engine": "canned", "timeout": 8}, "alias 'x': timeout only applies to url sources"),
        ({"engine": "canned", "url": "http://h/v1"}, "needs exactly one source: gguf (a file), url (an upstream), "
                                                       "embedded or engine (a plugin's engine); found url and engine"),
        ({}, "or engine (a plugin's engine); found none"),
    ],
)  # fmt: skip
def test_engine_sources_are_validated_in_one_line(raw: dict[str, Any], message: str, with_plugin) -> None:
    if "canned" in str(raw) or "cannned" in str(raw):
        with_plugin("canned-test", register_engines=lambda register: register("canned", _Canned))
    with pytest.raises(DeploymentError) as info:
        parse_deployment({"models": {"x": raw}})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_plugin_engine_settings_pass_through(with_plugin) -> None:
    with_plugin("canned-test", register_engines=lambda register: register("canned", _Canned))
    spec = parse_deployment(
        {
            "models": {
                "x": {
                    "engine": "canned",
                    "options": {"nested": {"k": [1, 2]}},
                    "context_length": 9,
                    "kind": "embeddings",
                }
            }
        }
    ).aliases["x"]
    assert (spec.source, spec.engine_kind, spec.kind, spec.context_length) == (
        "engine",
        "canned",
        "embeddings",
        9,
    )
    assert spec.options == {"nested": {"k": [1, 2]}} and spec.source_label == "engine:canned"
    assert spec.missing_files() == []


# --------------------------------------------------------------------------- built-ins resolve as before

# The family table formats.py held before it moved into models/plugin.py.
OLD_FAMILY_FORMATS = {
    "qwen3": ChatFormat("think-tags", "hermes"),
    "qwen3.5": ChatFormat("think-tags", "qwen3-coder"),
    "qwen2.5": ChatFormat("none", "hermes"),
    "deepseek-r1": ChatFormat("think-prefilled", "deepseek"),
    "deepseek-r1-distill": ChatFormat("think-prefilled", "none"),
    "deepseek-v3": ChatFormat("think-tags", "deepseek"),
    "kimi-k2": ChatFormat("think-tags", "kimi"),
    "glm": ChatFormat("think-tags", "glm"),
    "minimax-m1": ChatFormat("think-tags", "minimax"),
    "minimax-m2": ChatFormat("think-prefilled", "minimax-m2"),
    "gpt-oss": ChatFormat("harmony", "harmony"),
    "llama3": ChatFormat("none", "llama3-json"),
    "gemma3": ChatFormat("none", "none"),
    "smollm2": ChatFormat("none", "hermes"),
}


def test_every_family_resolves_as_before() -> None:
    for family, fmt in OLD_FAMILY_FORMATS.items():
        assert resolve_format(family) == fmt
        assert resolve_format(f" {family.upper()} ") == fmt
    assert family_formats() == OLD_FAMILY_FORMATS
    from concierge.models.formats import FAMILY_FORMATS  # the old name still works

    assert FAMILY_FORMATS == OLD_FAMILY_FORMATS
    # Tool-format names and catalogue ids resolve as before too.
    assert resolve_format("kimi") == ChatFormat("think-tags", "kimi")
    assert resolve_format("harmony") == ChatFormat("harmony", "harmony")
    assert resolve_format("qwen3-4b").tool_calls == "hermes"


def test_a_plugin_family_parses_and_a_non_format_is_named(with_plugin) -> None:
    with_plugin(
        "fmt-test",
        register_chat_formats=lambda register: (
            register("acme-think", ChatFormat("think-tags", "hermes")),
            register("acme-junk", 42),
        ),
    )
    assert parse_message("<think>a</think>b", "acme-think") == {
        "role": "assistant",
        "content": "b",
        "reasoning_content": "a",
    }
    from concierge.models.formats import FormatError

    with pytest.raises(FormatError, match="chat format 'acme-junk' from plugin fmt-test is a int"):
        resolve_format("acme-junk")


def _old_make_model(name: str, *, epochs: int = 200, seed: int = 0) -> Any:
    """make_model as it was before the registry (an if/else), to compare against."""
    from concierge.shop.recommend import ALS, Blend, Ensemble, ItemKNN, Popularity, SASRec

    if name == "pop":
        return Popularity()
    if name == "itemknn":
        return ItemKNN()
    if name == "itemknn-seq":
        model = ItemKNN(half_life=5.0)
        model.name = "itemknn-seq"
        return model
    if name in ("als", "als-numpy", "als-implicit"):
        backend = {"als": "auto", "als-numpy": "numpy", "als-implicit": "implicit"}[name]
        model = ALS(backend=backend, seed=seed)
        model.name = name
        return model
    if name == "sasrec":
        return SASRec(epochs=epochs, seed=seed)
    if name == "sasrec+knn":
        return Blend(SASRec(epochs=epochs, seed=seed), _old_make_model("itemknn-seq"), name="sasrec+knn")
    if name == "sasrec-x2":
        return Ensemble([SASRec(epochs=epochs, seed=seed + k) for k in range(2)], name=name)
    if name == "sasrec-x2+knn":
        return Blend(
            _old_make_model("sasrec-x2", epochs=epochs, seed=seed), _old_make_model("itemknn-seq"), name=name
        )
    raise ValueError(name)


OLD_MODEL_NAMES = (
    "pop", "itemknn", "itemknn-seq", "als", "als-numpy", "als-implicit",
    "sasrec", "sasrec+knn", "sasrec-x2", "sasrec-x2+knn",
)  # fmt: skip


def _fingerprint(model: Any) -> Any:
    """A model's class, name and settings, members included (what decides how it trains and scores)."""
    keys = ("half_life", "neighbours", "shrink", "backend", "seed", "epochs", "hidden", "weights")
    own = {k: getattr(model, k) for k in keys if hasattr(model, k)}
    parts = [_fingerprint(getattr(model, k)) for k in ("base", "helper") if hasattr(model, k)]
    parts += [_fingerprint(m) for m in getattr(model, "members", ())]
    return (type(model).__name__, model.name, sorted(own.items()), parts)


def test_every_recommender_resolves_as_before() -> None:
    assert tuple(model_names()[: len(OLD_MODEL_NAMES)]) == OLD_MODEL_NAMES
    from concierge.shop.recommend import MODEL_NAMES  # the old name still works

    assert MODEL_NAMES[: len(OLD_MODEL_NAMES)] == OLD_MODEL_NAMES
    for name in OLD_MODEL_NAMES:
        for epochs, seed in ((200, 0), (3, 7)):
            assert _fingerprint(make_model(name, epochs=epochs, seed=seed)) == _fingerprint(
                _old_make_model(name, epochs=epochs, seed=seed)
            ), name
    with pytest.raises(ValueError, match="unknown model 'nope' \\(choose from pop, itemknn,"):
        make_model("nope")


class _Recorder:
    """Stands in for LlamaCppEngine: records what the llama.cpp factory passed."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path, self.kwargs = path, kwargs
        self.info = EngineInfo(kind="llama.cpp", model=str(path))

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        return {}

    def stream_chat(self, request: dict[str, Any]):
        return iter(())

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [], 0

    def close(self) -> None:
        pass


def test_every_engine_kind_builds_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concierge.models import llamacpp
    from concierge.models.upstream import OpenAIUpstreamEngine

    monkeypatch.setattr(llamacpp, "LlamaCppEngine", _Recorder)
    (tmp_path / "m.gguf").write_bytes(b"")
    (tmp_path / "a.gguf").write_bytes(b"")
    d = parse_deployment(
        {
            "models": {
                "local": {"model": "smollm2-135m-instruct", "gguf": "m.gguf", "n_parallel": 3,
                          "lora": [{"path": "a.gguf", "scale": 0.5}]},
                "think": {"model": "qwen3-4b", "gguf": "m.gguf", "n_ctx": 8192},
                "vec": {"gguf": "m.gguf", "kind": "embeddings", "threads": 2},
                "gone": {"gguf": "missing.gguf"},
                "up": {"model": "qwen3-4b", "url": "http://127.0.0.1:9/v1", "timeout": 5},
            }
        },
        base_dir=tmp_path,
    )  # fmt: skip
    kinds = {alias: spec.engine_kind for alias, spec in d.aliases.items()}
    assert kinds == {"local": "llama.cpp", "think": "llama.cpp", "vec": "llama.cpp", "gone": "llama.cpp",
                     "up": "openai-upstream"}  # fmt: skip

    local = build_engine(d.aliases["local"])
    assert local.path == tmp_path / "m.gguf"
    assert local.kwargs == {
        "n_ctx": 4096, "embedding": False, "n_threads": None, "lora": [(tmp_path / "a.gguf", 0.5)],
        "chat_template": None, "n_parallel": 3, "reasoning_format": "none",
    }  # fmt: skip
    think = build_engine(d.aliases["think"]).kwargs
    assert think["n_ctx"] == 8192 and "reasoning_format" not in think and "n_parallel" not in think
    vec = build_engine(d.aliases["vec"]).kwargs
    assert vec["embedding"] is True and vec["n_threads"] == 2
    with pytest.raises(ModelFileMissingError, match="missing.gguf not found"):
        build_engine(d.aliases["gone"])

    up = build_engine(d.aliases["up"])
    assert isinstance(up, OpenAIUpstreamEngine) and up.model == "Qwen/Qwen3-4B" and up.timeout == 5.0
    up.close()

    embedded = parse_deployment({"models": {"e": {"embedded": "minilm"}, "s": {"embedded": "smollm2"}}})
    assert embedded.aliases["e"].engine_kind == "onnx-embedding"
    assert embedded.aliases["s"].engine_kind == "llama.cpp"
    assert plugins.get("engines", "onnx-embedding") is not None


def test_catalogue_and_formats_import_without_a_circle() -> None:
    script = (
        "import sys; import concierge.models.catalogue as c; "
        "assert 'concierge.models.formats' not in sys.modules, 'catalogue imports formats'; "
        "import concierge.models.formats as f; "
        "assert c.find_entry('qwen3-4b').chat_format is f.resolve_format('qwen3-4b'); print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_an_engine_that_cannot_be_imported_is_a_503_naming_it(with_plugin) -> None:
    with_plugin("gone-test", register_engines=lambda register: register("gone", "acme_sdk_not_here.engine:Engine"))
    hub = ModelHub(parse_deployment({"models": {"g": {"engine": "gone"}}}))
    with pytest.raises(EngineUnavailableError, match=r"alias 'g': plugin gone-test: cannot load 'gone'") as info:
        hub.chat("g", {"messages": [{"role": "user", "content": "hi"}]})
    assert info.value.status_code == 503
    hub.close()
