"""Deployment config: which aliases concierge serves, and where each alias's model comes from.

A YAML (or TOML, by extension) file::

    models:
      support-agent: {model: qwen3-4b, gguf: /models/Qwen3-4B-Q4_K_M.gguf, n_ctx: 8192}
      shop-assistant: {model: deepseek-v3, url: http://vllm.internal:8000/v1,
                       served_name: deepseek-ai/DeepSeek-V3, api_key_env: VLLM_KEY}
      embed: {model: all-minilm-l6-v2, embedded: minilm}
    defaults: {support: support-agent, shop: shop-assistant, embed: embed}
    support:                      # optional: support domains defined outside the package (docs/integrations.md)
      domains: {acme-bookings: {path: ./domains/acme-bookings, connectors: {bookings: {base_url: https://...}}}}
      tenants: {acme: acme-bookings}

Each alias has exactly one source: ``gguf`` (a local file; ``~`` and ``$VARS`` expanded,
relative paths from the config file's folder), ``url`` (an OpenAI-compatible base URL: the
only outbound connections concierge makes), ``embedded`` (``smollm2`` | ``minilm``, files
that ship as Python packages) or ``engine`` (the name of an engine a plugin registered, see
``docs/plugins.md``), whose own settings go in an ``options:`` mapping handed to its factory::

      orders-bot: {model: qwen3-4b, engine: acme-echo, options: {greeting: "Hello"}}

JSON outputs (``response_format`` ``json_object``/``json_schema``, forced tool calls) of local
llama.cpp models are compact: the grammar allows no whitespace outside strings, so a small model
cannot spend its ``max_tokens`` on spaces and newlines. ``json_whitespace: true`` on an alias
restores llama.cpp's grammar, which allows free whitespace between JSON tokens::

      pretty-bot: {model: qwen3-4b, gguf: /models/Qwen3-4B-Q4_K_M.gguf, json_whitespace: true}

The support agent takes its actions from an alias in one of two ways (``actions:``): ``tools``, the
OpenAI tools format that large models are trained on, or ``constrained``, one JSON action per step
(a tool call with valid arguments, a message or a transfer) decoded under a grammar built from the
domain's tools, which a small model can drive. Unset, embedded llama.cpp models (``gguf``,
``embedded``) are constrained and upstream or plugin engines use tools. ``guided_lead:`` says who
decides guided mode's command: ``rules`` (default: the rules' intent, the model fills slots they
missed) or ``model`` (the model's command, the rules only where its output is invalid or empty)::

      support-agent: {model: qwen3-4b, gguf: /models/Qwen3-4B-Q4_K_M.gguf, actions: tools, guided_lead: model}

The shopping assistant's alias says when the model reads a shopper's request (``query_model:``):
``auto`` (default: only when the rules find no certain category; the embedded SmolLM2 read no dev
request better than the rules and cost about 5 s a turn, docs/benchmarks.md), ``always`` (a model
strong enough to add to the rules on every request) or ``never``::

      shop-assistant: {model: qwen3-4b, gguf: /models/Qwen3-4B-Q4_K_M.gguf, query_model: always}

``answer_model:`` says who writes the shop's answer text: ``always`` (default: the model, from the
cards, checked sentence by sentence; written again once, then the template, when a check fails) or
``never`` (the checked template alone: why the cards fit, what differs, what near ones miss).

Nothing is downloaded at run time: a missing GGUF is reported with the command that would
fetch it.

``model`` names a catalogue entry. An unknown id is a *warning*, not an error: companies
serve models the catalogue does not list, and such an alias works, it just gets no
format parsing and no catalogue metadata (the warning suggests close ids, for typos).

In-house adapters (written by training) are merged in from a JSON registry,
``$CONCIERGE_HOME/models.json`` (``{"aliases": {"retail-inhouse": {...spec...}}}``), and from the
packaged ``inhouse/registry.yaml`` for committed adapters. Precedence: the config file wins
over the home registry, which wins over the packaged one.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from concierge.models.catalogue import CatalogueEntry, close_matches, find_entry

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT_PATH = Path(__file__).with_name("default_deployment.yaml")
PACKAGED_REGISTRY_PATH = Path(__file__).parent / "inhouse" / "registry.yaml"
REGISTRY_FILENAME = "models.json"

EMBEDDED = {
    # name -> (kind, catalogue id)
    "smollm2": ("chat", "smollm2-135m-instruct"),
    "minilm": ("embeddings", "all-minilm-l6-v2"),
}
SOURCES = ("gguf", "url", "embedded", "engine")
REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")
AGENT_ACTIONS = ("tools", "constrained")  # support agent mode: OpenAI tools, or one JSON action per step
GUIDED_LEADS = ("rules", "model")  # guided mode: who decides the command
QUERY_MODELS = ("auto", "always", "never")  # shop: when the model reads a request
ANSWER_MODELS = ("always", "never")  # shop: whether the model writes the answer (else the template)
# The engines concierge registers itself (models/plugin.py); a deployment names them through gguf:/url:/embedded:.
BUILTIN_ENGINES = ("llama.cpp", "openai-upstream", "onnx-embedding")
DEFAULT_N_CTX = 4096  # LlamaCppEngine defaults; n_ctx is split evenly over n_parallel slots
DEFAULT_N_PARALLEL = 2

_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = {
    "model",
    "gguf",
    "url",
    "embedded",
    "engine",
    "options",
    "kind",
    "served_name",
    "api_key_env",
    "timeout",
    "context_length",
    "n_ctx",
    "n_parallel",
    "threads",
    "lora",
    "reasoning_format",
    "chat_template",
    "json_whitespace",
    "actions",
    "guided_lead",
    "query_model",
    "answer_model",
    "parse",
    "in_house",
    "provenance",
    "description",
}


class DeploymentError(ValueError):
    """A deployment config problem, as one line: file, alias, what is wrong."""


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class AliasSpec:
    """One served alias: a catalogue model plus the source that serves it."""

    alias: str
    source: str  # "gguf" | "url" | "embedded" | "engine"
    kind: str = "chat"  # "chat" | "embeddings"
    model: str | None = None  # catalogue id as written
    gguf: Path | None = None
    url: str | None = None
    embedded: str | None = None
    engine: str | None = None  # a registered engine's name (source "engine")
    options: Mapping[str, Any] = field(default_factory=dict)  # that engine's own settings
    served_name: str | None = None
    api_key_env: str | None = None
    timeout: float | None = None
    context_length: int | None = None
    n_ctx: int | None = None
    n_parallel: int | None = None
    threads: int | None = None
    lora: tuple[LoraSpec, ...] = ()
    reasoning_format: str | None = None
    chat_template: str | None = None
    json_whitespace: bool = False  # llama.cpp: JSON outputs may hold free whitespace (default: compact)
    actions: str | None = None  # support agent mode: "tools" | "constrained" (None: by engine, see below)
    guided_lead: str = "rules"  # guided mode: "rules" (rules decide, model fills gaps) | "model"
    query_model: str = "auto"  # shop: the model reads requests "auto" (rules unsure) | "always" | "never"
    answer_model: str = "always"  # shop: the model writes the answer "always" | "never" (the template)
    parse: bool | None = None  # None: auto
    in_house: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    origin: str = ""  # where the spec came from (file path), for messages

    @property
    def catalogue_entry(self) -> CatalogueEntry | None:
        return find_entry(self.model)

    @property
    def engine_kind(self) -> str:
        """The registered engine that serves the alias (what ModelCard.engine reports):
        "llama.cpp" | "openai-upstream" | "onnx-embedding", or a plugin engine's name."""
        if self.source == "engine":
            return str(self.engine)
        if self.source == "url":
            return "openai-upstream"
        if self.source == "embedded" and self.embedded == "minilm":
            return "onnx-embedding"
        return "llama.cpp"

    @property
    def agent_actions(self) -> str:
        """How the support agent gets actions from this alias: ``constrained`` (one JSON action per
        step under a grammar built from the domain's tools) or ``tools`` (the OpenAI tools format).
        Unset: constrained for the embedded llama.cpp engine (small local models), tools otherwise."""
        if self.actions:
            return self.actions
        return "constrained" if self.engine_kind == "llama.cpp" and self.kind == "chat" else "tools"

    @property
    def source_label(self) -> str:
        """The GGUF path or URL served, as configured (embedded files are resolved by the hub)."""
        if self.source == "gguf":
            return str(self.gguf)
        if self.source == "url":
            return str(self.url)
        if self.source == "engine":
            return f"engine:{self.engine}"
        return f"embedded:{self.embedded}"

    def engine_key(self) -> tuple[Any, ...]:
        """Aliases with equal keys share one engine (same file or URL and the same settings)."""
        if self.source == "url":
            return ("url", self.url, self.served_name, self.api_key_env, self.timeout, self.context_length)
        if self.source == "engine":
            options = json.dumps(self.options, sort_keys=True, default=str)
            return ("engine", self.engine, self.kind, self.model, self.context_length, options)
        where = str(self.gguf) if self.source == "gguf" else f"embedded:{self.embedded}"
        if self.engine_kind == "onnx-embedding":
            return ("onnx", where, self.threads)
        return (
            "llama.cpp",
            where,
            self.kind,
            self.n_ctx,
            self.n_parallel,
            self.threads,
            tuple((str(lo.path), lo.scale) for lo in self.lora),
            self.reasoning_format,
            self.chat_template,
            self.json_whitespace,
        )

    def missing_files(self) -> list[str]:
        """One line per configured local file that is absent (GGUF and LoRA adapters)."""
        problems: list[str] = []
        if self.source == "gguf" and self.gguf is not None and not self.gguf.is_file():
            problems.append(missing_gguf_message(self))
        for lora in self.lora:
            if not lora.path.is_file():
                problems.append(f"alias {self.alias!r}: LoRA adapter {lora.path} not found")
        return problems


