"""Typed containers for data moving between readers, worlds, caches and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Episode:
    """One recorded or generated episode.

    frames: video [3, T, H, W] in [-1, 1], or None when only actions were read; actions: the raw
    per-frame stream of each modality, keyed by modality name, in that modality's raw format.
    """

    embodiment: str
    actions: dict[str, Any]
    frames: torch.Tensor | None = None
    fps: float = 10.0
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Clip:
    """A training clip in latent space: latents [C, F, h, w] and, per modality, aligned actions [F, d]
    (raw scale; models normalise inside) with their masks [F]."""

    latents: torch.Tensor
    actions: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    embodiment: str = ""


@dataclass
class Batch:
    """Collated clips: latents [B, C, F, h, w]; actions {modality: [B, F, d]}; masks {modality: [B, F]}
    (0 where a sample lacks a modality); embodiments, one per sample."""

    latents: torch.Tensor
    actions: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    embodiments: list[str]

    def to(self, device: str | torch.device) -> Batch:
        return Batch(
            self.latents.to(device),
            {k: v.to(device) for k, v in self.actions.items()},
            {k: v.to(device) for k, v in self.masks.items()},
            list(self.embodiments),
        )

    def __len__(self) -> int:
        return len(self.latents)


def collate(clips: list[Clip]) -> Batch:
    """Stack clips that may carry different modalities: a missing one gets zeros with mask 0."""
    from astra_core.errors import ShapeError

    if not clips:
        raise ShapeError("collate: no clips")
    shape = clips[0].latents.shape
    for i, clip in enumerate(clips):
        if clip.latents.shape != shape:
            raise ShapeError(f"collate: clip {i} has latents {tuple(clip.latents.shape)}, clip 0 {tuple(shape)}")
    frames = shape[1]
    widths: dict[str, int] = {}
    for clip in clips:
        for name, a in clip.actions.items():
            widths.setdefault(name, a.shape[-1])
    actions = {name: torch.zeros(len(clips), frames, d) for name, d in widths.items()}
    masks = {name: torch.zeros(len(clips), frames) for name in widths}
    for i, clip in enumerate(clips):
        for name, a in clip.actions.items():
            actions[name][i] = torch.as_tensor(a, dtype=torch.float32)
            masks[name][i] = torch.as_tensor(clip.masks[name], dtype=torch.float32)
    return Batch(torch.stack([c.latents for c in clips]), actions, masks, [c.embodiment for c in clips])


class ClipSampler:
    """Draws clips from per-embodiment pools with mixing weights; deterministic from its seed, and its
    position (`state_dict`) lets a resumed run continue the same sequence."""

    def __init__(self, pools: dict[str, list], weights: dict[str, float] | None = None, seed: int = 0):
        from astra_core.errors import ConfigError

        self.pools = {k: v for k, v in pools.items() if v}
        if not self.pools:
            raise ConfigError("ClipSampler: every pool is empty")
        weights = weights or {k: 1.0 for k in self.pools}
        unknown = set(weights) - set(pools)
        if unknown:
            raise ConfigError(f"ClipSampler: weights name unknown embodiments {sorted(unknown)}")
        self.names = sorted(self.pools)
        self.weights = torch.tensor([float(weights.get(k, 0.0)) for k in self.names])
        if float(self.weights.sum()) <= 0:
            raise ConfigError("ClipSampler: mixing weights must have a positive sum")
        self.seed = seed
        self.drawn = 0
        self._gen = torch.Generator().manual_seed(seed)

    def sample(self, n: int, weights: dict[str, float] | None = None) -> list:
        """`n` clips; `weights` (embodiment -> share, others 0) replaces the sampler's own for this draw."""
        if weights is None:
            w = self.weights
        else:
            w = torch.tensor([float(weights.get(k, 0.0)) for k in self.names])
            if float(w.sum()) <= 0:
                from astra_core.errors import ConfigError

                raise ConfigError(f"ClipSampler: the weights {weights} give none of the pools {self.names} a share")
        picks = torch.multinomial(w, n, replacement=True, generator=self._gen)
        out = []
        for p in picks.tolist():
            pool = self.pools[self.names[p]]
            out.append(pool[int(torch.randint(len(pool), (1,), generator=self._gen))])
        self.drawn += n
        return out

    def state_dict(self) -> dict:
        return {"seed": self.seed, "drawn": self.drawn, "rng": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.drawn = state["seed"], state["drawn"]
        self._gen.set_state(state["rng"])
