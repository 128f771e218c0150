"""Astra world: interactive world models by autoregressive denoising over latent video chunks."""

from .config import AstraConfig, DiTConfig, dit_preset
from .errors import AstraError, CheckpointError, ConfigError, ShapeError, WeightLoadError
from .model import AstraDiT, KVCache
from .plugins import hookimpl

__version__ = "0.1.0"

__all__ = [
    "AstraConfig",
    "AstraDiT",
    "AstraError",
    "CheckpointError",
    "ConfigError",
    "DiTConfig",
    "KVCache",
    "ShapeError",
    "WeightLoadError",
    "dit_preset",
    "hookimpl",
]
