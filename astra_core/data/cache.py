"""HDF5 latent cache: encoded episodes in chunked, compressed shards that training reads directly.

Shard layout (one file holds several episodes):

    /                       attrs: format="astra-latent-cache", version, tokenizer (JSON), temporal_factor
    /episodes/<i>/latents   float16 [C, F, h, w], chunked per latent frame, gzip
    /episodes/<i>/actions/<modality>   float32 [F, d]  (aligned, raw scale)
    /episodes/<i>/masks/<modality>     float32 [F]
    /episodes/<i>/raw/<modality>       the raw stream: a dataset, or a group of datasets; key lists as JSON
    /episodes/<i>           attrs: embodiment, fps, source, modalities (JSON)

Writes go to a temporary file beside the destination and are renamed into place when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from astra_core.checkpoint import publish, temporary_beside
from astra_core.data import Clip
from astra_core.errors import CacheError

FORMAT = "astra-latent-cache"
VERSION = 1


@dataclass
class CachedEpisode:
    latents: torch.Tensor  # [C, F, h, w] float32
    actions: dict[str, torch.Tensor]  # {modality: [F, d]}
    masks: dict[str, torch.Tensor]  # {modality: [F]}
    raw: dict[str, Any]
    embodiment: str
    fps: float
    source: str

    @classmethod
    def from_encoded(cls, encoded: dict[str, Any]) -> CachedEpisode:
        """From `encode_episode`'s output, without a trip through a file."""
        return cls(
            latents=torch.as_tensor(encoded["latents"], dtype=torch.float32),
            actions={k: torch.as_tensor(v, dtype=torch.float32) for k, v in encoded["actions"].items()},
            masks={k: torch.as_tensor(v, dtype=torch.float32) for k, v in encoded["masks"].items()},
            raw=encoded.get("raw", {}),
            embodiment=encoded["embodiment"],
            fps=float(encoded.get("fps", 0.0)),
            source=str(encoded.get("source", "")),
        )

    def clips(self, frames: int, stride: int | None = None) -> list[Clip]:
        """Windows of `frames` latent frames. A window's first action is masked: it has no previous frame."""
        total = self.latents.shape[1]
        out = []
        for start in range(0, total - frames + 1, stride or frames):
            masks = {k: v[start : start + frames].clone() for k, v in self.masks.items()}
            for m in masks.values():
                m[0] = 0.0
            actions = {k: v[start : start + frames] * masks[k][:, None] for k, v in self.actions.items()}
            out.append(Clip(self.latents[:, start : start + frames], actions, masks, self.embodiment))
        return out


def _write_raw(group: h5py.Group, name: str, raw: Any) -> None:
    if isinstance(raw, dict):
        sub = group.create_group(name)
        for key, value in raw.items():
            if value is None:
                continue
            if isinstance(value, list):
                sub.attrs[key] = json.dumps([list(map(str, row)) for row in value])
            else:
                sub.create_dataset(key, data=np.asarray(value))
    else:
        group.create_dataset(name, data=np.asarray(raw))


def _read_raw(node: h5py.Group | h5py.Dataset) -> Any:
    if isinstance(node, h5py.Dataset):
        return node[()]
    out: dict[str, Any] = {k: node[k][()] for k in node}
    out.update({k: json.loads(v) for k, v in node.attrs.items()})
    return out


