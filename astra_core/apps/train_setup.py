"""The trainer's setup: config checks against the model and the data, the tokenizer, the network (and
its adapter backbone), the clips and their held-out split, normaliser statistics, parallel wrappers."""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from astra_core.checkpoint import (
    check_same_tokenizer,
    load_network_weights,
    read_checkpoint,
)
from astra_core.config import DataConfig, TrainConfig
from astra_core.data import Batch, collate
from astra_core.data.cache import CachedEpisode, read_shard, split_episodes
from astra_core.errors import CheckpointError, ConfigError
from astra_core.model.actions import AstraNet


def pad_to_one_vector(batch: Batch, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One shared encoder: every modality's vector padded to `width` and summed over modalities."""
    b, f = batch.latents.shape[0], batch.latents.shape[2]
    device = batch.latents.device
    vector, mask = torch.zeros(b, f, width, device=device), torch.zeros(b, f, device=device)
    for name, a in batch.actions.items():
        if a.shape[-1] > width:
            raise ConfigError(f"action.action_dim={width} is narrower than modality {name!r} ({a.shape[-1]})")
        m = batch.masks[name]
        vector[..., : a.shape[-1]] += a * m[..., None]
        mask = torch.maximum(mask, m)
    return vector, mask


def _check_modalities(cfg: TrainConfig, streams: dict[str, tuple[list[str], str]]) -> None:
    """Every embodiment's action modalities must be ones the model encodes (MoAE and the shared encoder
    name theirs; the plain MLP takes any one stream no wider than `action.action_dim`)."""
    action = cfg.model.action
    if action.encoder not in ("moae", "shared"):
        from astra_core.plugins import get_registry

        modalities = get_registry().modalities
        for embodiment, (names, where) in streams.items():
            for name in names:
                width = modalities[name].action_dim if name in modalities else 0
                if width > action.action_dim:
                    raise ConfigError(
                        f"{where}: embodiment {embodiment!r} acts through {name!r}, {width} values a frame, wider "
                        f"than model.action.action_dim {action.action_dim}; set action_dim: {width} or more"
                    )
        return
    for embodiment, (modalities, where) in streams.items():
        missing = [m for m in modalities if m not in action.modalities]
        if missing:
            raise ConfigError(
                f"{where}: embodiment {embodiment!r} acts through {missing}, which model.action.modalities "
                f"{list(action.modalities)} lacks; add them there or leave {embodiment!r} out of the data"
            )


def check_data_against_model(cfg: TrainConfig) -> None:
    """Before any work: every toy world named in `data.weights` is registered and acts through
    modalities the model encodes; every embodiment of a cache is checked once its shards are read."""
    if cfg.data.source != "worlds":
        return
    from astra_core.plugins import get_registry

    registry = get_registry()
    streams = {}
    for name in cfg.data.weights:
        if name in registry.embodiments:
            embodiment = registry.embodiments[name]
            if embodiment.world is None:
                raise ConfigError(
                    f"data.weights: {name!r} is an embodiment read from files (reader {embodiment.reader!r}), "
                    f"not a toy world; encode it with `astra encode --reader` and train with data.source: cache"
                )
            registry.get("worlds", embodiment.world)
            streams[name] = (list(embodiment.modalities), f"data.weights.{name}")
        elif name in registry.worlds:
            streams[name] = ([registry.worlds[name].modality], f"data.weights.{name}")
        else:
            known = sorted(registry.worlds)
            raise ConfigError(f"data.weights: {name!r} is no registered toy world; known: {known}")
    _check_modalities(cfg, streams)


def warn_history_window(cfg: TrainConfig) -> str | None:
    """Warn (and return the message) when the training clips' history, `data.history_chunks` ×
    `model.history.chunk_size` frames, differs from the `model.history.window` a rollout keeps: the
    model then meets longer (or shorter) histories in every rollout than it trained on. A warning, not an
    error: an experiment may mean it. `data.history_chunks: 0` (training without history) never warns."""
    h = cfg.model.history
    chunks = cfg.data.history_chunks
    trained = chunks * h.chunk_size
    if not trained or trained == h.window:
        return None
    side = "longer" if h.window > trained else "shorter"
    message = (
        f"model.history.window={h.window} keeps {h.window} history frames in a rollout, but "
        f"data.history_chunks={chunks} chunks of model.history.chunk_size={h.chunk_size} train on at most "
        f"{trained}: every rollout past the first chunks shows the model a {side} history than it trained on; "
        f"to train what it keeps, set model.history.window: {trained} (or data.history_chunks: "
        f"{h.window // h.chunk_size}, if the clips are long enough)"
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def build_run_tokenizer(cfg: TrainConfig):
    """The run's video tokenizer, checked against the model: the latents it makes are the ones the
    model generates (`model.latent_channels`)."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.data.tokenizer_train import load_tokenizer

    patch = cfg.data.pixel_patch
    tokenizer = PixelTokenizer(patch) if cfg.data.tokenizer == "pixel" else load_tokenizer(cfg.data.tokenizer)
    model = cfg.model
    if tokenizer.channels != model.latent_channels:
        if cfg.data.tokenizer == "pixel":
            made = f"data.pixel_patch {patch}: the pixel tokenizer makes 3 × {patch}² = {tokenizer.channels}"
        else:
            made = f"data.tokenizer {cfg.data.tokenizer} makes {tokenizer.channels}"
        flow = model.flow.head_channels
        needed = f"dit.out_dim {tokenizer.channels + flow}" + (f" ({flow} of them the flow's)" if flow else "")
        raise ConfigError(
            f"{made} latent channels, but the model generates {model.latent_channels} (model.dit.out_dim "
            f"{model.dit.out_dim}); set model.{needed} and the matching in_dim"
        )
    return tokenizer


def _load_backbone(net: AstraNet, path: str, tokenizer) -> None:
    """Adapter mode: the backbone of an Astra checkpoint (trained with `tokenizer`, the run's), or a Wan2.1
    state dict (either layout)."""
    from safetensors.torch import load_file

    from astra_core.model.dit import is_astra_addition
    from astra_core.model.wan_io import load_wan_state_dict

    if not path or not Path(path).is_file():
        raise CheckpointError(f"init_checkpoint {path!r}: no such file (adapter mode starts from it)")
    try:
        _, tensors, metadata = read_checkpoint(path)
    except CheckpointError as astra_error:  # not an Astra checkpoint: a plain Wan state dict?
        try:
            tensors = load_file(path)
        except Exception as err:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(
                f"init_checkpoint {path}: neither an Astra checkpoint ({astra_error}) nor a safetensors "
                f"state dict ({type(err).__name__}: {err})"
            ) from None
    else:
        check_same_tokenizer(tokenizer, metadata, tensors, f"init_checkpoint {path}")
        tensors = {k[len("dit.") :]: v for k, v in tensors.items() if k.startswith("dit.")}
    backbone = {k: v for k, v in tensors.items() if not is_astra_addition(k)}
    load_wan_state_dict(net.dit, backbone)


def _load_whole(net: AstraNet, path: str, tokenizer) -> None:
    """Finetune mode: every weight of an Astra checkpoint (the normalisers' statistics included), which
    must have `net`'s architecture and have been trained with `tokenizer` (the run's); errors name the file
    and what differs."""
    if not path or not Path(path).is_file():
        raise CheckpointError(f"init_checkpoint {path!r}: no such file (finetune mode starts from it)")
    _, tensors, metadata = read_checkpoint(path)
    check_same_tokenizer(tokenizer, metadata, tensors, f"init_checkpoint {path}")
    load_network_weights(net, tensors, f"init_checkpoint {path}")


def training_device(choice: str) -> torch.device:
    """The device a run trains on: `TrainConfig.device` resolved. "auto" takes CUDA when there is a
    device, the CPU otherwise; under torchrun each rank takes its own GPU (LOCAL_RANK)."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for, but torch sees no CUDA device here (use 'auto' or 'cpu')")
    index = int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: LOCAL_RANK={index}, but only {torch.cuda.device_count()} CUDA devices are visible")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(device: torch.device | None = None) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device is not None and device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group in order: every rank waits for the others (unless `wait` is False, as
    after an error, when the others may never arrive), then the group is destroyed.

    Exiting with the group still alive leaves gloo's worker threads to the interpreter's exit, which
    aborts a rank now and then ("terminate called without an active exception"). Objects that hold the
    group (a sharded model, its optimizer: drop the Trainer and `gc.collect()` first) keep it alive past
    its destruction here, to the same end."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def open_tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))


class SetupMixin:
    """Trainer methods that build what a run needs, before the first step."""

    def _parallelize(self, module: nn.Module) -> nn.Module:
        """DDP, or FSDP2 with every DiT block its own shard group and the rest in the root's."""
        if self.world_size == 1:
            return module
        if not self.sharded:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
        from torch.distributed.fsdp import fully_shard

        for block in self.net.dit.blocks:
            fully_shard(block)
        fully_shard(module)
        return module

    def _build_net(self, resume: bool = False) -> AstraNet:
        cfg = self.cfg
        net = AstraNet(cfg.model)
        if cfg.mode == "adapter":
            if not resume:  # resuming, state.pt holds every weight, the frozen backbone's too
                _load_backbone(net, cfg.init_checkpoint, self.tokenizer)
            net.select_adapter_parameters()
        elif cfg.mode == "finetune" and not resume:
            _load_whole(net, cfg.init_checkpoint, self.tokenizer)
        return net

    def clip_frames(self) -> int:
        h = self.cfg.model.history
        return h.context_frames + (self.cfg.data.history_chunks + 1) * h.chunk_size

    def _load_clips(self) -> tuple[dict[str, list], dict[str, list]]:
        data = self.cfg.data
        if data.source == "cache":
            paths = sorted({p for pattern in data.cache for p in glob.glob(pattern)})
            if not paths:
                raise ConfigError(f"data.cache: no shard matches {list(data.cache)}")
            episodes, first_of = [], {}
            for path in paths:
                for ep in read_shard(path, self.tokenizer.describe()):
                    episodes.append(ep)
                    first_of.setdefault(tuple(ep.latents.shape[-2:]), f"{path} ({ep.source or ep.embodiment})")
            self._check_one_frame_size("data.cache", first_of)
            _check_modalities(self.cfg, {e.embodiment: (sorted(e.actions), e.source) for e in episodes})
            counts: dict[str, int] = {}
            for ep in episodes:
                counts[ep.embodiment] = counts.get(ep.embodiment, 0) + 1
            named = set(data.weights)
            left_default = data.weights == DataConfig.model_fields["weights"].default and not named & set(counts)
            if named - set(counts) and not left_default:  # the toy worlds' default weights: every embodiment equal
                raise ConfigError(
                    f"data.weights: {sorted(named - set(counts))} name no embodiment of the cache "
                    f"({sorted(counts)}); weigh the cache's embodiments"
                )
            few = {name: n for name, n in counts.items() if n < 2}
            if few:
                raise ConfigError(
                    f"data.cache: embodiment(s) {few} have a single episode; whole episodes are held out "
                    "(split_episodes), so each needs at least 2: encode more episodes"
                )
            train, held_out = split_episodes(episodes)  # whole episodes, never one on both sides
            pools: dict[str, list] = {}
            held: dict[str, list] = {}
            for side, chosen in ((pools, train), (held, held_out)):
                for ep in chosen:
                    side.setdefault(ep.embodiment, []).extend(ep.clips(self.clip_frames(), data.clip_stride))
            for name in counts:
                if not pools.get(name) or not held.get(name):
                    raise ConfigError(
                        f"data.cache: embodiment {name!r} yields no clips of {self.clip_frames()} frames on one "
                        "side of the split; add episodes or lower data.history_chunks"
                    )
            return pools, held
        train = self._world_clips(0, data.episodes_per_world, data.time_strides)
        first_of = {}
        for name, clips in train.items():
            for clip in clips[:1]:
                first_of.setdefault(tuple(clip.latents.shape[-2:]), f"world {name!r}")
        self._check_one_frame_size("data.weights", first_of)
        return train, self._world_clips(10**6, data.held_out_per_world, (1,))

    def _check_one_frame_size(self, field: str, first_of: dict[tuple[int, int], str]) -> None:
        """One model trains on one frame size (a batch of two would not stack), one its DiT's patch
        divides: `first_of` maps each latent size found to where it was first seen."""
        if len(first_of) > 1:
            s = self.tokenizer.spatial_factor
            sizes = "; ".join(f"{h * s}×{w * s} frames in {where}" for (h, w), where in first_of.items())
            raise ConfigError(
                f"{field}: the data holds frames of {len(first_of)} sizes ({sizes}); one model trains on one "
                "frame size: encode every episode at one size (astra encode --size HxW)"
            )
        (h, w), where = next(iter(first_of.items()), ((0, 0), ""))
        _, ph, pw = self.cfg.model.dit.patch_size
        if h % ph or w % pw:  # the DiT cuts latents into ph × pw patches: say so here, not at the first step
            s = self.tokenizer.spatial_factor
            how = " (astra encode --size HxW)" if field == "data.cache" else ""
            raise ConfigError(
                f"{field}: {h * s}×{w * s} frames in {where} make {h}×{w} latents (the tokenizer's factor {s}), "
                f"which the DiT's patch ({ph}, {pw}) (model.dit.patch_size) does not divide: use frames whose "
                f"height is a multiple of {ph * s} and width a multiple of {pw * s}{how}"
            )

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames the run trains on: its clips' latent size times the tokenizer's."""
        clip = next(c for clips in self.pools.values() for c in clips)
        h, w = clip.latents.shape[-2:]
        return h * self.tokenizer.spatial_factor, w * self.tokenizer.spatial_factor

    def _world_clips(self, seed0: int, count: int, strides: tuple[int, ...]) -> dict[str, list]:
        from astra_core.apps.encode import encode_episode
        from astra_core.plugins import get_registry

        registry = get_registry()
        pools = {}
        needed = self.clip_frames()
        data, history = self.cfg.data, self.cfg.model.history
        for k in sorted(set(strides)):  # before any episode is rendered
            latent = 1 + (data.episode_frames - 1) // (k * self.tokenizer.temporal_factor)
            if latent >= needed:
                continue
            clip = (
                f"a clip needs {needed} (model.history.context_frames {history.context_frames}, then data."
                f"history_chunks {data.history_chunks} + 1 chunks of model.history.chunk_size {history.chunk_size})"
            )
            if k == 1:
                raise ConfigError(
                    f"data.episode_frames={data.episode_frames} gives {latent} latent frames and {clip}; raise "
                    "episode_frames or lower history_chunks"
                )
            raise ConfigError(
                f"data.time_strides: stride {k} leaves {latent} latent frames of an episode of "
                f"data.episode_frames={data.episode_frames} and {clip}"
            )
        for name in self.cfg.data.weights:
            embodiment = registry.embodiments.get(name)  # a plugin may register a world with no embodiment
            world = registry.get("worlds", embodiment.world if embodiment is not None and embodiment.world else name)
            clips = []
            for i in range(count):
                episode = world.episode(seed0 + i, self.cfg.data.episode_frames)
                for k in sorted(set(strides)):
                    encoded = encode_episode(episode, self.tokenizer, registry.modalities, time_stride=k)
                    clips.extend(CachedEpisode.from_encoded(encoded).clips(needed, self.cfg.data.clip_stride))
            pools[name] = clips
        return pools

    def _fit_normalizers(self) -> None:
        if self.net.moae is None:
            return
        everything = collate([c for clips in self.pools.values() for c in clips])
        for name in self.net.moae.names:
            if name in everything.actions and not bool(self.net.moae.normalizers[name].fitted):
                self.net.moae.normalizers[name].fit(everything.actions[name], everything.masks[name])
