"""The model catalogue: open-weight models companies deploy, and what serving each one takes.

The data lives in ``catalogue.yaml`` next to this module; :func:`load_catalogue` validates
every entry into a :class:`CatalogueEntry` (a bad entry is a :class:`CatalogueError` naming
the entry and the field), so a typo in the data fails the tests rather than a deployment.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from concierge.models.chat_format import ChatFormat, FormatError

CATALOGUE_PATH = Path(__file__).with_name("catalogue.yaml")
ENGINES = ("llama.cpp", "vllm", "sglang", "onnx")
KINDS = ("chat", "embeddings")


class CatalogueError(ValueError):
    """The catalogue data is malformed."""


@dataclass(frozen=True)
class Origin:
    lab: str
    country: str  # ISO 3166 alpha-2, e.g. "CN", "US"


@dataclass(frozen=True)
class GgufRef:
    repo: str
    file: str

    def download_hint(self, folder: str | Path = ".") -> str:
        """The command that fetches the file (concierge itself never downloads)."""
        return f"hf download {self.repo} {self.file} --local-dir {folder}"


@dataclass(frozen=True)
class CatalogueEntry:
    id: str
    family: str
    kind: str  # "chat" | "embeddings"
    parameters_total_b: float
    parameters_active_b: float
    context_length: int
    licence: str
    origin: Origin
    chat_format: ChatFormat
    recommended_engine: str
    min_memory_gb: float
    quantisation: str  # what min_memory_gb assumes, e.g. "Q4_K_M", "FP8"
    hf_id: str
    gguf: GgufRef | None = None
    embedding_dim: int | None = None
    notes: str = ""

    @property
    def is_moe(self) -> bool:
        return self.parameters_active_b < self.parameters_total_b

    def as_dict(self) -> dict[str, Any]:
        """Plain data, in the same shape as the YAML."""
        return {
            "id": self.id,
            "family": self.family,
            "kind": self.kind,
            "parameters_total_b": self.parameters_total_b,
            "parameters_active_b": self.parameters_active_b,
            "context_length": self.context_length,
            "embedding_dim": self.embedding_dim,
            "licence": self.licence,
            "origin": {"lab": self.origin.lab, "country": self.origin.country},
            "chat_format": {
                "reasoning": self.chat_format.reasoning,
                "tool_calls": self.chat_format.tool_calls,
                "notes": self.chat_format.notes,
            },
            "recommended_engine": self.recommended_engine,
            "min_memory_gb": self.min_memory_gb,
            "quantisation": self.quantisation,
            "gguf": {"repo": self.gguf.repo, "file": self.gguf.file} if self.gguf else None,
            "hf_id": self.hf_id,
            "notes": self.notes,
        }


_REQUIRED = (
    "id",
    "family",
    "parameters_total_b",
    "parameters_active_b",
    "context_length",
    "licence",
    "origin",
    "recommended_engine",
    "min_memory_gb",
    "quantisation",
    "hf_id",
)
_OPTIONAL = ("kind", "chat_format", "gguf", "embedding_dim", "notes")


def _entry(raw: Any, where: str) -> CatalogueEntry:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: an entry must be a mapping")
    ident = raw.get("id", "?")
    where = f"{where} ({ident})"
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "")]
    if missing:
        raise CatalogueError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise CatalogueError(f"{where}: unknown field(s) {', '.join(unknown)}")

    def number(key: str, kind: type = float) -> Any:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise CatalogueError(f"{where}: {key} must be a positive number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise CatalogueError(f"{where}: {key} must be an integer, got {value!r}")
        return kind(value)

    total, active = number("parameters_total_b"), number("parameters_active_b")
    if active > total:
        raise CatalogueError(f"{where}: parameters_active_b ({active}) exceeds parameters_total_b ({total})")
    kind = raw.get("kind", "chat")
    if kind not in KINDS:
        raise CatalogueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    engine = raw["recommended_engine"]
    if engine not in ENGINES:
        raise CatalogueError(
            f"{where}: recommended_engine must be one of {', '.join(ENGINES)}, got {engine!r}"
        )
    origin = raw["origin"]
    if not isinstance(origin, dict) or not origin.get("lab") or not origin.get("country"):
        raise CatalogueError(f"{where}: origin needs lab and country")
    country = str(origin["country"])
    if len(country) != 2 or not country.isupper():
        raise CatalogueError(f"{where}: origin.country must be a two-letter code, got {country!r}")
    fmt_raw = raw.get("chat_format")
    if kind == "chat" and not isinstance(fmt_raw, dict):
        raise CatalogueError(f"{where}: chat models need a chat_format mapping")
    try:
        chat_format = (
            ChatFormat(
                reasoning=fmt_raw.get("reasoning", "none"),
                tool_calls=fmt_raw.get("tool_calls", "none"),
                notes=fmt_raw.get("notes") or "",
            )
            if isinstance(fmt_raw, dict)
            else ChatFormat()
        )
    except FormatError as exc:
        raise CatalogueError(f"{where}: chat_format: {exc}") from exc
    gguf_raw = raw.get("gguf")
    gguf = None
    if gguf_raw is not None:
        if not isinstance(gguf_raw, dict) or not gguf_raw.get("repo") or not gguf_raw.get("file"):
            raise CatalogueError(f"{where}: gguf needs repo and file (or null)")
        if not str(gguf_raw["file"]).endswith(".gguf"):
            raise CatalogueError(f"{where}: gguf.file must end in .gguf")
        gguf = GgufRef(repo=str(gguf_raw["repo"]), file=str(gguf_raw["file"]))
    dim = raw.get("embedding_dim")
    if kind == "embeddings" and not isinstance(dim, int):
        raise CatalogueError(f"{where}: embedding models need an integer embedding_dim")
    return CatalogueEntry(
        id=str(raw["id"]),
        family=str(raw["family"]),
        kind=kind,
        parameters_total_b=total,
        parameters_active_b=active,
        context_length=number("context_length", int),
        licence=str(raw["licence"]),
        origin=Origin(lab=str(origin["lab"]), country=country),
        chat_format=chat_format,
        recommended_engine=engine,
        min_memory_gb=number("min_memory_gb"),
        quantisation=str(raw["quantisation"]),
        hf_id=str(raw["hf_id"]),
        gguf=gguf,
        embedding_dim=dim,
        notes=str(raw.get("notes") or ""),
    )


def parse_catalogue(data: Any, source: str = "catalogue") -> dict[str, CatalogueEntry]:
    """Validate catalogue data (the YAML's parsed form) into entries keyed by id."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogueError(f"{source}: expected a mapping with a 'models' list")
    entries: dict[str, CatalogueEntry] = {}
    for i, raw in enumerate(data["models"]):
        entry = _entry(raw, f"{source}: models[{i}]")
        if entry.id != entry.id.lower() or " " in entry.id:
            raise CatalogueError(f"{source}: id {entry.id!r} must be lower case without spaces")
        if entry.id in entries:
            raise CatalogueError(f"{source}: duplicate id {entry.id!r}")
        entries[entry.id] = entry
    return entries


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, CatalogueEntry]:
    with open(path, encoding="utf-8") as fh:
        return parse_catalogue(yaml.safe_load(fh), source=path)


