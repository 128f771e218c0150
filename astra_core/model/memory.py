"""History memory: how a sequence splits into chunks, which history frames the model sees, and
the noise-as-mask augmentation of history in training (Astra §3, "noise-augmented history").
"""

from __future__ import annotations

import torch

from astra_core.config import HistoryConfig
from astra_core.errors import ShapeError


def sequence_chunk_ids(num_frames: int, context_frames: int, chunk_size: int, device=None) -> torch.Tensor:
    """[num_frames] chunk index per latent frame: the first `context_frames` form chunk 0 (the sink),
    then every `chunk_size` frames a new chunk."""
    frames = torch.arange(num_frames, device=device)
    later = (frames - context_frames).clamp(min=0) // chunk_size + 1
    return torch.where(frames < context_frames, torch.zeros_like(frames), later)


def segments_to_evict(lengths: list[int], sinks: list[bool], window: int) -> set[int]:
    """Indices of the oldest non-sink segments to drop so that at most `window` non-sink frames remain."""
    excess = sum(n for n, s in zip(lengths, sinks) if not s) - window
    drop: set[int] = set()
    for i, (n, sink) in enumerate(zip(lengths, sinks)):
        if excess <= 0:
            break
        if not sink:
            drop.add(i)
            excess -= n
    return drop


def with_last_frame_channels(x: torch.Tensor, last_frame: torch.Tensor, num_history: int) -> torch.Tensor:
    """x [B, C, F, H, W] (`num_history` history frames, then the generated ones) -> [B, 2C, F, H, W]: the
    generated frames get `last_frame` [B, C, 1, H, W] on C extra channels, the history frames zeros."""
    b, c, f, h, w = x.shape
    extra = torch.cat(
        [x.new_zeros(b, c, num_history, h, w), last_frame.to(x.dtype).expand(b, c, f - num_history, h, w)], dim=2
    )
    return torch.cat([x, extra], dim=1)


def check_training_layout(num_frames: int, num_history: int, cfg: HistoryConfig) -> None:
    """A training sequence is [sink chunk, k history chunks, one target chunk]."""
    if num_frames - num_history != cfg.chunk_size:
        raise ShapeError(
            f"training sequence: {num_frames} frames with {num_history} history frames leaves "
            f"{num_frames - num_history} target frames; expected chunk_size={cfg.chunk_size}"
        )
    later = num_history - cfg.context_frames
    if later < 0 or later % cfg.chunk_size:
        raise ShapeError(
            f"num_history={num_history}: expected context_frames={cfg.context_frames} plus a multiple "
            f"of chunk_size={cfg.chunk_size}"
        )


class BatchDraws:
    """Random draws for rows `rows` of a batch of `total` samples: every data-parallel rank draws the
    whole batch's numbers from the shared generator and keeps its own rows, so N ranks see exactly
    what one process with the combined batch would."""

    def __init__(self, generator: torch.Generator | None, total: int | None = None, rows: slice | None = None):
        self.generator, self.total, self.rows = generator, total, rows

    def _draw(self, fn, shape, dtype):
        if self.rows is None:
            return fn(shape, generator=self.generator, dtype=dtype)
        return fn((self.total, *shape[1:]), generator=self.generator, dtype=dtype)[self.rows]

    def rand(self, *shape, dtype=torch.float32):
        return self._draw(torch.rand, shape, dtype)

    def randn(self, *shape, dtype=torch.float32):
        return self._draw(torch.randn, shape, dtype)

    def step_rand(self) -> float:
        """One uniform number for the whole batch, the same on every rank."""
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))


def augment_history(
    history: torch.Tensor,
    cfg: HistoryConfig,
    num_train_timesteps: int,
    generator: torch.Generator | BatchDraws | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise as mask: corrupt history latents so that the model cannot just copy them.

    history [B, C, Fh, H, W] -> (noised history, per-frame timesteps [B, Fh]). With probability
    `noise_prob` per sample, the chosen frames get σ_h ~ U(noise_sigma_min, noise_sigma_max);
    their timestep is σ_h·T when `tell_model_sigma`, else 0 (clean frames always get 0).
    """
    b, _, fh = history.shape[:3]
    device = history.device
    draws = generator if isinstance(generator, BatchDraws) else BatchDraws(generator)
    apply = draws.rand(b) < cfg.noise_prob
    span = cfg.noise_sigma_max - cfg.noise_sigma_min
    sigma = cfg.noise_sigma_min + span * draws.rand(b)
    noise = draws.randn(*history.shape, dtype=history.dtype).to(device)
    frame_ok = torch.ones(fh, dtype=torch.bool)
    if cfg.noise_frames == "recent":
        frame_ok[: cfg.context_frames] = False
    chosen = (apply[:, None] & frame_ok[None, :]).to(device)  # [B, Fh]
    sigma_frames = torch.where(chosen, sigma[:, None].to(device), torch.zeros((), device=device))
    s = sigma_frames[:, None, :, None, None].to(history.dtype)
    noised = (1 - s) * history + s * noise
    timesteps = sigma_frames * num_train_timesteps if cfg.tell_model_sigma else torch.zeros_like(sigma_frames)
    return noised, timesteps
