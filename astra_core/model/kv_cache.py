"""Per-layer key/value cache of history tokens for streaming rollout.

Each committed chunk is one segment. A segment's keys and values are computed once, by a forward
pass over that chunk at its own (clean) timestep while the cache is in write mode, and are then
reused by every denoising step of later chunks. When the history window is full, whole segments are
evicted, oldest first, except the sink segments (the first chunk); keys kept in the cache stay exactly
as they were computed.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from astra_core.model.memory import segments_to_evict


@dataclass
class Segment:
    positions: torch.Tensor  # [F] temporal RoPE positions of the segment's frames
    num_tokens: int
    sink: bool


class LayerKV:
    """Keys and values of one layer in a growing buffer [B, heads, capacity, head_dim].

    The first `length` slots hold committed history. A forward pass writes its new keys/values into
    the slots right after them and attends over the buffer's prefix, so reading the cache copies
    nothing; committing a pass just advances `length`.
    """

    def __init__(self, cache: KVCache):
        self._cache = cache
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0
        self._pending = 0

    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self.length]

    def attend(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values for attention: the cached ones followed by the new ones (kept if writing)."""
        end = self.length + k_new.shape[2]
        self._reserve(k_new, end)
        self._k[:, :, self.length : end] = k_new.detach()
        self._v[:, :, self.length : end] = v_new.detach()
        self._pending = k_new.shape[2] if self._cache.is_writing else 0
        return self._k[:, :, :end], self._v[:, :, :end]

    def _reserve(self, like: torch.Tensor, size: int) -> None:
        if self._k is not None and self._k.shape[2] >= size:
            return
        capacity = max(size, 2 * (self._k.shape[2] if self._k is not None else 0))
        shape = (*like.shape[:2], capacity, like.shape[3])
        k = like.new_empty(shape)
        v = like.new_empty(shape)
        if self.length:
            k[:, :, : self.length] = self._k[:, :, : self.length]
            v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v

    def _commit(self) -> None:
        self.length += self._pending
        self._pending = 0

    def _keep(self, token_slices: list[slice]) -> None:
        """Compact the kept token ranges to the front of the buffer."""
        k = torch.cat([self._k[:, :, s] for s in token_slices], dim=2)
        v = torch.cat([self._v[:, :, s] for s in token_slices], dim=2)
        self.length = k.shape[2]
        self._k[:, :, : self.length] = k
        self._v[:, :, : self.length] = v


class KVCache:
    """The history of one rollout (one batch of sessions) across all layers."""

    def __init__(self, num_layers: int):
        self.layers = [LayerKV(self) for _ in range(num_layers)]
        self.segments: list[Segment] = []
        self.next_position = 0
        self.is_writing = False
        self._sink_write = False

    def layer(self, index: int) -> LayerKV:
        return self.layers[index]

    @contextmanager
    def writing(self, sink: bool = False):
        """Forward passes inside this block add their tokens to the cache as one segment."""
        self.is_writing, self._sink_write = True, sink
        try:
            yield self
        finally:
            self.is_writing = False
            for layer in self.layers:
                layer._pending = 0

    def finish_pass(self, frame_positions: torch.Tensor, tokens_per_frame: int) -> None:
        """Called by the model after a forward pass; commits the pass if the cache is writing."""
        if not self.is_writing:
            return
        for layer in self.layers:
            layer._commit()
        positions = frame_positions.detach().cpu()
        self.segments.append(Segment(positions, len(positions) * tokens_per_frame, self._sink_write))
        self.next_position = max(self.next_position, int(positions.max()) + 1)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.segments)

    @property
    def num_frames(self) -> int:
        return sum(len(s.positions) for s in self.segments)

    def frame_positions(self) -> torch.Tensor:
        return torch.cat([s.positions for s in self.segments]) if self.segments else torch.zeros(0, dtype=torch.long)

    def evict(self, window_frames: int) -> None:
        """Drop the oldest non-sink segments until at most `window_frames` non-sink frames remain."""
        drop = segments_to_evict(
            [len(s.positions) for s in self.segments], [s.sink for s in self.segments], window_frames
        )
        if not drop:
            return
        keep, start = [], 0
        for i, s in enumerate(self.segments):
            if i not in drop:
                keep.append(slice(start, start + s.num_tokens))
            start += s.num_tokens
        for layer in self.layers:
            layer._keep(keep)
        self.segments = [s for i, s in enumerate(self.segments) if i not in drop]

    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (their capacity, not only the committed part)."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in (layer._k, layer._v) if t is not None)
