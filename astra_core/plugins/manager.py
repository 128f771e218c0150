"""Plugin loading and the registries built from the hooks.

Plugins are found in the `astra` entry-point group and each is isolated from the others: one that
fails to import, whose registration hook raises or registers something malformed, that takes a name
another plugin already registered, or whose entry-point name another package uses too, is marked
failed with the reason (`astra plugins` lists it), nothing it registered is kept, and everything
else still works. Set ASTRA_DISABLE_PLUGIN_AUTOLOAD=1 to skip entry points entirely (tests then
register plugins by hand with `register_plugin`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import pluggy

from astra_core.errors import PluginError
from astra_core.plugins import hookspecs

ENTRY_POINT_GROUP = "astra"
AUTOLOAD_ENV = "ASTRA_DISABLE_PLUGIN_AUTOLOAD"
CORE_PLUGINS = ("astra_core.model.moae",)  # modules of the core that register through the hooks
KINDS = ("modalities", "readers", "embodiments", "routers", "worlds", "env_adapters")
SINGULAR = {
    "modalities": "modality",
    "readers": "reader",
    "embodiments": "embodiment",
    "routers": "router",
    "worlds": "world",
    "env_adapters": "environment adapter",
}


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    source: str = ""  # the entry point value or "core"/"manual"
    error: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)
    package: str = ""  # the distribution that declares the entry point, where known

    @property
    def label(self) -> str:
        """How messages name the plugin: its entry-point name and, where known, its package."""
        return f"plugin {self.name!r} (package {self.package!r})" if self.package else f"plugin {self.name!r}"


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    modalities: dict[str, Any] = field(default_factory=dict)
    readers: dict[str, Any] = field(default_factory=dict)
    embodiments: dict[str, Any] = field(default_factory=dict)
    routers: dict[str, Any] = field(default_factory=dict)
    worlds: dict[str, Any] = field(default_factory=dict)
    env_adapters: dict[str, Any] = field(default_factory=dict)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # plugin label -> why it was left out

    def get(self, kind: str, name: str) -> Any:
        if kind not in KINDS:
            raise PluginError(f"registry: unknown kind {kind!r}; choose one of {list(KINDS)}")
        table = getattr(self, kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            failed = "".join(f"; {label} failed: {why}" for label, why in self.failed.items())
            raise PluginError(f"unknown {SINGULAR[kind]} {name!r}; registered: {known}{failed}")
        return table[name]


class _HookFailure(Exception):
    """A plugin's registration hook raised or registered something malformed."""

    def __init__(self, plugin: str, reason: str):
        super().__init__(reason)
        self.plugin = plugin


