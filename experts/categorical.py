"""Categorical action modalities: one of N named actions per frame (a Gymnasium `Discrete` space).

Two are built in:
- `atari_action`: the Arcade Learning Environment's full set of 18 actions, by meaning. A game that
  uses a minimal set (Breakout: NOOP, FIRE, RIGHT, LEFT) records each action by its meaning, so every
  Atari game shares one vocabulary and one model can learn several.
- `discrete_action`: any `Discrete(n)` space with n ≤ 32, action i in slot i; the environment's own
  meaning names, when it has them, are kept in each recorded episode's metadata.

A plugin that wants a vocabulary of its own subclasses `CategoricalAction` with its `name` and
`meanings`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, Normalizer, check_finite, latent_frame_indices

# ALE's full action set, in its own order (ale_py.Action 0 … 17)
ATARI_MEANINGS = (
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
)
DISCRETE_SLOTS = 32


class ShareNormalizer(Normalizer):
    """Shares of frames stay as they are: they already lie in [0, 1]; fitting only marks it fitted."""

    @torch.no_grad()
    def fit(self, actions, mask=None):
        super().fit(actions, mask)
        self.mean.zero_()
        self.std.fill_(1.0)
        return self


class ActionEmbeddingEncoder(nn.Module):
    """A learned embedding per action, weighed by its share of the latent frame, then an MLP."""

    def __init__(self, num_actions: int, token_dim: int):
        super().__init__()
        self.embed = nn.Linear(num_actions + 1, token_dim, bias=False)  # + the mask
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(token_dim, token_dim))

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(actions.dtype)[..., None]
        return self.out(self.embed(torch.cat([actions * m, m], dim=-1)))


class CategoricalAction(Modality):
    """Raw: per-frame action indices [T] (integers in 0 … N−1, or meaning names from `meanings`);
    row t is the action that leads from frame t−1 into frame t (row 0 is ignored). Vector (N): the
    share of the latent frame's raw frames in which each action was taken."""

    meanings: tuple[str, ...] = ()

    def __init__(self) -> None:
        if not self.meanings:
            raise TypeError(f"{type(self).__name__}: a categorical modality needs its `meanings`")
        self.action_dim = len(self.meanings)
        self.raw_format = f"per-frame action index [T] in 0 … {self.action_dim - 1} (or its meaning name)"
        self.vector_format = f"share of the latent frame's frames each of the {self.action_dim} actions is taken"

    def describe(self) -> dict:
        return {**super().describe(), "meanings": list(self.meanings)}

    def indices(self, raw) -> np.ndarray:
        """Raw stream -> integer indices [T], checked."""
        values = list(raw) if not isinstance(raw, np.ndarray) else raw
        if isinstance(values, list) and values and isinstance(values[0], str):
            lookup = {m: i for i, m in enumerate(self.meanings)}
            out = np.zeros(len(values), dtype=np.int64)
            for t, v in enumerate(values):
                if v not in lookup:
                    raise ShapeError(f"{self.name}: unknown action {v!r} at frame {t}; known: {list(self.meanings)}")
                out[t] = lookup[v]
            return out
        a = np.asarray(values)
        if a.ndim != 1:
            raise ShapeError(f"{self.name}: expected action indices [T], got an array of shape {a.shape}")
        if len(a) < 1:
            raise ShapeError(f"{self.name}: no frames")
        if not np.issubdtype(a.dtype, np.integer):
            check_finite(self.name, a)
            if not np.all(a == np.round(a)):
                raise ShapeError(f"{self.name}: action indices must be whole numbers (got {a.dtype} values)")
            a = a.astype(np.int64)
        bad = np.nonzero((a < 0) | (a >= self.action_dim))[0]
        if len(bad):
            raise ShapeError(
                f"{self.name}: action {int(a[bad[0]])} at frame {int(bad[0])} lies outside 0 … {self.action_dim - 1}"
            )
        return a.astype(np.int64)

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        a = self.indices(raw)
        hot = np.eye(self.action_dim, dtype=np.float32)[a]
        idx = latent_frame_indices(len(a), temporal_factor)
        vectors = [hot[s + 1 : e + 1].mean(0) for s, e in zip(idx[:-1], idx[1:])]
        return self._aligned(np.array(vectors, dtype=np.float32).reshape(-1, self.action_dim))

    def normalizer(self) -> Normalizer:
        return ShareNormalizer(self.action_dim)

    def encoder(self, token_dim: int) -> nn.Module:
        return ActionEmbeddingEncoder(self.action_dim, token_dim)


class AtariAction(CategoricalAction):
    name = "atari_action"
    meanings = ATARI_MEANINGS


class DiscreteAction(CategoricalAction):
    name = "discrete_action"
    meanings = tuple(f"action_{i}" for i in range(DISCRETE_SLOTS))
