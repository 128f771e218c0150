"""`WorldModel`: the pixel-level session. Frames and raw actions in, frames out.

It wraps the latent rollout with the video tokenizer and the modalities: `reset(frames)` encodes the
context frames; `step(raw actions)` aligns the raw per-frame stream to latent frames (the model
normalises inside), generates the next chunk and decodes it. One session is one episode (batch 1).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astra_core.errors import AstraError, CheckpointError, ShapeError
from astra_core.modality import concat_raw, num_latent_frames, raw_length, raw_rows
from astra_core.model.actions import AstraNet
from astra_core.model.dit import compile_dit
from astra_core.model.rollout import LatentWorldModel

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "toy_default.safetensors"


def _cpu_bf16_supported() -> bool:
    """oneDNN's own check for bf16 support on this CPU (AVX-512 and later; not AVX2)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 runs natively on `device`: a CUDA device of compute capability 8 or later, or a CPU
    whose bf16 oneDNN supports (AVX-512 and later). Elsewhere bf16 is emulated, far slower than fp32
    (`bench/bench_train.py`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and _cpu_bf16_supported()


def warn_emulated_bf16(device: str | torch.device, setting: str, instead: str) -> str | None:
    """Warn (and return the message) when bf16 is asked for on a device without native bf16: it runs, far
    slower than fp32. A warning, not an error: it still computes what was asked for."""
    if native_bf16(device):
        return None
    where = f"this CPU (torch reports {torch.backends.cpu.get_cpu_capability()})"
    if torch.device(device).type != "cpu":
        where = f"device {torch.device(device)}"
    message = (
        f"{setting}: {where} has no native bf16 (a CPU needs AVX-512 or later), so bf16 is emulated, "
        f"far slower than fp32 (training: 0.07x fp32's tokens/s on a 2-core AVX2 CPU); {instead}"
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def check_frame_range(frames: torch.Tensor, name: str = "frames") -> None:
    """Frames must be finite and in [-1, 1]; uint8-range frames get the hint to scale them."""
    if not bool(torch.isfinite(frames).all()):
        raise ShapeError(f"{name}: contains NaN or Inf")
    low, high = float(frames.min()), float(frames.max())
    if low < -1.001 or high > 1.001:
        hint = " (uint8 frames? use frames / 127.5 - 1)" if high > 1.5 else ""
        raise ShapeError(f"{name}: values in [{low:.3g}, {high:.3g}], expected [-1, 1]{hint}")


def as_frames(frames: Any, name: str = "frames") -> torch.Tensor:
    """A tensor of frames; a numpy array is taken as it is (its range is `check_frame_range`'s to check)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise ShapeError(f"{name}: expected a tensor (or a numpy array) of frames, got {type(frames).__name__}")
    return frames


class WorldModel:
    def __init__(
        self,
        net: AstraNet,
        tokenizer,
        precision: str = "fp32",
        compile: bool = False,
        frame_size: tuple[int, int] | None = None,
        **rollout_options: Any,
    ):
        """`precision`: "fp32", or "bf16" for the DiT's weights and activations (the action path, the
        flow arithmetic and the sampler stay in float32); `compile`: torch.compile the DiT (inductor,
        dynamic shapes), so the first steps compile each history length once (minutes on a 2-core CPU,
        less when the compiler's cache holds them) and later steps run faster; `frame_size`: the
        (height, width) the model was trained on, which `reset` then requires (from the checkpoint, when
        it records one; None: any size the tokenizer takes); `rollout_options` go to `LatentWorldModel`
        (num_steps, guidance_scale, use_kv_cache, ...)."""
        from astra_core.plugins import get_registry

        self.net, self.tokenizer = net, tokenizer
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        names = list(net.config.action.modalities)
        if not names:
            raise ShapeError("WorldModel needs a model whose config names its modalities (action.modalities)")
        self.modalities = {n: get_registry().get("modalities", n) for n in names}
        if precision not in PRECISIONS:
            raise ShapeError(f"precision {precision!r}: choose one of {list(PRECISIONS)}")
        if precision == "bf16":
            warn_emulated_bf16(next(net.parameters()).device, 'precision="bf16"', 'precision="fp32" is faster here')
        net.dit.to(PRECISIONS[precision])  # the action path and the sampler's arithmetic stay in float32
        self.precision = precision
        if compile:
            compile_dit(net.dit, dynamic=True)
        self.compiled = bool(compile)
        self.latent = LatentWorldModel(net, **rollout_options)
        self.frames_per_step = net.config.history.chunk_size * tokenizer.temporal_factor
        self._last_raw: list[dict[str, Any]] | None = None
        self._last_latent: torch.Tensor | None = None
        self._batch, self._squeeze = 1, True

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu", **rollout_options: Any) -> WorldModel:
        """Model, tokenizer and normaliser statistics from one checkpoint file; with no path, the
        default toy model shipped inside the package (no network needed)."""
        from astra_core.checkpoint import _load_world, frame_size

        if path is None:
            path = DEFAULT_CHECKPOINT
            if not path.is_file():
                raise CheckpointError(f"{path}: this installation ships no default model; pass a checkpoint path")
        net, tokenizer, metadata = _load_world(path, device)
        if tokenizer is None:
            raise ShapeError(f"{path}: the checkpoint stores no tokenizer; it can only be used in latent space")
        return cls(net, tokenizer, frame_size=frame_size(metadata, path), **rollout_options)

    def _as_dict(self, raw: Any) -> dict[str, Any]:
        from astra_core.plugins import get_registry

        if isinstance(raw, dict) and raw and set(raw) <= set(get_registry().modalities) | set(self.modalities):
            unknown = set(raw) - set(self.modalities)
            if unknown:
                raise ShapeError(
                    f"actions: unknown modality {sorted(unknown)}; this model has {sorted(self.modalities)}"
                )
            return raw
        if len(self.modalities) == 1:
            return {next(iter(self.modalities)): raw}
        if isinstance(raw, dict) and raw:
            unknown = sorted(str(k) for k in set(raw) - set(self.modalities))
            raise ShapeError(f"actions: unknown modality {unknown}; this model has {sorted(self.modalities)}")
        raise ShapeError(f"actions: pass a dict keyed by modality, from {sorted(self.modalities)}")

    @torch.no_grad()
    def reset(self, frames: torch.Tensor, actions: Any = None) -> None:
        """Context frames [3, T, H, W] or [B, 3, T, H, W] in [-1, 1], T = 1 + factor·k; `actions`, the raw
        streams over those frames (a list of B of them for B > 1); pose streams need them, since their
        motion is relative to the last pose."""
        frames = as_frames(frames)
        self._squeeze = frames.ndim == 4
        if frames.ndim == 4:
            frames = frames[None]
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ShapeError(f"frames: expected [3, T, H, W] or [B, 3, T, H, W], got {tuple(frames.shape)}")
        self._squeeze = self._squeeze or frames.shape[0] == 1
        if self.frame_size is not None and tuple(frames.shape[-2:]) != self.frame_size:
            (h, w), (th, tw) = frames.shape[-2:], self.frame_size
            raise ShapeError(
                f"frames: {h}×{w}, but this model was trained on {th}×{tw} frames; scale them to that size "
                f"first, e.g. astra_core.data.video.resize_crop(frames, ({th}, {tw}))"
            )
        check_frame_range(frames)
        self._batch = frames.shape[0]
        latents = self.tokenizer.encode(frames.float().to(self.latent.device))
        if actions is None:
            self._last_raw = None
            self.latent.reset(latents)
        else:
            streams = self._per_sample(actions)
            vectors, masks = self.align_streams(streams, frames.shape[2])
            self.latent.reset(latents, *self._for_net(vectors, masks))
            self._last_raw = [{k: raw_rows(v, raw_length(v) - 1, None) for k, v in s.items()} for s in streams]
        self._last_latent = latents[:, :, -1:]

    @torch.no_grad()
    def step(self, actions: Any) -> torch.Tensor:
        """Raw streams for the next `frames_per_step` frames (a list of B for B > 1) -> frames
        [3, frames_per_step, H, W] (or [B, 3, frames_per_step, H, W]).

        Without context actions at reset, the first step's streams carry one extra leading row: the
        state of the last context frame."""
        if self._last_latent is None:
            raise AstraError("step: call reset(frames) before step(actions)")
        n = self.frames_per_step
        full = []
        for i, streams in enumerate(self._per_sample(actions)):
            joined = {}
            for name, raw in streams.items():
                given = raw_length(raw)
                continued = self._last_raw is not None and name in self._last_raw[i]
                if continued:
                    raw = concat_raw(self._last_raw[i][name], raw)
                if raw_length(raw) != n + 1:
                    need = (
                        f"{n} rows (frames per step)"
                        if continued
                        else (
                            f"{n + 1} rows (frames per step + 1: with no row of it at the last frame, the first row "
                            "is that frame's state)"
                        )
                    )
                    raise ShapeError(f"actions[{name!r}]: expected {need}, got {given}")
                joined[name] = raw
            full.append(joined)
        vectors, masks = self.align_streams(full, n + 1)
        vectors = {k: v[:, 1:] for k, v in vectors.items()}
        chunk = self.latent.step(*self._for_net(vectors, {k: m[:, 1:] for k, m in masks.items()}))
        frames = self.tokenizer.decode(torch.cat([self._last_latent, chunk], dim=2).to(self._last_latent.dtype))
        self._last_latent = chunk[:, :, -1:]
        self._last_raw = [{k: raw_rows(v, raw_length(v) - 1, None) for k, v in s.items()} for s in full]
        frames = frames[:, :, 1:].clamp(-1, 1)
        return frames[0] if self._squeeze else frames

    @torch.no_grad()
    def rollout(
        self, context: torch.Tensor, streams: list[dict[str, Any]], num_frames: int, on_step=None
    ) -> torch.Tensor:
        """Predict `num_frames` frames after the context frames [B, 3, T, H, W], feeding raw streams
        (one dict {modality: stream} per sample, rows covering the context then the future) step by
        step -> [B, 3, num_frames, H, W]. `on_step(frames_done)` is called after every step."""
        context = as_frames(context, "context")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ShapeError(f"num_frames={num_frames!r}: give the number of frames to predict, 1 or more")
        if not isinstance(streams, (list, tuple)) or not all(isinstance(s, dict) for s in streams):
            raise ShapeError(
                f"streams: expected a list of one dict {{modality: stream}} per context clip, got "
                f"{type(streams).__name__}" + (" (wrap it in a list: [streams])" if isinstance(streams, dict) else "")
            )
        if context.ndim != 5:
            raise ShapeError(f"context: expected [B, 3, T, H, W], got {tuple(context.shape)}")
        if len(streams) != context.shape[0]:
            raise ShapeError(f"streams: {len(streams)} for a batch of {context.shape[0]} context clips")
        t0, n = context.shape[2], self.frames_per_step
        needed = t0 + -(-num_frames // n) * n
        for i, sample in enumerate(streams):
            for name, raw in sample.items():
                if raw_length(raw) < needed:
                    raise ShapeError(
                        f"actions[{name!r}] of sample {i}: {raw_length(raw)} rows, {needed} needed for "
                        f"{t0} context and {num_frames} predicted frames in steps of {n}"
                    )
        self.reset(context, [{k: raw_rows(v, 0, t0) for k, v in s.items()} for s in streams])
        out, t = [], t0
        while t < t0 + num_frames:
            frames = self.step([{k: raw_rows(v, t, t + n) for k, v in s.items()} for s in streams])
            out.append(frames if frames.ndim == 5 else frames[None])
            t += n
            if on_step is not None:
                on_step(min(t - t0, num_frames))
        return torch.cat(out, dim=2)[:, :, :num_frames]

    def _per_sample(self, actions: Any) -> list[dict[str, Any]]:
        if self._batch == 1 and not (isinstance(actions, list) and len(actions) == 1 and isinstance(actions[0], dict)):
            return [self._as_dict(actions)]
        if not isinstance(actions, list) or len(actions) != self._batch:
            raise ShapeError(f"actions: this session has {self._batch} samples; pass a list of {self._batch} streams")
        streams = [self._as_dict(a) for a in actions]
        if self.net.moae is None and any(set(s) != set(streams[0]) for s in streams):
            raise ShapeError("actions: with one shared encoder every sample must carry the same modality")
        return streams

    def _for_net(self, vectors: dict, masks: dict):
        """Dicts for an MoAE model; the single modality's tensors for a one-encoder model."""
        if self.net.moae is not None:
            return vectors, masks
        name = next(iter(self.modalities))
        return vectors[name], masks[name]

    def align_streams(self, samples: list[dict[str, Any]], num_frames: int):
        """Per-sample raw streams -> stacked aligned vectors {modality: [B, F, d]} and masks {modality: [B, F]}.
        Samples may carry different modalities (a batch mixing embodiments): a sample without a modality
        gets zeros with mask 0 there."""
        names = [n for n in self.modalities if any(n in s for s in samples)]
        unknown = {n for s in samples for n in s} - set(self.modalities)
        if unknown:
            raise ShapeError(f"actions: unknown modality {sorted(unknown)}; this model has {sorted(self.modalities)}")
        frames = num_latent_frames(num_frames, self.tokenizer.temporal_factor)
        vectors, masks = {}, {}
        for name in names:
            modality = self.modalities[name]
            rows, row_masks = [], []
            for s in samples:
                if name not in s:
                    rows.append(np.zeros((frames, modality.action_dim), dtype=np.float32))
                    row_masks.append(np.zeros(frames, dtype=np.float32))
                    continue
                if raw_length(s[name]) != num_frames:
                    raise ShapeError(f"actions[{name!r}]: {raw_length(s[name])} rows for {num_frames} frames")
                aligned = modality.align(s[name], self.tokenizer.temporal_factor)
                rows.append(np.asarray(aligned.actions))
                row_masks.append(np.asarray(aligned.mask))
            vectors[name] = torch.from_numpy(np.stack(rows))
            masks[name] = torch.from_numpy(np.stack(row_masks))
        return vectors, masks
