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
A plugin that fails to import, names a hook that does not exist, or raises while registering
is a :class:`PluginError` naming it (the CLI prints it as one line); an installed plugin can be
skipped with ``CONCIERGE_BLOCK_PLUGINS=name,name`` (its entry-point names).
This module sits at the bottom of the layers: it imports nothing from concierge.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
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
BLOCK_ENV = "CONCIERGE_BLOCK_PLUGINS"


class PluginError(Exception):
    """A plugin could not be loaded, or registered a name that is already taken."""


Register = Callable[..., None]


class Hooks:
    """The hook specifications: one per kind of thing a plugin can add."""

    @hookspec
    def register_engines(self, register: Register) -> None:
        """``register(name, factory)``: ``factory(spec, options)`` builds an engine for a deployment
        alias whose source is ``engine: name`` (``options`` is the alias's ``options:`` mapping).
        The built-ins (``llama.cpp``, ``openai-upstream``, ``onnx-embedding``) serve the ``gguf:``,
        ``url:`` and ``embedded:`` sources; see ``docs/plugins.md``."""

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
            raise PluginError(
                f"plugin {self.plugin}: cannot load {self.name!r} from {self.target}: {exc}"
            ) from exc
        return obj


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_tables: dict[str, dict[str, Entry]] = {}
_commands: dict[str, Entry] = {}  # what the last add_commands() added: command name -> Entry
_packages: dict[str, tuple[str, str]] = {}  # entry-point plugin -> (distribution, version)
_extra: list[tuple[str, Any]] = []  # plugins added at run time (tests, a deployment's own module)


def _blocked() -> set[str]:
    return {name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()}


def _entry_point_plugins(pm: pluggy.PluginManager) -> None:
    """Register every installed ``concierge`` entry point, each under its entry-point name."""
    blocked = _blocked()
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in blocked:
            continue
        dist = getattr(ep, "dist", None)
        package = f"{dist.name} {dist.version}" if dist is not None else ep.value
        if pm.has_plugin(ep.name):
            raise PluginError(f"two installed plugins are named {ep.name!r} (the second is {package})")
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken outside plugin names itself, not a traceback
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}, from {package}) failed to load: {type(exc).__name__}: {exc} "
                f"(uninstall it, or set {BLOCK_ENV}={ep.name} to start without it)"
            ) from exc
        _register(pm, module, ep.name)
        if dist is not None:
            _packages[ep.name] = (dist.name, dist.version)


