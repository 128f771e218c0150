"""The plugin system: hook specifications, loading from the `astra` entry-point group, registries."""

from astra_core.plugins.hookspecs import hookimpl, hookspec
from astra_core.plugins.manager import (
    AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    AstraPlugins,
    PluginError,
    PluginInfo,
    Registry,
    get_registry,
    plugins,
    reset_plugins,
)

__all__ = [
    "AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "AstraPlugins",
    "PluginError",
    "PluginInfo",
    "Registry",
    "get_registry",
    "hookimpl",
    "hookspec",
    "plugins",
    "reset_plugins",
]
