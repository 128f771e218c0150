"""`WorldModel`: the pixel-level session. Frames and raw actions in, frames out.

It wraps the latent rollout with the video tokenizer and the modalities: `reset(frames)` encodes the
context frames; `step(raw actions)` aligns the raw per-frame stream to latent frames (the model
normalises inside), generates the next chunk and decodes it. One session is one episode (batch 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ShapeError
from .modality import concat_raw, raw_length, raw_rows
from .model.actions import AstraNet
from .rollout import LatentWorldModel

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "toy_default.safetensors"


class WorldModel:
    def __init__(self, net: AstraNet, tokenizer, **rollout_options: Any):
        from .plugins import get_registry

        self.net, self.tokenizer = net, tokenizer
        names = list(net.config.action.modalities)
        if not names:
            raise ShapeError("WorldModel needs a model whose config names its modalities (action.modalities)")
        self.modalities = {n: get_registry().get("modalities", n) for n in names}
        self.latent = LatentWorldModel(net, **rollout_options)
        self.frames_per_step = net.config.history.chunk_size * tokenizer.temporal_factor
        self._last_raw: dict[str, Any] | None = None
        self._last_latent: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu", **rollout_options: Any) -> WorldModel:
        """Model, tokenizer and normaliser statistics from one checkpoint file; with no path, the
        default toy model shipped inside the package (no network needed)."""
        from .checkpoint import load_world_checkpoint

        if path is None:
            path = DEFAULT_CHECKPOINT
            if not path.is_file():
                raise CheckpointError(f"{path}: this installation ships no default model; pass a checkpoint path")
        net, tokenizer = load_world_checkpoint(path, device)
        if tokenizer is None:
            raise ShapeError(f"{path}: the checkpoint stores no tokenizer; it can only be used in latent space")
        return cls(net, tokenizer, **rollout_options)

    def _as_dict(self, raw: Any) -> dict[str, Any]:
        from .plugins import get_registry

        if isinstance(raw, dict) and raw and set(raw) <= set(get_registry().modalities) | set(self.modalities):
            unknown = set(raw) - set(self.modalities)
            if unknown:
                raise ShapeError(
                    f"actions: unknown modality {sorted(unknown)}; this model has {sorted(self.modalities)}"
                )
            return raw
        if len(self.modalities) == 1:
            return {next(iter(self.modalities)): raw}
        raise ShapeError(f"actions: pass a dict keyed by modality, from {sorted(self.modalities)}")

    @torch.no_grad()
    def reset(self, frames: torch.Tensor, actions: Any = None) -> None:
        """Context frames [3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1], T = 1 + factor·k; `actions`, the raw
        streams over those frames (needed for pose streams, whose motion is relative to the last pose)."""
        if frames.ndim == 4:
            frames = frames[None]
        if frames.ndim != 5 or frames.shape[0] != 1:
            raise ShapeError(f"frames: expected [3, T, H, W] or [1, 3, T, H, W], got {tuple(frames.shape)}")
        latents = self.tokenizer.encode(frames.float().to(self.latent.device))
        f = latents.shape[2]
        if actions is None:
            self._last_raw = None
            self.latent.reset(latents)
        else:
            streams = self._as_dict(actions)
            vectors, masks = self._align(streams, frames.shape[2], f)
            self.latent.reset(latents, *self._for_net(vectors, masks))
            self._last_raw = {k: raw_rows(v, raw_length(v) - 1, None) for k, v in streams.items()}
        self._last_latent = latents[:, :, -1:]

    @torch.no_grad()
    def step(self, actions: Any) -> torch.Tensor:
        """Raw streams for the next `frames_per_step` frames -> frames [3, frames_per_step, H, W].

        Without context actions at reset, the first step's streams carry one extra leading row: the
        state of the last context frame."""
        if self._last_latent is None:
            raise RuntimeError("call reset(frames) before step(actions)")
        streams = self._as_dict(actions)
        n = self.frames_per_step
        full = {}
        for name, raw in streams.items():
            if self._last_raw is not None and name in self._last_raw:
                raw = concat_raw(self._last_raw[name], raw)
            if raw_length(raw) != n + 1:
                need = n if self._last_raw is not None else n + 1
                raise ShapeError(
                    f"actions[{name!r}]: expected {need} rows (frames per step), got "
                    f"{raw_length(raw) - (self._last_raw is not None)}"
                )
            full[name] = raw
        vectors, masks = self._align(full, n + 1, None)
        vectors = {k: v[:, 1:] for k, v in vectors.items()}
        chunk = self.latent.step(*self._for_net(vectors, {k: m[:, 1:] for k, m in masks.items()}))
        frames = self.tokenizer.decode(torch.cat([self._last_latent, chunk], dim=2).to(self._last_latent.dtype))
        self._last_latent = chunk[:, :, -1:]
        self._last_raw = {k: raw_rows(v, raw_length(v) - 1, None) for k, v in full.items()}
        return frames[0, :, 1:].clamp(-1, 1)

    def _for_net(self, vectors: dict, masks: dict):
        """Dicts for an MoAE model; the single modality's tensors for a one-encoder model."""
        if self.net.moae is not None:
            return vectors, masks
        name = next(iter(self.modalities))
        return vectors[name], masks[name]

    def _align(self, streams: dict[str, Any], num_frames: int, latents: int | None):
        vectors, masks = {}, {}
        for name, raw in streams.items():
            if name not in self.modalities:
                raise ShapeError(f"actions: unknown modality {name!r}; this model has {sorted(self.modalities)}")
            if raw_length(raw) != num_frames:
                raise ShapeError(f"actions[{name!r}]: {raw_length(raw)} rows for {num_frames} frames")
            aligned = self.modalities[name].align(raw, self.tokenizer.temporal_factor)
            vectors[name] = torch.from_numpy(np.asarray(aligned.actions))[None]
            masks[name] = torch.from_numpy(np.asarray(aligned.mask))[None]
        return vectors, masks