def _item_name(kind: str, args: tuple) -> tuple[str, Any]:
    """(name, item) of one `register(...)` call, checked: routers are registered as (name, class or factory),
    everything else as one object with a string `name`."""
    if kind == "routers":
        if len(args) != 2 or not isinstance(args[0], str) or not callable(args[1]):
            raise TypeError(f"register(name, router_class) expected for a router, got {len(args)} argument(s)")
        from astra_core.model.moae import Router

        if not (isinstance(args[1], type) and issubclass(args[1], Router)):
            raise TypeError(f"router {args[0]!r} is {args[1]!r}, not a subclass of astra_core.Router")
        return args[0], args[1]
    if len(args) != 1:
        raise TypeError(f"register(item) takes one {SINGULAR[kind]} object, got {len(args)} arguments")
    (item,) = args
    name = getattr(item, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"register() got {type(item).__name__}, which has no string `name`")
    if kind == "env_adapters":
        from astra_core.envs import EnvAdapter

        if not (isinstance(item, type) and issubclass(item, EnvAdapter)):
            raise TypeError(f"environment adapter {name!r} is not a subclass of astra_core.envs.EnvAdapter")
    if kind == "modalities":
        from astra_core.modality import Modality

        if not isinstance(item, Modality):
            raise TypeError(f"modality {name!r} is a {type(item).__name__}, not an astra_core.Modality")
    if kind == "embodiments":
        from astra_core.modality import Embodiment

        if not isinstance(item, Embodiment):
            raise TypeError(f"embodiment {name!r} is a {type(item).__name__}, not an astra_core.Embodiment")
    needs = {"readers": ("read",), "worlds": ("episode",)}.get(kind, ())
    missing = [method for method in needs if not callable(getattr(item, method, None))]
    if kind == "worlds" and not isinstance(getattr(item, "modality", None), str):
        missing.append("modality (a modality's name)")
    if missing:
        raise TypeError(f"{SINGULAR[kind]} {name!r} ({type(item).__name__}) has no {', '.join(missing)}")
    return name, item


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
        from astra_core import __version__

        # The core's own routers come through the same hook, loaded by module name as entry points are,
        # so the plugin machinery never imports the model (which imports the registry).
        for module in CORE_PLUGINS:
            self.register_plugin(import_module(module), "astra_core", version=__version__, source="core")
        if os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0", "false"):
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", "") or ""
            package = getattr(dist, "name", "") or ""
            if ep.name in self.info:  # two packages declare one entry-point name: the first keeps it
                first = self.info[ep.name]
                why = f"the entry-point name {ep.name!r} is taken by {first.label}; rename one of the two"
                self.info[f"{ep.name} ({package or ep.value})"] = PluginInfo(
                    ep.name, version, ep.value, error=why, package=package
                )
                continue
            try:
                plugin = ep.load()
            except Exception as err:  # a broken plugin must not take the others down
                self.info[ep.name] = PluginInfo(
                    ep.name, version, ep.value, error=f"{type(err).__name__}: {err}", package=package
                )
                continue
            self.register_plugin(plugin, ep.name, version=version, source=ep.value, package=package)

    def register_plugin(
        self, plugin: Any, name: str, version: str = "", source: str = "manual", package: str = ""
    ) -> None:
        """Add a plugin (a module or object with hookimpls); the registries are rebuilt on next use."""
        if self.pm.has_plugin(name) or name in self.info:
            raise PluginError(f"a plugin named {name!r} is already registered ({self.info[name].label})")
        self.pm.register(plugin, name=name)
        self.info[name] = PluginInfo(name, version, source, package=package)
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
        """Call every plugin's hooks. A plugin whose hook fails is marked failed and left out, and the
        collection starts again without it, so nothing it registered before failing is kept."""
        failed: set[str] = set()
        while True:
            registry = Registry()
            for info in self.info.values():
                info.registers = {}
            try:
                for kind in KINDS:
                    hook = getattr(self.pm.hook, f"astra_register_{kind}")
                    for impl in reversed(hook.get_hookimpls()):  # registration order
                        if impl.plugin_name not in failed:
                            self._call(impl, kind, registry)
            except _HookFailure as failure:
                if failure.plugin == "astra_core":  # the core's own routers: a bug, not a plugin's
                    raise PluginError(f"the core's registration failed: {failure}") from failure
                failed.add(failure.plugin)
                self.info[failure.plugin].error = str(failure)
                continue
            for name in failed:
                self.info[name].registers = {}
                registry.failed[self.info[name].label] = self.info[name].error or ""
            for info in self.info.values():
                if info.error and info.name not in failed:
                    registry.failed[info.label] = info.error
            return registry

    def _call(self, impl, kind: str, registry: Registry) -> None:
        plugin = impl.plugin_name
        table = getattr(registry, kind)
        label = self.info[plugin].label

        def register(*args: Any) -> None:
            try:
                name, item = _item_name(kind, args)
            except TypeError as err:
                raise _HookFailure(plugin, f"astra_register_{kind}: {err}") from None
            if name in table:
                other = self.info[registry.owner[(kind, name)]].label
                raise _HookFailure(plugin, f"{kind}: {name!r} is registered by both {other} and {label}")
            table[name] = item
            registry.owner[(kind, name)] = plugin
            self.info[plugin].registers.setdefault(kind, []).append(name)

        try:
            impl.function(register=register)
        except _HookFailure:
            raise
        except Exception as err:  # a plugin's own bug must not take the other plugins down
            raise _HookFailure(plugin, f"astra_register_{kind} raised {type(err).__name__}: {err}") from None


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
