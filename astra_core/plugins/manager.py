"""Plugin loading and the registries built from the hooks.

Plugins are found in the `astra` entry-point group and each is loaded on its own: one that fails to
import is recorded with its error and the others still load. Set ASTRA_DISABLE_PLUGIN_AUTOLOAD=1 to
skip entry points entirely (tests then register plugins by hand with `register_plugin`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ..errors import AstraError
from . import hookspecs

ENTRY_POINT_GROUP = "astra"
AUTOLOAD_ENV = "ASTRA_DISABLE_PLUGIN_AUTOLOAD"
KINDS = ("modalities", "readers", "embodiments", "routers", "worlds")


class PluginError(AstraError):
    """A plugin clashes with another or is unknown."""


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    source: str = ""  # the entry point value or "core"/"manual"
    error: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    modalities: dict[str, Any] = field(default_factory=dict)
    readers: dict[str, Any] = field(default_factory=dict)
    embodiments: dict[str, Any] = field(default_factory=dict)
    routers: dict[str, Any] = field(default_factory=dict)
    worlds: dict[str, Any] = field(default_factory=dict)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Any:
        table = getattr(self, kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(
                f"unknown {kind[:-1] if kind != 'modalities' else 'modality'} {name!r}; registered: {known}"
            )
        return table[name]


def _item_name(kind: str, args: tuple) -> tuple[str, Any]:
    if kind == "routers":
        name, item = args
        return name, item
    (item,) = args
    return item.name, item


class AstraPlugins:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("astra")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._loaded = False
        self._registry: Registry | None = None

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from .. import (
            __version__,
            moae,  # the core's own routers, registered through the same hook
        )

        self.register_plugin(moae, "astra_core", version=__version__, source="core")
        if os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0", "false"):
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            version = ep.dist.version if ep.dist is not None else ""
            try:
                plugin = ep.load()
            except Exception as err:  # a broken plugin must not take the others down
                self.info[ep.name] = PluginInfo(ep.name, version, ep.value, error=f"{type(err).__name__}: {err}")
                continue
            self.register_plugin(plugin, ep.name, version=version, source=ep.value)

    def register_plugin(self, plugin: Any, name: str, version: str = "", source: str = "manual") -> None:
        """Add a plugin (a module or object with hookimpls); the registries are rebuilt on next use."""
        if self.pm.has_plugin(name) or name in self.info:
            raise PluginError(f"a plugin named {name!r} is already registered")
        self.pm.register(plugin, name=name)
        self.info[name] = PluginInfo(name, version, source)
        self._registry = None

    def unregister_plugin(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registry = None

    def registry(self) -> Registry:
        self.load()
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for info in self.info.values():
            info.registers = {}
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"astra_register_{kind}")
            for impl in reversed(hook.get_hookimpls()):  # registration order
                self._call(impl, kind, registry)
        return registry

    def _call(self, impl, kind: str, registry: Registry) -> None:
        plugin = impl.plugin_name
        table = getattr(registry, kind)

        def register(*args: Any) -> None:
            name, item = _item_name(kind, args)
            if name in table:
                other = registry.owner[(kind, name)]
                raise PluginError(f"{kind}: {name!r} is registered by both plugin {other!r} and plugin {plugin!r}")
            table[name] = item
            registry.owner[(kind, name)] = plugin
            self.info[plugin].registers.setdefault(kind, []).append(name)

        impl.function(register=register)


_PLUGINS: AstraPlugins | None = None


def plugins() -> AstraPlugins:
    """The process-wide plugin manager (entry points are loaded on first use)."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = AstraPlugins()
    return _PLUGINS


def get_registry() -> Registry:
    return plugins().registry()


def reset_plugins() -> None:
    """Forget loaded plugins; the next use loads them again (for tests)."""
    global _PLUGINS
    _PLUGINS = None
