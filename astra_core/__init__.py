"""Astra world: interactive world models by autoregressive denoising over latent video chunks.

The names a user composes are importable from here: `from astra_core import WorldModel, Trainer,
TrainConfig, MoAE, TopKRouter, ...`. The light ones (configs, errors, the DiT) load with the package;
the rest load on first use, so `import astra_core` stays quick and never pulls in a plugin.
"""

from importlib import import_module

from astra_core.config import (
    ActionConfig,
    AstraConfig,
    DataConfig,
    DiTConfig,
    FlowConfig,
    GuidanceConfig,
    HistoryConfig,
    OptimConfig,
    SamplerConfig,
    TrainConfig,
    dit_preset,
)
from astra_core.errors import (
    ActionFileError,
    AstraError,
    CacheError,
    CheckpointError,
    ConfigError,
    PluginError,
    ReaderError,
    ShapeError,
    WeightLoadError,
)
from astra_core.model import AstraDiT, KVCache
from astra_core.plugins import hookimpl

__version__ = "0.5.0.dev0"

# name -> the submodule that defines it, imported when the name is first used
_LAZY = {
    "WorldModel": "world",
    "Modality": "modality",
    "AlignedActions": "modality",
    "Embodiment": "modality",
    "Episode": "data",
    "LatentWorldModel": "model.rollout",
    "AstraNet": "model.actions",
    "MoAE": "model.moae",
    "SharedActionEncoder": "model.moae",
    "Router": "model.moae",
    "TopKRouter": "model.moae",
    "SoftRouter": "model.moae",
    "FixedRouter": "model.moae",
    "SharedRouter": "model.moae",
    "RouterContractError": "model.moae",
    "PerModalityRouter": "model.moae",
    "MixtureRouter": "model.moae",
    "router_spec": "model.moae",
    "build_router": "model.moae",
    "check_router": "model.moae",
    "WorldModelObjective": "model.objective",
    "RectifiedFlow": "model.flow",
    "Trainer": "apps.train",
    "get_registry": "plugins",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_world_checkpoint": "checkpoint",
    "PixelTokenizer": "data.tokenizer",
    "CausalVideoVAE": "data.tokenizer",
    "EvalSettings": "apps.evaluate",
    "evaluate_embodiment": "apps.evaluate",
    "run_benchmark": "apps.evaluate",
    "teacher_forced": "apps.evaluate",
    "sharpness": "apps.evaluate",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'astra_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ActionConfig",
    "ActionFileError",
    "AstraConfig",
    "AstraDiT",
    "AstraError",
    "CacheError",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DiTConfig",
    "FlowConfig",
    "GuidanceConfig",
    "HistoryConfig",
    "KVCache",
    "OptimConfig",
    "PluginError",
    "ReaderError",
    "SamplerConfig",
    "ShapeError",
    "TrainConfig",
    "WeightLoadError",
    "dit_preset",
    "hookimpl",
    *_LAZY,
]
