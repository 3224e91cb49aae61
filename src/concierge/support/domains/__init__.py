"""The support domains: one folder per domain, as τ²-bench's are.

Each built-in domain (``retail``, ``airline``, ``homestay``) is a package here holding its tools,
its guided-mode ``flows.yaml``, its policy and tasks where it ships them, and a ``load(data_dir, *,
exclude_tools=())`` loader. Domains register through :mod:`concierge.plugins` (the built-ins in
:mod:`concierge.support.plugin`), so a company's own domain is found the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from concierge.support.toolkit import Domain

DOMAINS_DIR = Path(__file__).resolve().parent
FLOWS_FILE = "flows.yaml"

DomainLoader = Callable[..., Domain]


def domain_names() -> list[str]:
    """Every registered domain (built-ins and plugins, through :mod:`concierge.plugins`)."""
    from concierge import plugins

    return plugins.names("domains")


def load_domain(
    name: str, data_dir: Path | str | None = None, *, exclude_tools: Iterable[str] = ()
) -> Domain:
    """A fresh domain by name; ``data_dir`` holds its ``db.json`` (and ``policy.md``).

    ``data_dir`` may also be a parent folder with a ``<name>/`` subfolder (e.g. ``data/tau2``).
    """
    from concierge import plugins

    loader = plugins.get("domains", name)
    if loader is None:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(domain_names())}")
    return loader(resolve_data_dir(name, data_dir), exclude_tools=exclude_tools)


def resolve_data_dir(name: str, data_dir: Path | str | None) -> Path | None:
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not (path / "db.json").is_file() and (path / name / "db.json").is_file():
        path = path / name
    return path


def flows_path(name: str) -> Path:
    """Where a domain keeps its guided-mode flows: a built-in's ``<domain>/flows.yaml``, or the file a
    domain folder's ``domain.yaml`` names (:mod:`.external`); the file may not exist."""
    from concierge import plugins

    try:
        loader = plugins.get("domains", name)
    except plugins.PluginError:
        loader = None
    custom = getattr(loader, "flows_file", None) if getattr(loader, "external", False) else None
    if custom is not None:
        return Path(custom)
    return DOMAINS_DIR / name / FLOWS_FILE
