"""discrete_cmd: pressed keys (and optional mouse motion) per frame -> multi-hot per latent frame."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, Normalizer, latent_frame_indices

KEYS = ("W", "A", "S", "D", "UP", "DOWN", "LEFT", "RIGHT", "SPACE", "SHIFT")


class KeyNormalizer(Normalizer):
    """Key shares stay as they are (already in [0, 1]); only the mouse dimensions are standardised."""

    def fit(self, actions, mask=None):
        super().fit(actions, mask)
        with torch.no_grad():
            self.mean[: len(KEYS)] = 0.0
            self.std[: len(KEYS)] = 1.0
        return self


class KeyEmbeddingEncoder(nn.Module):
    """A learned embedding per key, summed with the keys' shares, plus a projection of mouse motion."""

    def __init__(self, token_dim: int):
        super().__init__()
        self.keys = nn.Linear(len(KEYS), token_dim, bias=False)  # column k = embedding of key k
        self.mouse = nn.Linear(3, token_dim)  # dx, dy, mask
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(token_dim, token_dim))

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(actions.dtype)[..., None]
        keys, mouse = actions[..., : len(KEYS)] * m, actions[..., len(KEYS) :] * m
        return self.out(self.keys(keys) + self.mouse(torch.cat([mouse, m], dim=-1)))


class DiscreteCommand(Modality):
    """Raw: {"keys": per-frame collections of key names from KEYS (or a [T, 10] 0/1 array),
    "mouse": optional [T, 2] mouse dx, dy}; row t leads from frame t−1 into frame t. Vector (12):
    the share of the latent frame's raw frames in which each key is held (10), and summed mouse
    motion (2)."""

    name = "discrete_cmd"
    action_dim = len(KEYS) + 2
    raw_format = f"per-frame pressed keys from {list(KEYS)} and optional mouse dx, dy [T, 2]"
    vector_format = "share of frames each key is held (10) + summed mouse dx, dy (2)"
    bounds = {"keys": (0.0, 1.0), "mouse": (-1e4, 1e4)}  # held 0/1; mouse motion in pixels per frame

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        keys, mouse = self.multi_hot(raw)
        idx = latent_frame_indices(len(keys), temporal_factor)
        vectors = [
            np.concatenate([keys[s + 1 : e + 1].mean(0), mouse[s + 1 : e + 1].sum(0)])
            for s, e in zip(idx[:-1], idx[1:])
        ]
        return self._aligned(np.array(vectors, dtype=np.float32).reshape(-1, self.action_dim))

    def multi_hot(self, raw) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(raw, dict) or "keys" not in raw:
            raise ShapeError(f"{self.name}: expected a dict with 'keys' (and optionally 'mouse')")
        keys = raw["keys"]
        if isinstance(keys, np.ndarray) and keys.ndim == 2:
            if keys.shape[1] != len(KEYS):
                raise ShapeError(f"{self.name}: key array must be [T, {len(KEYS)}], got {keys.shape}")
            hot = keys.astype(np.float32)
        else:
            hot = np.zeros((len(keys), len(KEYS)), dtype=np.float32)
            for t, pressed in enumerate(keys):
                for key in pressed:
                    name = str(key).upper()
                    if name not in KEYS:
                        raise ShapeError(f"{self.name}: unknown key {key!r} at frame {t}; known keys: {list(KEYS)}")
                    hot[t, KEYS.index(name)] = 1.0
        mouse = np.zeros((len(hot), 2), dtype=np.float32) if raw.get("mouse") is None else np.asarray(raw["mouse"])
        if mouse.shape != (len(hot), 2):
            raise ShapeError(f"{self.name}: mouse must be [T, 2] = [{len(hot)}, 2], got {mouse.shape}")
        self.check_values(hot, "keys")
        self.check_values(mouse, "mouse")
        if len(hot) < 1:
            raise ShapeError(f"{self.name}: no frames")
        return hot, mouse.astype(np.float32)

    def normalizer(self) -> Normalizer:
        return KeyNormalizer(self.action_dim)

    def encoder(self, token_dim: int) -> nn.Module:
        return KeyEmbeddingEncoder(token_dim)
