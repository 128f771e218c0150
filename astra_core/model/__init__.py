"""Networks: the DiT backbone, the action path, and Wan weight I/O."""

from astra_core.model.dit import AstraDiT
from astra_core.model.kv_cache import KVCache

__all__ = ["AstraDiT", "KVCache"]
