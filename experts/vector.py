"""box_action: a generic continuous action (a Gymnasium `Box` space of up to 16 dimensions).

The recorder scales each dimension from the space's declared bounds [low, high] to [−1, 1] (the
bounds are kept in the episode's metadata), so actions of different environments share a scale;
a space with fewer than 16 dimensions fills the first ones and leaves the rest at zero. A plugin
that knows what its dimensions mean registers a modality of its own instead.
"""

from __future__ import annotations

import numpy as np

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, latent_frame_indices

BOX_DIMS = 16


class BoxAction(Modality):
    """Raw: [T, d] per frame, d ≤ 16, each value in [−1, 1] (the space's bounds mapped there); row t
    leads from frame t−1 into frame t (row 0 is ignored). Vector (16): the mean of the latent
    frame's raw rows, zero-padded to 16."""

    name = "box_action"
    action_dim = BOX_DIMS
    raw_format = f"per-frame [T, d] with d ≤ {BOX_DIMS}, each dimension scaled to [-1, 1] by its declared bounds"
    vector_format = f"mean of the latent frame's rows, zero-padded to {BOX_DIMS}"
    bounds = {"raw": (-1.0, 1.0)}

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        a = np.asarray(raw, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or not 1 <= a.shape[1] <= BOX_DIMS:
            raise ShapeError(f"{self.name}: expected raw actions [T, d] with 1 ≤ d ≤ {BOX_DIMS}, got {a.shape}")
        self.check_values(a)
        padded = np.zeros((len(a), BOX_DIMS))
        padded[:, : a.shape[1]] = a
        idx = latent_frame_indices(len(a), temporal_factor)
        vectors = [padded[s + 1 : e + 1].mean(0) for s, e in zip(idx[:-1], idx[1:])]
        return self._aligned(np.array(vectors, dtype=np.float32).reshape(-1, BOX_DIMS))


def scale_to_unit(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A Box action -> [−1, 1] per dimension by the space's bounds (clipped; an unbounded dimension
    is refused by the recorder before this is called)."""
    action = np.clip(np.asarray(action, dtype=np.float64), low, high)
    return 2.0 * (action - low) / (high - low) - 1.0