def missing_gguf_message(spec: AliasSpec) -> str:
    """One line naming the missing file and how to obtain it."""
    entry = spec.catalogue_entry
    where = f"{spec.origin}: " if spec.origin else ""
    msg = f"{where}alias {spec.alias!r}: GGUF file {spec.gguf} not found"
    if entry is not None and entry.gguf is not None:
        folder = spec.gguf.parent if spec.gguf is not None else "."
        msg += f"; get it with: {entry.gguf.download_hint(folder)}"
    elif entry is not None:
        msg += (
            f"; convert {entry.hf_id} with llama.cpp's convert_hf_to_gguf.py or serve it with vLLM via url:"
        )
    else:
        msg += "; put the file there or point gguf: at it"
    return msg


def _expand_path(value: str, base_dir: Path | None) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def parse_alias(
    alias: str,
    raw: Any,
    *,
    base_dir: Path | None = None,
    origin: str = "",
    warnings: list[str] | None = None,
    in_house_default: bool = False,
) -> AliasSpec:
    """Validate one alias spec (a mapping as in the config file) into an :class:`AliasSpec`."""
    where = f"{origin}: alias {alias!r}" if origin else f"alias {alias!r}"

    def fail(what: str) -> DeploymentError:
        return DeploymentError(f"{where}: {what}")

    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise fail("alias names use letters, digits and . _ : / @ + - (up to 128 characters)")
    if not isinstance(raw, Mapping):
        raise fail(f"expected a mapping of settings, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        hints = difflib.get_close_matches(unknown[0], sorted(_KEYS), n=1)
        hint = f" (did you mean {hints[0]!r}?)" if hints else ""
        raise fail(f"unknown setting {unknown[0]!r}{hint}")
    sources = [s for s in SOURCES if raw.get(s) not in (None, "")]
    if len(sources) != 1:
        found = f"found {' and '.join(sources)}" if sources else "found none"
        raise fail(
            "needs exactly one source: gguf (a file), url (an upstream), embedded "
            f"or engine (a plugin's engine); {found}"
        )
    source = sources[0]
    if raw.get("options") is not None and source != "engine":
        raise fail("options only applies to engine: sources (a plugin engine's own settings)")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key} must be a non-empty string")
        return value.strip()

    def positive_int(key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(f"{key} must be a positive integer, got {value!r}")
        return value

    model = text("model")
    entry = find_entry(model)
    if model and entry is not None:
        model = entry.id
    values: dict[str, Any] = {"alias": alias, "source": source, "origin": origin}

    if source == "gguf":
        gguf = text("gguf")
        assert gguf is not None
        path = _expand_path(gguf, base_dir)
        if path.suffix.lower() != ".gguf":
            raise fail(f"gguf must name a .gguf file, got {gguf!r}")
        values["gguf"] = path
    elif source == "url":
        url = text("url")
        assert url is not None
        if not url.startswith(("http://", "https://")):
            raise fail(f"url must start with http:// or https://, got {url!r}")
        values["url"] = url.rstrip("/")
    elif source == "engine":
        values["engine"] = _registered_engine(text("engine"), fail)
        options = raw.get("options")
        if options is not None:
            if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
                raise fail(f"options must be a mapping of the engine's settings, got {type(options).__name__}")
            values["options"] = dict(options)
    else:
        name = text("embedded")
        assert name is not None
        if name not in EMBEDDED:
            raise fail(f"embedded must be one of {', '.join(EMBEDDED)}, got {name!r}")
        values["embedded"] = name
        if model is None:
            model = EMBEDDED[name][1]
            entry = find_entry(model)

    if model is None:
        _warn(warnings, f"{where}: no catalogue model given; format parsing is off")
    elif entry is None:
        hint = close_matches(model)
        suggestion = f" (did you mean {', '.join(hint)}?)" if hint else ""
        _warn(
            warnings, f"{where}: model {model!r} is not in the catalogue{suggestion}; format parsing is off"
        )
    values["model"] = model

    kind = text("kind")
    inferred = EMBEDDED[values["embedded"]][0] if source == "embedded" else (entry.kind if entry else "chat")
    if kind is None:
        kind = inferred
    elif kind not in ("chat", "embeddings"):
        raise fail(f"kind must be chat or embeddings, got {kind!r}")
    elif kind != inferred and (source == "embedded" or entry is not None):
        raise fail(f"kind {kind!r} does not match the model, which serves {inferred}")
    values["kind"] = kind
    if source == "embedded" and entry is not None and entry.id != EMBEDDED[values["embedded"]][1]:
        raise fail(f"embedded {values['embedded']!r} is {EMBEDDED[values['embedded']][1]}, not {model!r}")

    for key in ("served_name", "api_key_env", "reasoning_format", "chat_template", "description"):
        value = text(key)
        if value is not None:
            values[key] = value
    if source == "engine":
        for key in ("n_ctx", "n_parallel", "threads", "lora", "reasoning_format", "chat_template", "json_whitespace"):
            if raw.get(key) is not None:
                raise fail(
                    f"{key} only applies to gguf and embedded sources; "
                    f"give engine {values['engine']!r} its settings under options:"
                )
    if source != "url":
        for key in ("served_name", "api_key_env", "timeout", "context_length"):
            if raw.get(key) is not None and not (key == "context_length" and source == "engine"):
                raise fail(f"{key} only applies to url sources")
    else:
        for key in ("n_ctx", "n_parallel", "lora", "reasoning_format", "chat_template", "json_whitespace"):
            if raw.get(key) is not None:
                raise fail(f"{key} only applies to local models (gguf or embedded), not url")
        if "served_name" not in values:
            if entry is None:
                raise fail("url sources need served_name (the model name the upstream serves)")
            values["served_name"] = entry.hf_id
    if values.get("api_key_env") and not _ENV_RE.match(values["api_key_env"]):
        raise fail(f"api_key_env must be an environment variable name, got {values['api_key_env']!r}")
    if values.get("reasoning_format") and values["reasoning_format"] not in REASONING_FORMATS:
        raise fail(f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}")

    for key in ("n_ctx", "n_parallel", "threads", "context_length"):
        value = positive_int(key)
        if value is not None:
            values[key] = value
    timeout = raw.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise fail(f"timeout must be a positive number of seconds, got {timeout!r}")
        values["timeout"] = float(timeout)

    lora = raw.get("lora")
    if lora is not None:
        if values.get("embedded") == "minilm" or kind == "embeddings":
            raise fail("lora only applies to chat models")
        if isinstance(lora, Mapping | str):
            lora = [lora]
        if not isinstance(lora, list):
            raise fail("lora must be a list of {path, scale}")
        specs = []
        for item in lora:
            item = {"path": item} if isinstance(item, str) else item
            if not isinstance(item, Mapping) or not isinstance(item.get("path"), str):
                raise fail("each lora entry needs a path")
            scale = item.get("scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, int | float):
                raise fail(f"lora scale must be a number, got {scale!r}")
            extra = set(item) - {"path", "scale"}
            if extra:
                raise fail(f"unknown lora setting {sorted(extra)[0]!r}")
            specs.append(LoraSpec(_expand_path(item["path"], base_dir), float(scale)))
        values["lora"] = tuple(specs)

    json_whitespace = raw.get("json_whitespace")
    if json_whitespace is not None:
        if not isinstance(json_whitespace, bool):
            raise fail(f"json_whitespace must be true or false, got {json_whitespace!r}")
        values["json_whitespace"] = json_whitespace

    # Options that name one of a few choices: what the support agent and the shop do with the alias.
    for key, choices in (("actions", AGENT_ACTIONS), ("guided_lead", GUIDED_LEADS),
                         ("query_model", QUERY_MODELS), ("answer_model", ANSWER_MODELS)):
        choice = raw.get(key)
        if choice is not None:
            if choice not in choices:
                raise fail(f"{key} must be one of {', '.join(choices)}, got {choice!r}")
            values[key] = choice

    parse = raw.get("parse")
    if parse is not None:
        if parse == "auto":
            parse = None
        elif not isinstance(parse, bool):
            raise fail(f"parse must be true, false or auto, got {parse!r}")
        values["parse"] = parse
    in_house = raw.get("in_house", in_house_default)
    if not isinstance(in_house, bool):
        raise fail("in_house must be true or false")
    values["in_house"] = in_house
    provenance = raw.get("provenance")
    if provenance is not None:
        if not isinstance(provenance, Mapping):
            raise fail("provenance must be a mapping")
        values["provenance"] = dict(provenance)
    return AliasSpec(**values)


def _registered_engine(name: str | None, fail: Any) -> str:
    """``name`` if a plugin registered an engine by it; else a one-line error listing those that did."""
    from concierge import plugins

    assert name is not None
    if name in BUILTIN_ENGINES:
        where = {"llama.cpp": "gguf: or embedded: smollm2", "openai-upstream": "url:"}
        raise fail(f"engine {name!r} is built in: use {where.get(name, 'embedded: minilm')} instead of engine:")
    try:
        known = [n for n in plugins.names("engines") if n not in BUILTIN_ENGINES]
    except plugins.PluginError as exc:
        raise fail(f"engine {name!r}: {exc}") from exc
    if name not in known:
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f"did you mean {hint[0]!r}? " if hint else ""
        listed = f"known: {', '.join(known)}" if known else "no plugin has registered one; see docs/plugins.md"
        raise fail(f"engine {name!r} is not registered ({suggestion}{listed})")
    return name


def _warn(warnings: list[str] | None, message: str) -> None:
    log.warning(message)
    if warnings is not None:
        warnings.append(message)


@dataclass(frozen=True)
class Deployment:
    """The validated config: aliases, role defaults, and any warnings raised while loading."""

    aliases: Mapping[str, AliasSpec]
    defaults: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    warnings: tuple[str, ...] = ()
    # The ``support:`` section as written (domain folders, tenant -> domain); checked by
    # concierge.support.domains.external.parse_support_config, which this layer cannot import.
    support: Mapping[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None  # relative paths in the file are relative to this folder

    def __contains__(self, alias: object) -> bool:
        return alias in self.aliases

    def get(self, alias: str) -> AliasSpec | None:
        return self.aliases.get(alias)

    def default(self, role: str) -> str:
        """The alias serving a role (``support``, ``shop``, ``embed``, ``chat``); the role itself if unset."""
        return self.defaults.get(role, role)

    def role(self, role: str, fallback: str | None = None) -> str | None:
        """The alias the ``defaults:`` section names for ``role``, else ``fallback``."""
        return self.defaults.get(role, fallback)

    def with_alias(
        self, alias: str, spec: AliasSpec | Mapping[str, Any], *, base_dir: Path | None = None
    ) -> Deployment:
        """A copy with ``alias`` added or replaced (e.g. an in-house adapter registered by training)."""
        if not isinstance(spec, AliasSpec):
            spec = parse_alias(alias, spec, base_dir=base_dir, origin="with_alias", in_house_default=True)
        elif spec.alias != alias:
            spec = replace(spec, alias=alias)
        aliases = dict(self.aliases)
        aliases[alias] = spec
        return replace(self, aliases=aliases)

    def with_registry(self, registry: Mapping[str, AliasSpec], *, override: bool = False) -> Deployment:
        """Merge registry aliases; existing aliases win unless ``override``."""
        aliases = dict(self.aliases)
        warnings = list(self.warnings)
        for alias, spec in registry.items():
            if alias in aliases and not override:
                _warn(
                    warnings, f"registry alias {alias!r} ({spec.origin}) is shadowed by the deployment config"
                )
                continue
            aliases[alias] = spec
        return replace(self, aliases=aliases, warnings=tuple(warnings))

    def check_files(self) -> list[str]:
        """Problems with local files, one line each (empty when everything is in place)."""
        return [problem for spec in self.aliases.values() for problem in spec.missing_files()]


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise DeploymentError(f"{path}: deployment config not found")
    try:
        if path.suffix.lower() == ".toml":
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        if path.suffix.lower() == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
            detail = f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
        else:
            detail = " ".join(str(exc).split())
        raise DeploymentError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {detail}") from exc


def parse_deployment(data: Any, *, path: Path | None = None, base_dir: Path | None = None) -> Deployment:
    """Validate config data (parsed YAML/TOML) into a :class:`Deployment`."""
    where = str(path) if path else "deployment"
    if not isinstance(data, Mapping):
        raise DeploymentError(f"{where}: expected a mapping with 'models' (and optionally 'defaults')")
    unknown = sorted(set(data) - {"models", "defaults", "version", "support"})
    if unknown:
        raise DeploymentError(f"{where}: unknown top-level key {unknown[0]!r} (expected models, defaults, support)")
    support = data.get("support")
    if support is not None and not isinstance(support, Mapping):
        raise DeploymentError(f"{where}: 'support' must be a mapping (domains, tenants, default)")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise DeploymentError(f"{where}: 'models' must map at least one alias to its settings")
    warnings: list[str] = []
    base = base_dir if base_dir is not None else (path.parent if path else None)
    aliases = {
        str(alias): parse_alias(str(alias), raw, base_dir=base, origin=where, warnings=warnings)
        for alias, raw in models.items()
    }
    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, Mapping):
        raise DeploymentError(f"{where}: 'defaults' must map roles to aliases")
    defaults: dict[str, str] = {}
    for role, alias in defaults_raw.items():
        if alias not in aliases:
            hint = difflib.get_close_matches(str(alias), list(aliases), n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else f" (aliases: {', '.join(aliases)})"
            raise DeploymentError(f"{where}: defaults.{role} names unknown alias {alias!r}{suffix}")
        defaults[str(role)] = str(alias)
    return Deployment(aliases=aliases, defaults=defaults, path=path, warnings=tuple(warnings),
                      support=dict(support or {}), base_dir=base)


def registry_path() -> Path:
    """``$CONCIERGE_HOME/models.json``, where training registers in-house adapters."""
    from concierge.config import home

    return home() / REGISTRY_FILENAME


def load_registry(path: Path | None = None) -> dict[str, AliasSpec]:
    """In-house aliases from a registry file (``{"aliases": {alias: spec}}``; JSON or YAML).

    Without ``path``: the packaged registry, then ``$CONCIERGE_HOME/models.json`` over it.
    Relative paths inside a registry are relative to its folder. A missing file is empty.
    """
    if path is None:
        merged = load_registry(PACKAGED_REGISTRY_PATH)
        merged.update(load_registry(registry_path()))
        return merged
    if not path.is_file():
        return {}
    data = _read_file(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping) or not isinstance(data.get("aliases", {}), Mapping):
        raise DeploymentError(f"{path}: a registry is a mapping with an 'aliases' mapping")
    return {
        str(alias): parse_alias(
            str(alias), raw, base_dir=path.parent, origin=str(path), in_house_default=True
        )
        for alias, raw in (data.get("aliases") or {}).items()
    }


def register_alias(alias: str, spec: Mapping[str, Any], path: Path | None = None) -> Path:
    """Add or replace an in-house alias in the registry (validated first); returns the file."""
    path = path or registry_path()
    parse_alias(alias, spec, base_dir=path.parent, origin=str(path), in_house_default=True)
    data: dict[str, Any] = {"aliases": {}}
    if path.is_file():
        loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
        if isinstance(loaded, dict):
            data = loaded
            data.setdefault("aliases", {})
    data["aliases"][alias] = {"in_house": True, **dict(spec)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def load_deployment(path: str | Path | None = None, *, include_registry: bool = True) -> Deployment:
    """The deployment at ``path`` (None: the embedded default), with in-house registries merged."""
    file = Path(path).expanduser() if path is not None else DEFAULT_DEPLOYMENT_PATH
    deployment = parse_deployment(_read_file(file), path=file)
    if include_registry:
        deployment = deployment.with_registry(load_registry())
    return deployment
