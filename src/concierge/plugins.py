"""One door for everything concierge can be extended with: engines, support domains, recommenders,
chat formats and CLI commands.

Built-ins and outside packages register the same way, as simonw/llm's plugins do: a plugin is a
module with ``@hookimpl`` functions named after the hooks in :class:`Hooks`. The built-in plugins
are the modules in :data:`DEFAULT_PLUGINS`; an outside package adds its own through the Python
entry-point group ``concierge``::

    # pyproject.toml of the company's package
    [project.entry-points.concierge]
    acme = "acme_concierge.plugin"

    # acme_concierge/plugin.py
    from concierge.plugins import hookimpl

    @hookimpl
    def register_domains(register):
        register("acme-orders", "acme_concierge.orders:load")

Each ``register`` callable takes a name and the thing (or a ``"module:attribute"`` string, imported
on first use, so registering stays cheap). A name registered twice is an error naming both
plugins: a company's plugin cannot silently replace a built-in.

Plugin modules keep their top-level imports light (heavy runtimes are imported inside the
registered factories), because the registry imports every plugin on first use of any kind.
This module sits at the bottom of the layers: it imports nothing from concierge but ``config``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

GROUP = "concierge"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)

# The built-in plugins, registered through the same hooks as outside ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "concierge.models.plugin",
    "concierge.support.plugin",
    "concierge.shop.recommend.plugin",
    "concierge.commands.plugin",
)

KINDS = ("engines", "domains", "recommenders", "chat_formats", "commands")


class PluginError(Exception):
    """A plugin could not be loaded, or registered a name that is already taken."""


Register = Callable[..., None]


class Hooks:
    """The hook specifications: one per kind of thing a plugin can add."""

    @hookspec
    def register_engines(self, register: Register) -> None:
        """``register(name, factory)``: ``factory(spec, options)`` builds an engine for a deployment
        alias whose source is ``engine: name`` (``options`` is the alias's ``options:`` mapping)."""

    @hookspec
    def register_domains(self, register: Register) -> None:
        """``register(name, loader)``: ``loader(data_dir, *, exclude_tools=())`` returns a support Domain."""

    @hookspec
    def register_recommenders(self, register: Register) -> None:
        """``register(name, factory)``: ``factory(*, epochs, seed)`` returns an unfitted Recommender."""

    @hookspec
    def register_chat_formats(self, register: Register) -> None:
        """``register(family, chat_format)``: the reasoning / tool-call format of a model family."""

    @hookspec
    def register_commands(self, cli: Any) -> None:
        """Add commands or sub-apps to the ``concierge`` typer app ``cli``."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any  # the object, or a "module:attribute" string imported on first use
    plugin: str  # which plugin registered it

    def load(self) -> Any:
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"plugin {self.plugin}: cannot load {self.name!r} from {self.target}: {exc}") from exc
        return obj


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_tables: dict[str, dict[str, Entry]] = {}
_extra: list[tuple[str, Any]] = []  # plugins added at run time (tests, a deployment's own module)


def manager() -> pluggy.PluginManager:
    """The plugin manager with the built-ins and every installed ``concierge`` entry point loaded."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(GROUP)
            pm.add_hookspecs(Hooks)
            for name in DEFAULT_PLUGINS:
                try:
                    pm.register(importlib.import_module(name), name=name)
                except ImportError as exc:
                    raise PluginError(f"built-in plugin {name} failed to import: {exc}") from exc
            try:
                pm.load_setuptools_entrypoints(GROUP)
            except Exception as exc:  # noqa: BLE001 - a broken outside plugin names itself, not a traceback
                raise PluginError(f"a plugin in the {GROUP!r} entry-point group failed to load: {exc}") from exc
            for name, module in _extra:
                pm.register(module, name=name)
            _manager = pm
        return _manager


def _plugin_name(pm: pluggy.PluginManager, impl: Any) -> str:
    return pm.get_name(impl.plugin) or str(impl.plugin)


def _table(kind: str) -> dict[str, Entry]:
    if kind not in KINDS or kind == "commands":
        raise ValueError(f"unknown plugin kind {kind!r}")
    with _lock:
        if kind in _tables:
            return _tables[kind]
        pm = manager()
        table: dict[str, Entry] = {}
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            plugin = _plugin_name(pm, impl)

            def register(name: str, target: Any, *, _plugin: str = plugin) -> None:
                key = str(name)
                if key in table:
                    raise PluginError(
                        f"{kind[:-1].replace('_', ' ')} {key!r} is registered twice "
                        f"(by {table[key].plugin} and by {_plugin})"
                    )
                table[key] = Entry(key, target, _plugin)

            impl.function(register)
        _tables[kind] = table
        return table


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted."""
    return sorted(_table(kind))


def entries(kind: str) -> dict[str, Entry]:
    """Name -> :class:`Entry` for one kind (who registered it, and what)."""
    return dict(_table(kind))


def get(kind: str, name: str) -> Any | None:
    """The registered object (imported if it was registered as a string), or ``None``."""
    entry = _table(kind).get(name)
    return entry.load() if entry is not None else None


def add_commands(cli: Any) -> None:
    """Let every plugin (built-in commands first) add its commands to the typer app ``cli``."""
    manager().hook.register_commands(cli=cli)


def register_plugin(module: Any, name: str | None = None) -> None:
    """Add a plugin module at run time (tests; a deployment naming its own module)."""
    key = name or getattr(module, "__name__", repr(module))
    with _lock:
        _extra.append((key, module))
        if _manager is not None:
            _manager.register(module, name=key)
        _tables.clear()


def unregister_plugin(name: str) -> None:
    with _lock:
        _extra[:] = [(n, m) for n, m in _extra if n != name]
        if _manager is not None and _manager.get_plugin(name) is not None:
            _manager.unregister(name=name)
        _tables.clear()


def reset() -> None:
    """Forget everything loaded, so the next call re-reads the entry points (tests)."""
    global _manager
    with _lock:
        _manager = None
        _tables.clear()