def write_shard(
    path: str | Path, episodes: list[dict[str, Any]], tokenizer: dict[str, Any], temporal_factor: int
) -> Path:
    """Write encoded episodes (dicts with latents, actions, masks, raw, embodiment, fps, source) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format=FORMAT,
                version=VERSION,
                tokenizer=json.dumps(tokenizer, sort_keys=True),
                temporal_factor=temporal_factor,
            )
            root = f.create_group("episodes")
            for i, ep in enumerate(episodes):
                g = root.create_group(f"{i:05d}")
                lat = np.asarray(ep["latents"], dtype=np.float16)
                g.create_dataset(
                    "latents",
                    data=lat,
                    chunks=(lat.shape[0], 1, *lat.shape[2:]),
                    compression="gzip",
                    compression_opts=4,
                )
                for part in ("actions", "masks"):
                    sub = g.create_group(part)
                    for name, value in ep[part].items():
                        sub.create_dataset(name, data=np.asarray(value, dtype=np.float32))
                raw = g.create_group("raw")
                for name, value in ep.get("raw", {}).items():
                    _write_raw(raw, name, value)
                g.attrs.update(
                    embodiment=ep["embodiment"],
                    fps=float(ep.get("fps", 0.0)),
                    source=str(ep.get("source", "")),
                    modalities=json.dumps(sorted(ep["actions"])),
                )
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_shard(path: str | Path, expected_tokenizer: dict[str, Any] | None = None) -> list[CachedEpisode]:
    """All episodes of a shard; fails with `CacheError` naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such cache shard")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CacheError(f"{path}: not an astra latent cache shard (format {f.attrs.get('format')!r})")
            if int(f.attrs.get("version", -1)) > VERSION:
                raise CacheError(
                    f"{path}: cache version {f.attrs.get('version')} is newer than this reader ({VERSION})"
                )
            made_by = json.loads(f.attrs["tokenizer"])
            if expected_tokenizer is not None and made_by != expected_tokenizer:
                raise CacheError(f"{path}: made by tokenizer {made_by}, but this run uses {expected_tokenizer}")
            return [_read_episode(path, name, g) for name, g in sorted(f["episodes"].items())]
    except CacheError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise CacheError(f"{path}: truncated or corrupt cache shard ({err})") from None


def _read_episode(path: Path, name: str, g: h5py.Group) -> CachedEpisode:
    """One episode, checked: finite latents [C, F, H, W], and for every modality finite actions and a
    mask of one row per latent frame. Errors name the shard, the episode and the dataset at fault."""
    where = f"{path}: episode {name}"
    for part in ("latents", "actions", "masks", "raw"):
        if part not in g:
            raise CacheError(f"{where}: has no {part!r} dataset; the shard is corrupt or not written by astra encode")
    latents = torch.from_numpy(g["latents"][()].astype(np.float32))
    if latents.ndim != 4:
        raise CacheError(f"{where}: latents of shape {tuple(latents.shape)}, expected [C, F, H, W]")
    if not torch.isfinite(latents).all():
        bad = int((~torch.isfinite(latents)).sum())
        raise CacheError(f"{where}: {bad} latent value(s) are NaN or infinite; re-encode this episode")
    frames = latents.shape[1]
    actions = {k: torch.from_numpy(v[()]) for k, v in g["actions"].items()}
    masks = {k: torch.from_numpy(v[()]) for k, v in g["masks"].items()}
    for modality, rows in actions.items():
        if modality not in masks:
            raise CacheError(f"{where}: actions/{modality} has no masks/{modality}")
        if rows.ndim != 2 or len(rows) != frames or masks[modality].shape != (frames,):
            raise CacheError(
                f"{where}: actions/{modality} {tuple(rows.shape)} and masks/{modality} "
                f"{tuple(masks[modality].shape)} must have one row per latent frame ({frames})"
            )
        if not torch.isfinite(rows).all():
            raise CacheError(f"{where}: actions/{modality} holds NaN or infinite values")
    return CachedEpisode(
        latents=latents,
        actions=actions,
        masks=masks,
        raw={k: _read_raw(v) for k, v in g["raw"].items()},
        embodiment=str(g.attrs["embodiment"]),
        fps=float(g.attrs["fps"]),
        source=str(g.attrs["source"]),
    )


def shard_tokenizer(path: str | Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["tokenizer"])
    except (OSError, KeyError, ValueError) as err:
        raise CacheError(f"{path}: truncated or corrupt cache shard ({err})") from None


HELD_OUT_SHARE = 0.1


def split_episodes(episodes: list, embodiment_of=lambda e: e.embodiment) -> tuple[list, list]:
    """The held-out rule, shared by training on a cache and `astra eval --cache/--reader`: per
    embodiment, in the order given (shard files sorted by path and episodes in shard order; reader
    files in the order named), the first max(1, round(0.1·n)) of its n episodes are held out and the
    rest train. Whole episodes go to one side only. -> (train, held_out), each in the given order."""
    groups: dict[str, list] = {}
    for episode in episodes:
        groups.setdefault(embodiment_of(episode), []).append(episode)
    held = {id(e) for group in groups.values() for e in group[: max(1, round(HELD_OUT_SHARE * len(group)))]}
    return [e for e in episodes if id(e) not in held], [e for e in episodes if id(e) in held]
