"""Turning episodes into latent-cache shards (`astra encode`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from .cache import write_shard
from .data import Episode
from .errors import ShapeError
from .modality import raw_length, raw_rows


@torch.no_grad()
def encode_episode(episode: Episode, tokenizer, modalities: dict, time_stride: int = 1) -> dict:
    """Tokenize an episode's frames and align its actions to the latent frames. With `time_stride` k,
    only every k-th frame is kept and each action vector covers the k raw rows between kept frames: the
    episode as a k-times faster motion."""
    if episode.frames is None:
        raise ShapeError(f"{episode.source or 'episode'}: has no frames to encode")
    if time_stride < 1:
        raise ShapeError(f"time_stride must be >= 1, got {time_stride}")
    factor = tokenizer.temporal_factor * time_stride  # raw frames per latent frame
    usable = 1 + (episode.frames.shape[1] - 1) // factor * factor
    if usable == 1 and episode.frames.shape[1] > 1:
        raise ShapeError(f"{episode.source or 'episode'}: too short for time stride {time_stride}")
    frames = episode.frames[:, :usable:time_stride]
    latents = tokenizer.encode(frames[None].float())[0]
    actions, masks, raw = {}, {}, {}
    for name, stream in episode.actions.items():
        if name not in modalities:
            raise ShapeError(f"{episode.source or 'episode'}: modality {name!r} is not registered")
        stream = raw_rows(stream, 0, usable)
        if raw_length(stream) != usable:
            raise ShapeError(f"{episode.source}: {name} has {raw_length(stream)} rows for {usable} frames")
        aligned = modalities[name].align(stream, factor)
        actions[name], masks[name], raw[name] = aligned.actions, aligned.mask, stream
    return {
        "latents": latents.cpu().numpy(),
        "actions": actions,
        "masks": masks,
        "raw": raw,
        "embodiment": episode.embodiment,
        "fps": episode.fps / time_stride,
        "source": episode.source if time_stride == 1 else f"{episode.source}@stride{time_stride}",
    }


def encode_to_shards(
    episodes: Iterable[Episode], tokenizer, out_dir: str | Path, shard_size: int = 16, total: int | None = None
) -> list[Path]:
    """Encode episodes into `out_dir/shard-00000.h5`, … (`shard_size` episodes per shard)."""
    from .plugins import get_registry

    modalities = get_registry().modalities
    out_dir = Path(out_dir)
    shards, pending = [], []
    for episode in tqdm(episodes, total=total, desc="encode", unit="episode"):
        pending.append(encode_episode(episode, tokenizer, modalities))
        if len(pending) == shard_size:
            shards.append(
                write_shard(
                    out_dir / f"shard-{len(shards):05d}.h5", pending, tokenizer.describe(), tokenizer.temporal_factor
                )
            )
            pending = []
    if pending:
        shards.append(
            write_shard(
                out_dir / f"shard-{len(shards):05d}.h5", pending, tokenizer.describe(), tokenizer.temporal_factor
            )
        )
    return shards