def _register(pm: pluggy.PluginManager, module: Any, name: str) -> None:
    try:
        pm.register(module, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from exc


def manager() -> pluggy.PluginManager:
    """The plugin manager with the built-ins and every installed ``concierge`` entry point loaded."""
    global _manager
    if _manager is not None:
        return _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(GROUP)
            pm.add_hookspecs(Hooks)
            for name in DEFAULT_PLUGINS:
                try:
                    module = importlib.import_module(name)
                except ImportError as exc:
                    raise PluginError(f"built-in plugin {name} failed to import: {exc}") from exc
                _register(pm, module, name)
            _packages.clear()
            _entry_point_plugins(pm)
            for name, module in _extra:
                _register(pm, module, name)
            try:
                pm.check_pending()  # a @hookimpl whose name is no hook (a typo) is an error, not ignored
            except pluggy.PluginValidationError as exc:
                raise PluginError(
                    f"plugin {_name_of(pm, exc.plugin)!r}: {exc} (hooks: {_hook_names()})"
                ) from exc
            _manager = pm
        return _manager


def _hook_names() -> str:
    return ", ".join(name for name in vars(Hooks) if name.startswith("register_"))


def _name_of(pm: pluggy.PluginManager, plugin: Any) -> str:
    return pm.get_name(plugin) or str(plugin)


def _plugin_name(pm: pluggy.PluginManager, impl: Any) -> str:
    return _name_of(pm, impl.plugin)


def _call(impl: Any, plugin: str, hook: str, *args: Any) -> None:
    """Run one plugin's hook; what it raises (but a PluginError) becomes a PluginError naming it."""
    try:
        impl.function(*args)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's bug, reported as one line naming it
        raise PluginError(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}") from exc


def _table(kind: str) -> dict[str, Entry]:
    table = _tables.get(kind)  # fast path: lookups on hot paths (chat formats) take no lock
    if table is not None:
        return table
    if kind not in KINDS or kind == "commands":
        raise ValueError(f"unknown plugin kind {kind!r}")
    with _lock:
        if kind in _tables:
            return _tables[kind]
        pm = manager()
        table = {}
        hook = f"register_{kind}"
        for impl in getattr(pm.hook, hook).get_hookimpls():  # registration order: built-ins first
            plugin = _plugin_name(pm, impl)

            def register(name: str, target: Any, *, _plugin: str = plugin) -> None:
                key = str(name)
                if key in table:
                    raise PluginError(
                        f"{kind[:-1].replace('_', ' ')} {key!r} is registered twice "
                        f"(by {table[key].plugin} and by {_plugin})"
                    )
                table[key] = Entry(key, target, _plugin)

            _call(impl, plugin, hook, register)
        _tables[kind] = table
        return table


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted (``commands``: those the last :func:`add_commands` added)."""
    return sorted(entries(kind))


def entries(kind: str) -> dict[str, Entry]:
    """Name -> :class:`Entry` for one kind (who registered it, and what), in registration order."""
    if kind == "commands":
        return dict(_commands)
    return dict(_table(kind))


def get(kind: str, name: str) -> Any | None:
    """The registered object (imported if it was registered as a string), or ``None``."""
    entry = _table(kind).get(name)
    return entry.load() if entry is not None else None


def _command_infos(cli: Any) -> list[tuple[str, Any]]:
    """(name, info) of the typer app's top-level commands and sub-apps."""
    found: list[tuple[str, Any]] = []
    for info in getattr(cli, "registered_commands", ()):
        callback = getattr(info, "callback", None)
        name = info.name or (callback.__name__.lower().replace("_", "-") if callback else "?")
        found.append((name, info))
    for info in getattr(cli, "registered_groups", ()):
        sub = getattr(info, "typer_instance", None)
        name = info.name or getattr(getattr(sub, "info", None), "name", None) or "?"
        found.append((name, info))
    return found


def add_commands(cli: Any) -> None:
    """Let every plugin (built-in commands first) add its commands to the typer app ``cli``.

    A command name added twice is a :class:`PluginError` naming both plugins.
    """
    with _lock:
        pm = manager()
        added: dict[str, Entry] = {}
        for impl in pm.hook.register_commands.get_hookimpls():  # registration order: built-ins first
            plugin = _plugin_name(pm, impl)
            before = {id(info) for _, info in _command_infos(cli)}
            _call(impl, plugin, "register_commands", cli)
            for name, info in _command_infos(cli):
                if id(info) in before:
                    continue
                if name in added:
                    raise PluginError(
                        f"command {name!r} is registered twice (by {added[name].plugin} and by {plugin})"
                    )
                added[name] = Entry(name, info, plugin)
        _commands.clear()
        _commands.update(added)


def plugin_list() -> list[dict[str, Any]]:
    """Every registered plugin, built-ins first: its name, package, hooks and what it registers by kind.

    ``commands`` lists what the last :func:`add_commands` added (the CLI calls it as it starts).
    """
    pm = manager()
    tables = {kind: entries(kind) for kind in KINDS}
    listed: list[dict[str, Any]] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        package = _packages.get(name)
        item: dict[str, Any] = {
            "name": name,
            "builtin": name in DEFAULT_PLUGINS,
            "package": package[0] if package else ("concierge" if name in DEFAULT_PLUGINS else None),
            "version": package[1] if package else None,
            "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()),
        }
        for kind in KINDS:
            item[kind] = [entry.name for entry in tables[kind].values() if entry.plugin == name]
        listed.append(item)
    return listed


def register_plugin(module: Any, name: str | None = None) -> None:
    """Add a plugin module at run time (tests; a deployment naming its own module)."""
    key = name or getattr(module, "__name__", repr(module))
    with _lock:
        if _manager is not None:
            _register(_manager, module, key)
        _extra.append((key, module))
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
        _commands.clear()
        _packages.clear()
