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
