"""Register a trained adapter as an in-house model alias (a thin layer over the deployment registry).

Two places, both read by :func:`concierge.models.deployment.load_deployment`:

* ``$CONCIERGE_HOME/models.json`` for adapters a user trains (absolute paths), through
  :func:`concierge.models.deployment.register_alias`;
* the packaged ``concierge/models/inhouse/registry.yaml`` for committed adapters:
  :func:`publish` copies the adapter and its model card into ``inhouse/<alias>/`` and registers
  them with paths relative to the registry file, so a fresh clone serves the alias untrained.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from concierge.models.deployment import PACKAGED_REGISTRY_PATH, parse_alias, register_alias

ADAPTER_FILE = "adapter.gguf"
CARD_FILE = "model_card.json"
# What a registered alias keeps of the model card (the card file has the rest).
PROVENANCE_KEYS = (
    "base",
    "data_hash",
    "data_count",
    "hyperparameters",
    "seed",
    "steps",
    "train_seconds",
    "metrics",
    "prompt",
    "trained_at",
)


class RegistryError(ValueError):
    """The adapter cannot be registered as asked: one line."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_source(base: dict[str, Any]) -> dict[str, Any]:
    """The alias settings that serve the base model itself (embedded or a GGUF file)."""
    if base.get("embedded"):
        from concierge.models.deployment import EMBEDDED

        return {"model": EMBEDDED[base["embedded"]][1], "embedded": base["embedded"]}
    if base.get("gguf"):
        source: dict[str, Any] = {"gguf": str(base["gguf"])}
        if base.get("catalogue"):
            source["model"] = base["catalogue"]
        return source
    raise RegistryError(
        f"base {base.get('spec')!r} is a Hugging Face folder: llama.cpp serves adapters on a GGUF base; "
        "convert the base to GGUF and train on it (or serve the adapter with vLLM)"
    )


def alias_spec(card: dict[str, Any], adapter_path: str, *, scale: float = 1.0) -> dict[str, Any]:
    """A deployment alias spec for an adapter described by its model card."""
    spec = {
        **base_source(card["base"]),
        "n_ctx": 4096,
        "n_parallel": 2,
        "lora": [{"path": adapter_path, "scale": scale}],
        "in_house": True,
        "description": card.get("description") or f"in-house LoRA on {card['base'].get('spec')}",
        "provenance": {k: card[k] for k in PROVENANCE_KEYS if k in card},
    }
    spec["provenance"]["base"] = card["base"].get("spec")
    if isinstance(card.get("metrics"), dict):
        spec["provenance"]["metrics"] = headline_metrics(card["metrics"])
    return spec


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a registry entry keeps (the model card has per-turn detail)."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict) and "intent_accuracy" in value:
            out[name] = {k: value[k] for k in ("intent_accuracy", "slot_f1") if k in value}
        elif not isinstance(value, dict):
            out[name] = value
    return out


def register(alias: str, adapter: Path, card: dict[str, Any], *, registry: Path | None = None) -> Path:
    """Register ``alias`` in ``$CONCIERGE_HOME/models.json`` (or ``registry``); returns the file."""
    adapter = Path(adapter).resolve()
    if not adapter.is_file():
        raise RegistryError(f"adapter {adapter} not found")
    return register_alias(alias, alias_spec(card, str(adapter)), registry)


def write_card(path: Path, card: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def publish(
    alias: str, adapter: Path, card: dict[str, Any], *, registry: Path = PACKAGED_REGISTRY_PATH
) -> Path:
    """Copy the adapter and card next to ``registry`` (``<alias>/``) and register them there.

    The registry's comment header is kept; paths in it are relative to its folder.
    """
    adapter = Path(adapter)
    if not adapter.is_file():
        raise RegistryError(f"adapter {adapter} not found")
    folder = registry.parent / alias
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ADAPTER_FILE
    if adapter.resolve() != target.resolve():
        shutil.copyfile(adapter, target)
    adapter_info = {k: v for k, v in card.get("adapter", {}).items() if k != "path"}  # a path of this machine
    card = {**card, "adapter": {**adapter_info, "file": ADAPTER_FILE, "sha256": file_sha256(target)}}
    write_card(folder / CARD_FILE, card)
    spec = alias_spec(card, f"{alias}/{ADAPTER_FILE}")
    spec["provenance"]["card"] = f"{alias}/{CARD_FILE}"
    parse_alias(alias, spec, base_dir=registry.parent, origin=str(registry), in_house_default=True)
    text = registry.read_text(encoding="utf-8") if registry.is_file() else ""
    header = [line for line in text.splitlines() if line.startswith("#")]
    data = yaml.safe_load(text) or {}
    aliases = dict(data.get("aliases") or {})
    aliases[alias] = spec
    body = yaml.safe_dump({"aliases": aliases}, sort_keys=False, allow_unicode=True, width=100)
    registry.write_text("\n".join(header) + ("\n" if header else "") + body, encoding="utf-8")
    return registry
