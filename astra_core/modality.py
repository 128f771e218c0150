"""What an action modality is: the contract every built-in and third-party modality fulfils.

A modality turns a raw per-frame action stream into one vector per *latent* frame (alignment), scales
those vectors with statistics fitted on data (normaliser), and maps them to a unified action token of
width d_u (its expert encoder). Timing: the vector of latent frame i describes the motion from latent
frame i−1 to latent frame i; latent frame 0 gets zeros with mask 0.

Latent frame i stands for raw frame i·temporal_factor: with a Wan-style VAE (factor 4) latent 0 is
frame 0 and latent i ≥ 1 covers frames 4i−3 … 4i; with a pixel tokenizer (factor 1) latent i is frame i.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from astra_core.errors import ShapeError


@dataclass
class AlignedActions:
    """Per-latent-frame actions [F, action_dim] (float32) and their validity mask [F] (float32)."""

    actions: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Embodiment:
    """A body that acts: its name, the modalities it emits, and where its data comes from."""

    name: str
    modalities: tuple[str, ...]
    reader: str | None = None
    world: str | None = None
    description: str = ""


def num_latent_frames(num_frames: int, temporal_factor: int) -> int:
    """Latent frames for `num_frames` raw frames: 1 + (T − 1) // factor (the first frame stands alone)."""
    if temporal_factor < 1:
        raise ShapeError(f"temporal_factor must be >= 1, got {temporal_factor}")
    if num_frames < 1:
        raise ShapeError("an action stream needs at least one frame")
    return 1 + (num_frames - 1) // temporal_factor


def latent_frame_indices(num_frames: int, temporal_factor: int) -> np.ndarray:
    """The raw frame each latent frame stands for: [0, f, 2f, …]."""
    return np.arange(num_latent_frames(num_frames, temporal_factor)) * temporal_factor


def check_finite(name: str, values: np.ndarray | torch.Tensor, what: str = "raw actions") -> None:
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise ShapeError(f"{name}: {what} contain NaN or Inf")


def check_bounds(name: str, values: np.ndarray, low: float, high: float, what: str = "raw actions") -> None:
    """One clear error when any value lies outside [low, high] (NaN and Inf included), naming the
    modality, the part of the stream, the first offending frame and the bound."""
    values = np.asarray(values, dtype=np.float64)
    check_finite(name, values, what)
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.argwhere(outside)[0][0])
        worst = float(values[outside].flat[np.abs(values[outside]).argmax()])
        raise ShapeError(
            f"{name}: {what} reach {worst:.4g} at frame {row}, outside the modality's declared bounds "
            f"[{low:g}, {high:g}]; check the file's units and scale"
        )


