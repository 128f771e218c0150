"""The plugin contract: every hook receives a `register` callback and calls it once per item."""

import pluggy

hookspec = pluggy.HookspecMarker("astra")
hookimpl = pluggy.HookimplMarker("astra")


@hookspec
def astra_register_modalities(register):
    """Register action modalities: `register(modality)` with a `astra_core.modality.Modality` instance."""


@hookspec
def astra_register_readers(register):
    """Register dataset readers: `register(reader)` with an object that has `name` and `read(path)`."""


@hookspec
def astra_register_embodiments(register):
    """Register embodiments: `register(astra_core.modality.Embodiment(...))` naming its modalities."""


@hookspec
def astra_register_routers(register):
    """Register MoAE routers: `register(name, router_class)` with a `astra_core.model.moae.Router` subclass."""


@hookspec
def astra_register_worlds(register):
    """Register procedural worlds: `register(world)` with an object that has `name` and `modality`."""


@hookspec
def astra_register_env_adapters(register):
    """Register environment adapters for `astra record`: `register(adapter_class)` with a subclass of
    `astra_core.envs.EnvAdapter` (how one family of Gymnasium environments' actions becomes a
    modality's raw stream)."""