def load_catalogue(path: str | Path | None = None) -> dict[str, CatalogueEntry]:
    """All entries by id (the packaged catalogue unless ``path`` is given); cached."""
    return dict(_load(str(path or CATALOGUE_PATH)))


def find_entry(model_id: str | None) -> CatalogueEntry | None:
    """The packaged entry for ``model_id`` (case-insensitive), or None; no copy, for hot paths."""
    if not model_id:
        return None
    return _load(str(CATALOGUE_PATH)).get(model_id.strip().lower())


def close_matches(model_id: str, ids: list[str] | None = None, n: int = 3) -> list[str]:
    """Catalogue ids that look like ``model_id`` (for 'did you mean' messages)."""
    ids = ids if ids is not None else list(load_catalogue())
    key = model_id.strip().lower()
    matches = difflib.get_close_matches(key, ids, n=n, cutoff=0.5)
    # Also offer ids that start with what was typed ("qwen3" -> qwen3-0.6b, qwen3-4b, ...).
    for ident in ids:
        if len(matches) >= n:
            break
        if ident.startswith(key) and ident not in matches:
            matches.append(ident)
    return matches


def get_entry(model_id: str) -> CatalogueEntry:
    """The entry for ``model_id`` (case-insensitive); KeyError with suggestions if unknown."""
    catalogue = load_catalogue()
    entry = catalogue.get(model_id.strip().lower())
    if entry is None:
        hint = close_matches(model_id, list(catalogue))
        suffix = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise KeyError(f"unknown model {model_id!r}{suffix}")
    return entry


def filter_entries(
    entries: list[CatalogueEntry] | None = None,
    *,
    origin: str | None = None,
    family: str | None = None,
    kind: str | None = None,
) -> list[CatalogueEntry]:
    """Entries matching an origin country code, a family and a kind (case-insensitive)."""
    items = entries if entries is not None else list(load_catalogue().values())
    if origin:
        items = [e for e in items if e.origin.country.lower() == origin.strip().lower()]
    if family:
        items = [e for e in items if e.family.lower() == family.strip().lower()]
    if kind:
        items = [e for e in items if e.kind == kind.strip().lower()]
    return items
