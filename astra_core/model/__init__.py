"""Networks: the DiT backbone, the action path, and Wan weight I/O."""

from .dit import AstraDiT
from .kv_cache import KVCache

__all__ = ["AstraDiT", "KVCache"]
