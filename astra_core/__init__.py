"""Astra world: interactive world models by autoregressive denoising over latent video chunks.

The names a user composes are importable from here: `from astra_core import WorldModel, Trainer,
TrainConfig, MoAE, TopKRouter, ...`. The light ones (configs, errors, the DiT) load with the package;
the rest load on first use, so `import astra_core` stays quick and never pulls in a plugin.
"""

from importlib import import_module

from .config import (
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
from .errors import AstraError, CheckpointError, ConfigError, ReaderError, ShapeError, WeightLoadError
from .model import AstraDiT, KVCache
from .plugins import hookimpl

__version__ = "0.3.0"

# name -> the submodule that defines it, imported when the name is first used
_LAZY = {
    "WorldModel": "world",
    "LatentWorldModel": "rollout",
    "AstraNet": "model.actions",
    "MoAE": "moae",
    "SharedActionEncoder": "moae",
    "Router": "moae",
    "TopKRouter": "moae",
    "SoftRouter": "moae",
    "FixedRouter": "moae",
    "SharedRouter": "moae",
    "RouterContractError": "moae",
    "PerModalityRouter": "moae",
    "MixtureRouter": "moae",
    "router_spec": "moae",
    "build_router": "moae",
    "check_router": "moae",
    "WorldModelObjective": "objective",
    "RectifiedFlow": "flow",
    "Trainer": "train",
    "get_registry": "plugins",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_world_checkpoint": "checkpoint",
    "PixelTokenizer": "tokenizer",
    "CausalVideoVAE": "tokenizer",
    "EvalSettings": "evaluate",
    "evaluate_embodiment": "evaluate",
    "run_benchmark": "evaluate",
    "teacher_forced": "evaluate",
    "sharpness": "evaluate",
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
    "AstraConfig",
    "AstraDiT",
    "AstraError",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DiTConfig",
    "FlowConfig",
    "GuidanceConfig",
    "HistoryConfig",
    "KVCache",
    "OptimConfig",
    "ReaderError",
    "SamplerConfig",
    "ShapeError",
    "TrainConfig",
    "WeightLoadError",
    "dit_preset",
    "hookimpl",
    *_LAZY,
]