class Normalizer(nn.Module):
    """Per-dimension standardisation fitted on data; its statistics are buffers, so they travel in
    checkpoints with the model. Masked-out frames are ignored when fitting and stay zero. A dimension
    that never varied in the fitting data (spread at most `eps`: a toy camera that never rolls) keeps
    the scale 1, so a value the data never held reaches the encoder centred but unscaled, not multiplied
    by 1/eps; a checkpoint that stored `eps` for such a dimension reads as 1 when loaded (both give the
    fitting data the same normalised values)."""

    def __init__(self, dim: int, eps: float = 1e-6, scale_only: bool = False):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale_only = scale_only
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, actions: torch.Tensor, mask: torch.Tensor | None = None) -> Normalizer:
        """actions [..., dim], mask [...] (1 = valid)."""
        flat = torch.as_tensor(actions, dtype=torch.float32).reshape(-1, self.dim)
        keep = torch.ones(len(flat), dtype=torch.bool) if mask is None else torch.as_tensor(mask).reshape(-1) > 0
        valid = flat[keep]
        if len(valid) < 2:
            raise ShapeError(f"normaliser: need at least 2 valid frames to fit, got {len(valid)}")
        check_finite("normaliser.fit", valid, "actions")
        self.mean.copy_(torch.zeros(self.dim) if self.scale_only else valid.mean(0))
        spread = valid.std(0) if not self.scale_only else valid.abs().amax(0)
        self.std.copy_(self._unit_where_flat(spread))
        self.fitted.fill_(True)
        return self

    def _unit_where_flat(self, spread: torch.Tensor) -> torch.Tensor:
        return torch.where(spread > self.eps, spread, torch.ones_like(spread))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "std"
        if key in state_dict:  # checkpoints written before flat dimensions kept the scale 1
            state_dict[key] = self._unit_where_flat(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = (actions - self.mean) / self.std
        return out if mask is None else out * mask[..., None].to(out.dtype)

    def inverse(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.std + self.mean


class MLPEncoder(nn.Module):
    """A modality's expert encoder: normalised actions [B, F, d_m] + mask [B, F] -> tokens [B, F, d_u]."""

    def __init__(self, action_dim: int, token_dim: int, hidden_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(action_dim + 1, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, token_dim))

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(actions.dtype)[..., None]
        return self.net(torch.cat([actions * m, m], dim=-1))


class Modality(ABC):
    """Subclass, set `name`, `action_dim` and `raw_format`, implement `align`; override `normalizer`
    and `encoder` when the defaults (standardisation, a small MLP) do not fit."""

    name: str = ""
    action_dim: int = 0
    raw_format: str = ""
    vector_format: str = ""
    # The range every raw value must lie in, by part of the stream (the names are the modality's own:
    # "raw" for a whole array, a dict stream's keys, or slices of columns): `align` refuses anything
    # beyond it by calling `self.check_values(values, part)` for each part, so a corrupt or mis-scaled
    # file fails at once instead of driving the model off its data. Only `align` knows how its stream
    # splits into parts, so the core does not check them itself. Generous on purpose: the bound
    # catches 1e30 and a wrong unit, not a fast camera.
    bounds: dict[str, tuple[float, float]] = {}

    @abstractmethod
    def align(self, raw: Any, temporal_factor: int) -> AlignedActions:
        """Raw per-frame stream -> per-latent-frame vectors (see the module docstring for timing)."""

    def normalizer(self) -> Normalizer:
        return Normalizer(self.action_dim)

    def encoder(self, token_dim: int) -> nn.Module:
        return MLPEncoder(self.action_dim, token_dim)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action_dim": self.action_dim,
            "raw": self.raw_format,
            "vector": self.vector_format,
            "bounds": {part: list(b) for part, b in self.bounds.items()},
        }

    def splice(self, stream: Any, other: Any, at: int) -> Any:
        """`stream`'s rows before `at`, then `other`'s rows from `at` on, joined so the result is one
        plausible stream: what the action-following test feeds a model (an episode driven by another
        episode's actions). The default joins the rows as they are, right for streams of per-frame
        changes (deltas, keys); a modality of absolute states (poses) overrides it to carry `other`'s
        motion on from `stream`'s state at `at − 1`, instead of jumping to `other`'s place."""
        return concat_raw(raw_rows(stream, 0, at), raw_rows(other, at, None))

    def check_values(self, values: np.ndarray, part: str = "raw") -> None:
        """Finite, and within `bounds[part]` when the modality declares one."""
        if part in self.bounds:
            check_bounds(
                self.name, values, *self.bounds[part], what=f"raw actions ({part})" if part != "raw" else "raw actions"
            )
        else:
            check_finite(self.name, values)

    def _aligned(self, vectors: np.ndarray) -> AlignedActions:
        """Latent vectors [F−1, d] for frames 1…F−1 -> AlignedActions with the masked zero first frame."""
        out = np.zeros((len(vectors) + 1, self.action_dim), dtype=np.float32)
        out[1:] = vectors
        mask = np.ones(len(out), dtype=np.float32)
        mask[0] = 0.0
        return AlignedActions(out, mask)


def raw_rows(raw: Any, start: int, stop: int | None) -> Any:
    """Rows [start:stop] of a raw stream: an array, or a dict of per-frame arrays/lists."""
    if isinstance(raw, dict):
        return {k: (v[start:stop] if v is not None else None) for k, v in raw.items()}
    return raw[start:stop]


def raw_length(raw: Any) -> int:
    if isinstance(raw, dict):
        lengths = [len(v) for v in raw.values() if v is not None]
        if not lengths:
            raise ShapeError(f"raw actions: the dict {sorted(raw)} holds no stream")
        return lengths[0]
    return len(raw)


def concat_raw(a: Any, b: Any) -> Any:
    """Two raw streams of the same modality, one after the other."""
    if isinstance(a, dict):
        out = {}
        for k in a:
            if a[k] is None or b.get(k) is None:
                out[k] = None
            elif isinstance(a[k], list):
                out[k] = list(a[k]) + list(b[k])
            else:
                out[k] = np.concatenate([np.asarray(a[k]), np.asarray(b[k])])
        return out
    return np.concatenate([np.asarray(a), np.asarray(b)])
