"""Turning episodes into latent-cache shards (`astra encode`)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from astra_core.data import Episode
from astra_core.data.cache import write_shard
from astra_core.data.video import resize_crop
from astra_core.errors import ConfigError, ShapeError
from astra_core.modality import raw_length, raw_rows
from astra_core.world import check_frame_range


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
    name = episode.source or "episode"
    check_frame_range(episode.frames, f"{name}: frames")
    h, w = episode.frames.shape[-2:]
    s = tokenizer.spatial_factor
    if h % s or w % s:
        fit = f"{max(s, h // s * s)}x{max(s, w // s * s)}"
        raise ShapeError(
            f"{name}: frames of {h}×{w}; this tokenizer needs a height and width that are multiples of {s} "
            f"(astra encode --size {fit} scales and crops every episode to one)"
        )
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


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put the finished `staging` folder where `out_dir` is: files in `out_dir` other than shards move
    along, the old shards go. Each step is one rename, so a crash leaves the old cache or the new one
    (a folder named `.NAME.replaced` may then remain beside it, and is removed by the next encode)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.replaced")
    if old.exists():
        shutil.rmtree(old)
    for item in out_dir.iterdir():
        if not SHARD_PATTERN.fullmatch(item.name) and not (staging / item.name).exists():
            os.replace(item, staging / item.name)
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


SHARD_PATTERN = re.compile(r"shard-\d{5}\.h5")


def encode_to_shards(
    episodes: Iterable[Episode],
    tokenizer,
    out_dir: str | Path,
    shard_size: int = 16,
    total: int | None = None,
    overwrite: bool = False,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Encode episodes into `out_dir/shard-00000.h5`, … (`shard_size` episodes per shard).

    The shards are written into a folder beside `out_dir` and moved into place only when every episode
    is encoded, so an error or an interrupt leaves `out_dir` as it was. A folder that already holds
    shards is refused unless `overwrite`, which replaces all of them (never a mix of old and new).
    Every episode must have the frame size of the first; `size` (height, width) scales and centre-crops
    each to that size instead (`astra_core.data.video.resize_crop`)."""
    from astra_core.plugins import get_registry

    if shard_size < 1:
        raise ConfigError(f"shard_size={shard_size} must be at least 1")
    modalities = get_registry().modalities
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file, not a folder")
    existing = sorted(p for p in out_dir.glob("shard-*.h5")) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(
            f"--out {out_dir}: already holds {len(existing)} shard(s) ({existing[0].name}, …); training would read "
            "old and new shards together. Pass --overwrite to replace them, or choose another folder"
        )
    staging = out_dir.with_name(f".{out_dir.name}.encoding")
    if staging.exists():  # left by an encode that was killed
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shards, pending, shape = [], [], None

    def flush() -> None:
        path = staging / f"shard-{len(shards):05d}.h5"
        shards.append(write_shard(path, pending, tokenizer.describe(), tokenizer.temporal_factor))
        pending.clear()

    try:
        for episode in tqdm(episodes, total=total, desc="encode", unit="episode", disable=not progress):
            if size is not None and episode.frames is not None and tuple(episode.frames.shape[-2:]) != tuple(size):
                episode = replace(episode, frames=resize_crop(episode.frames.float(), size))
            if episode.frames is not None:
                here = tuple(episode.frames.shape[-2:])
                if shape is None:
                    shape, first = here, episode.source or "the first episode"
                elif here != shape:
                    raise ShapeError(
                        f"{episode.source or 'an episode'}: frames of {here[0]}×{here[1]} where {first} has "
                        f"{shape[0]}×{shape[1]}; one cache holds one frame size. Pass --size "
                        f"{shape[0]}x{shape[1]} to scale and centre-crop every episode to it"
                    )
            pending.append(encode_episode(episode, tokenizer, modalities))
            if len(pending) == shard_size:
                flush()
        if pending:
            flush()
        if not shards:
            raise ConfigError("no episodes to encode: the world or reader gave none")
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / p.name for p in shards]
