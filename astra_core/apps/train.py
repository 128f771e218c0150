"""The trainer behind `astra train CONFIG.yaml`: setup, step, eval, checkpoint, resume.

- AdamW with linear warmup then cosine (or constant) decay, gradient clipping, bf16 autocast, EMA.
- Clips from the toy worlds (encoded on the fly) or from HDF5 latent-cache shards, drawn per
  embodiment with mixing weights; each step uses a random number of history chunks, cropped the way
  a rollout's window is (the context chunk plus the most recent chunks, original positions kept).
- tqdm progress, a JSONL metrics log, optional TensorBoard; checkpoints every N steps and on
  SIGINT/SIGTERM, written atomically. `resume=True` continues bit for bit: the state holds model,
  EMA, optimiser, scheduler, step, random generators and the sampler's position.
- Data parallel under `torchrun` (DDP; gloo on CPU, nccl on GPU): every rank draws the same combined
  batch and keeps its rows, so N ranks match one process running the combined batch.
"""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from astra_core.checkpoint import (
    publish,
    read_checkpoint,
    remove_leftovers,
    save_checkpoint,
    temporary_beside,
    write_text_atomically,
)
from astra_core.config import TrainConfig
from astra_core.data import Batch, ClipSampler, collate
from astra_core.data.cache import CachedEpisode, read_shard, split_episodes
from astra_core.errors import CheckpointError, ConfigError
from astra_core.model.actions import AstraNet, map_actions
from astra_core.model.objective import WorldModelObjective


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = temporary_beside(path)
    try:
        torch.save(obj, tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _LossModule(nn.Module):
    """The whole loss as one forward, so that DDP sees (and synchronises) every parameter."""

    def __init__(self, net: AstraNet, touch_all: bool = False):
        super().__init__()
        self.net = net
        self.objective = WorldModelObjective(net)
        self.touch_all = touch_all

    def forward(self, batch: Batch, num_history: int, positions, generator, rows, total):
        actions, masks = batch.actions, batch.masks
        if self.net.moae is None:
            actions, masks = _pad_to_one_vector(batch, self.net.config.action.action_dim)
        loss, logs = self.objective.loss(batch.latents, actions, masks, num_history, positions, generator, rows, total)
        if self.touch_all:  # FSDP reduces every gradient on every rank: unused experts must still get one
            rest = [p for n, p in self.net.named_parameters() if p.requires_grad and not n.startswith("dit.blocks.")]
            loss = loss + 0.0 * sum(p.sum() for p in rest)
        return loss, logs


def held_out_picks(count: int, size: int = 16) -> list[int]:
    """The clips of a held-out pool of `count` that the evaluation batches: up to `size`, spread evenly.
    A pool lists each episode's clips one after another, so its first clips would mostly share one
    episode (and one scene)."""
    return list(range(count)) if count <= size else [i * count // size for i in range(size)]


def held_out_partners(size: int) -> torch.Tensor:
    """For each clip of a held-out batch, the clip whose actions it gets for the action gain: the one
    half the batch away. Neighbouring clips of one episode overlap and carry nearly the same actions
    (controls hold for many frames), so swapping with a neighbour would measure almost nothing."""
    return (torch.arange(size) - max(1, size // 2)) % size


def _pad_to_one_vector(batch: Batch, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One shared encoder: every modality's vector padded to `width` and summed over modalities."""
    b, f = batch.latents.shape[0], batch.latents.shape[2]
    vector, mask = torch.zeros(b, f, width), torch.zeros(b, f)
    for name, a in batch.actions.items():
        if a.shape[-1] > width:
            raise ConfigError(f"action.action_dim={width} is narrower than modality {name!r} ({a.shape[-1]})")
        m = batch.masks[name]
        vector[..., : a.shape[-1]] += a * m[..., None]
        mask = torch.maximum(mask, m)
    return vector, mask


def _check_modalities(cfg: TrainConfig, streams: dict[str, tuple[list[str], str]]) -> None:
    """Every embodiment's action modalities must be ones the model encodes (MoAE and the shared encoder
    name theirs; the plain MLP takes any one stream of `action.action_dim`)."""
    action = cfg.model.action
    if action.encoder not in ("moae", "shared"):
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


class Trainer:
    """Trains one world model as a `TrainConfig` says: `Trainer(cfg).train()`.

    `cfg`: a `TrainConfig` (`TrainConfig.from_yaml(path)` or `.from_dict({...})`, the same mapping a
    YAML file holds). `resume=True` continues from `cfg.out_dir/state.pt` bit for bit; `progress=False`
    hides the bar; a resumed run must have the stored config but for `RESUMABLE_CHANGES`, unless
    `accept_config_changes`. `train()` runs to `cfg.steps`, logs to `out_dir/metrics.jsonl`, evaluates every
    `eval_every` steps, and writes `out_dir/model.safetensors` (the EMA weights, loadable by
    `WorldModel.from_checkpoint`) and `out_dir/state.pt` every `checkpoint_every` steps and at the end;
    `train_step()` runs one step and returns its logs; `evaluate()` the held-out figures."""

    def __init__(
        self, cfg: TrainConfig, resume: bool = False, progress: bool = True, accept_config_changes: bool = False
    ):
        self.cfg = cfg
        self.accept_config_changes = accept_config_changes
        check_data_against_model(cfg)  # before any folder is made or any episode rendered or read
        self.rank, self.world_size = _init_distributed()
        self.out = Path(cfg.out_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.out)  # temporary files of a run killed while writing
        torch.manual_seed(cfg.seed)
        self.progress = progress and self.rank == 0
        self.tokenizer = _build_tokenizer(cfg)
        self.net = self._build_net()
        self.pools, self.held_out = self._load_clips()
        self._fit_normalizers()
        self.sampler = ClipSampler(self.pools, {k: v for k, v in cfg.data.weights.items() if k in self.pools}, cfg.seed)
        self.sharded = cfg.parallel == "fsdp" and self.world_size > 1
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.net.dit.gradient_checkpointing = cfg.activation_checkpointing
        self.loss_module = self._parallelize(
            _LossModule(self.net, touch_all=self.sharded)
        )  # before the optimiser sees the parameters
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.started = time.time()
        self._stop = False
        if resume:
            self.load_state()

    # ---- setup --------------------------------------------------------------------------------

    def _parallelize(self, module: nn.Module) -> nn.Module:
        """DDP, or FSDP2 with every DiT block its own shard group and the rest in the root's."""
        if self.world_size == 1:
            return module
        if not self.sharded:
            return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
        from torch.distributed.fsdp import fully_shard

        for block in self.net.dit.blocks:
            fully_shard(block)
        fully_shard(module)
        return module

    def full_state_dict(self) -> dict:
        """The network's weights as plain tensors (gathered from the shards under FSDP)."""
        if not self.sharded:
            return self.net.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.loss_module, options=options)
        return {k.removeprefix("net."): v for k, v in full.items()}

    def _build_net(self) -> AstraNet:
        cfg = self.cfg
        net = AstraNet(cfg.model)
        if cfg.mode == "adapter":
            _load_backbone(net, cfg.init_checkpoint)
            net.select_adapter_parameters()
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
            episodes = [e for p in paths for e in read_shard(p, self.tokenizer.describe())]
            _check_modalities(self.cfg, {e.embodiment: (sorted(e.actions), e.source) for e in episodes})
            counts: dict[str, int] = {}
            for ep in episodes:
                counts[ep.embodiment] = counts.get(ep.embodiment, 0) + 1
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
        return train, self._world_clips(10**6, data.held_out_per_world, (1,))

    def _world_clips(self, seed0: int, count: int, strides: tuple[int, ...]) -> dict[str, list]:
        from astra_core.apps.encode import encode_episode
        from astra_core.plugins import get_registry

        registry = get_registry()
        pools = {}
        needed = self.clip_frames()
        for name in self.cfg.data.weights:
            world = registry.get("worlds", registry.get("embodiments", name).world or name)
            clips = []
            for i in range(count):
                episode = world.episode(seed0 + i, self.cfg.data.episode_frames)
                for k in sorted(set(strides)):
                    if 1 + (self.cfg.data.episode_frames - 1) // (k * self.tokenizer.temporal_factor) < needed:
                        raise ConfigError(
                            f"data.time_strides: stride {k} leaves fewer than {needed} frames of an "
                            f"episode of data.episode_frames={self.cfg.data.episode_frames}"
                        )
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

    def _lr_factor(self, step: int) -> float:
        o = self.cfg.optim
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = (step - o.warmup_steps) / max(1, self.cfg.steps - o.warmup_steps)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # ---- one step -----------------------------------------------------------------------------

    def _crop(self, batch: Batch, chunks: int, opening: bool = False) -> tuple[Batch, int, torch.Tensor]:
        """Context frames + `chunks` history chunks + the target chunk; positions kept.

        Two layouts, as a rollout meets them: `opening` keeps the clip's first frames, so the history
        follows the context directly (the first chunks of a rollout); otherwise the last chunks are kept
        after a gap (later in a rollout, the sink far behind the window)."""
        h = self.cfg.model.history
        f = batch.latents.shape[2]
        if opening:
            keep = list(range(h.context_frames + (chunks + 1) * h.chunk_size))
        else:
            keep = list(range(h.context_frames)) + list(range(f - (chunks + 1) * h.chunk_size, f))
        idx = torch.tensor(keep)
        cropped = Batch(
            batch.latents[:, :, idx],
            {k: v[:, idx] for k, v in batch.actions.items()},
            {k: v[:, idx].clone() for k, v in batch.masks.items()},
            batch.embodiments,
        )
        if chunks < self.cfg.data.history_chunks and not opening:  # the frame after the context lost its predecessor
            for m in cropped.masks.values():
                m[:, h.context_frames] = 0.0
        return cropped, len(keep) - h.chunk_size, idx

    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        total = cfg.batch_size * self.world_size
        batch = collate(self.sampler.sample(total))
        chunks = int(torch.randint(cfg.data.history_chunks + 1, (1,), generator=self.generator))
        opening = False
        if cfg.data.opening_prob > 0:  # no draw at 0, so runs without the opening layout keep their random stream
            draw = float(torch.rand(1, generator=self.generator))
            opening = chunks < cfg.data.history_chunks and draw < cfg.data.opening_prob
        batch, num_history, positions = self._crop(batch, chunks, opening)
        rows = slice(self.rank * cfg.batch_size, (self.rank + 1) * cfg.batch_size)
        local = Batch(
            batch.latents[rows],
            {k: v[rows] for k, v in batch.actions.items()},
            {k: v[rows] for k, v in batch.masks.items()},
            batch.embodiments[rows],
        )
        start = time.perf_counter()
        with torch.autocast(
            "cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"
        ):
            loss, logs = self.loss_module(local, num_history, positions, self.generator, rows, total)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        lr = self.opt.param_groups[0]["lr"]  # the rate this step used
        self.opt.step()
        self.sched.step()
        self._update_ema()
        self.step += 1
        seconds = time.perf_counter() - start
        _, ph, pw = self.cfg.model.dit.patch_size
        tokens = local.latents[:, 0].numel() / (ph * pw) * self.world_size  # DiT tokens in the combined batch
        logs.update(
            step=self.step,
            lr=lr,
            grad_norm=float(grad_norm),
            tokens_per_s=tokens / seconds,
            history_chunks=chunks,
            opening=opening,
        )
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.optim.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            e.lerp_(full.detach(), 1 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out figures of the EMA model with fixed noise and no action dropout (comparable across
        steps): the mean loss, and the action gain, the loss with each clip given another episode's
        actions over the loss with its own (same noise). A gain near 1: the model ignores its actions.
        The gain is measured on full-history clips and, as `eval_action_gain_opening`, on the first
        chunk after the context frames, where no history can stand in for the actions."""
        objective = WorldModelObjective(self.ema)

        def held_out_loss(batch, actions, masks, num_history, positions) -> float:  # the same noise each call
            generator = torch.Generator().manual_seed(1234)
            args = (batch.latents, actions, masks, num_history, positions, generator)
            return float(objective.loss(*args, drop_actions=False)[0])

        def loss_and_gain(batch, num_history, positions) -> tuple[float, float | None]:
            actions, masks = batch.actions, batch.masks
            if self.ema.moae is None:
                actions, masks = _pad_to_one_vector(batch, self.ema.config.action.action_dim)
            loss = held_out_loss(batch, actions, masks, num_history, positions)
            if batch.latents.shape[0] < 2 or not self.ema.config.action.use_actions:
                return loss, None
            partner = held_out_partners(batch.latents.shape[0])
            shuffled = map_actions(actions, lambda a: a[partner])
            shuffled_masks = map_actions(masks, lambda m: m[partner]) if masks is not None else None
            return loss, held_out_loss(batch, shuffled, shuffled_masks, num_history, positions) / max(loss, 1e-12)

        losses, gains, opening_gains = {}, {}, {}
        for name, clips in self.held_out.items():
            batch = collate([clips[i] for i in held_out_picks(len(clips))])
            losses[name], gain = loss_and_gain(*self._crop(batch, self.cfg.data.history_chunks))
            _, opening_gain = loss_and_gain(*self._crop(batch, 0, opening=True))
            if gain is not None:
                gains[name], opening_gains[name] = gain, opening_gain
        out = {"eval_loss": sum(losses.values()) / max(1, len(losses)), "eval_loss_per_embodiment": losses}
        if gains:
            out["eval_action_gain"] = sum(gains.values()) / len(gains)
            out["eval_action_gain_per_embodiment"] = gains
            out["eval_action_gain_opening"] = sum(opening_gains.values()) / len(opening_gains)
            out["eval_action_gain_opening_per_embodiment"] = opening_gains
        return out

    # ---- loop, checkpoints --------------------------------------------------------------------

    def train(self) -> dict:
        cfg = self.cfg
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._request_stop)
        writer = _tensorboard(self.out) if cfg.tensorboard and self.rank == 0 else None
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not self.progress)
        logs: dict = {}
        try:
            while self.step < cfg.steps and not self._stop:
                logs = self.train_step()
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    logs.update(self.evaluate())
                if self.rank == 0 and (self.step % cfg.log_every == 0 or "eval_loss" in logs):
                    self._log(logs, writer)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", tok_s=f"{logs['tokens_per_s']:.0f}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_state()
            self.save_state()
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer is not None:
                writer.close()
        return logs

    def _request_stop(self, signum, frame) -> None:
        self._stop = True

    def _log(self, logs: dict, writer) -> None:
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(logs) + "\n")
        if writer is not None:
            for key, value in logs.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(key, value, self.step)

    def _optimizer_state(self) -> dict:
        """The optimiser state; under FSDP gathered into one full state keyed by parameter name."""
        if not self.sharded:
            return self.opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.loss_module, self.opt, options=options)

    def save_state(self) -> None:
        model = self.full_state_dict()  # collectives under FSDP: every rank takes part
        optimizer = self._optimizer_state()
        if self.rank != 0:
            return
        state = {
            "step": self.step,
            "model": model,
            "ema": self.ema.state_dict(),
            "optimizer": optimizer,
            "sharded": self.sharded,
            "scheduler": self.sched.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "elapsed_s": self.elapsed(),
        }
        _atomic_torch_save(state, self.out / "state.pt")
        save_checkpoint(self.out / "model.safetensors", self.ema, self._provenance(), tokenizer=self.tokenizer)

    def _provenance(self) -> dict[str, str]:
        return {
            "train_step": str(self.step),
            "train_config": json.dumps(self.cfg.model_dump(mode="json")),
            "train_cpu_seconds": f"{self.elapsed():.0f}",
            "weights": "ema",
        }

    def elapsed(self) -> float:
        return getattr(self, "_elapsed_before", 0.0) + time.time() - self.started

    def load_state(self) -> None:
        path = self.out / "state.pt"
        if not path.is_file():
            raise ConfigError(f"--resume: no training state at {path}")
        state = read_training_state(path)
        self._check_resumed_config(path, state.get("config"))
        if state.get("optimizer") is None:  # FSDP states of earlier versions kept no optimiser state
            raise ConfigError(f"--resume: {path} holds no optimiser state, so it cannot be resumed exactly")
        if bool(state.get("sharded", False)) != self.sharded:
            kinds = {True: "parallel 'fsdp'", False: "one process or DDP"}
            raise ConfigError(
                f"--resume: {path} was saved with {kinds[bool(state.get('sharded'))]}; resume it the same way, "
                f"not with {kinds[self.sharded]}"
            )
        if self.sharded:  # every rank reads the full state and keeps its own shards of it
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            model = {"net." + k: v for k, v in state["model"].items()}
            set_model_state_dict(self.loss_module, model, options=options)
            set_optimizer_state_dict(self.loss_module, self.opt, state["optimizer"], options=options)
        else:
            self.net.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.sched.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self._elapsed_before = state.get("elapsed_s", 0.0)
        if self.rank == 0:
            self._agree_with_state()

    def _check_resumed_config(self, path: Path, stored: dict | None) -> None:
        """A resumed run continues the stored one: the total steps and the logging, evaluation and
        checkpoint intervals (and out_dir) may change; any other difference is refused, naming the
        fields, unless `accept_config_changes`. Every difference is reported."""
        if stored is None:
            return
        changed = _differences(stored, self.cfg.model_dump(mode="json"))
        if not changed:
            return
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
        if refused and not self.accept_config_changes:
            shown = "; ".join(f"{k}: {changed[k][0]!r} in the run, {changed[k][1]!r} now" for k in refused[:8])
            raise ConfigError(
                f"--resume: the config differs from the one {path} was trained with ({shown}); put them back, "
                "or pass --accept-config-changes to continue with the new values"
            )
        if self.rank == 0:
            for key, (before, after) in changed.items():
                print(f"astra train: resuming with {key} {before!r} -> {after!r}", file=sys.stderr)

    def _agree_with_state(self) -> None:
        """After a resume, make the run's other files match the state's step: metrics logged after it
        are dropped (they will be logged again), and weights written after it are rewritten."""
        metrics = self.out / "metrics.jsonl"
        if metrics.is_file():
            kept = [line for line in metrics.read_text().splitlines() if _logged_step(line) <= self.step]
            write_text_atomically(metrics, "".join(line + "\n" for line in kept))
        weights = self.out / "model.safetensors"
        try:
            written_at = int(read_checkpoint(weights)[2].get("train_step", -1)) if weights.is_file() else None
        except (CheckpointError, ConfigError, ValueError):
            written_at = -1  # unreadable: write it again
        if written_at is not None and written_at != self.step:
            save_checkpoint(weights, self.ema, self._provenance(), tokenizer=self.tokenizer)


# Fields a resumed run may change without --accept-config-changes: how long it runs and how often it
# logs, evaluates and saves, and where its files are.
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "checkpoint_every", "out_dir", "tensorboard")


def _differences(before, after, prefix: str = "") -> dict[str, tuple]:
    """Dotted paths whose values differ between two nested dicts -> (before, after)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, tuple] = {}
        for key in sorted(set(before) | set(after)):
            out.update(_differences(before.get(key), after.get(key), f"{prefix}{key}."))
        return out
    return {} if before == after else {prefix.rstrip("."): (before, after)}


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 10**18  # a torn last line: dropped


def read_training_state(path: str | Path) -> dict:
    """A training state written by `Trainer.save_state`, read without running code from the file.

    The state holds only tensors, numbers, strings and containers of them, so it is unpickled with
    `weights_only=True`: a file that asks for any other object (a crafted pickle that would call a
    function while loading) is refused before anything in it runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"--resume: {path} is not a training state this project wrote; it asks to load code or objects "
            f"other than tensors and plain values, so it was refused unread ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"--resume: {path} cannot be read as a training state (truncated or corrupt?): {err}"
        ) from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"--resume: {path} is not a training state (no 'step' and 'model' entries)")
    return state


def _build_tokenizer(cfg: TrainConfig):
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.data.tokenizer_train import load_tokenizer

    if cfg.data.tokenizer == "pixel":
        return PixelTokenizer(cfg.data.pixel_patch)
    return load_tokenizer(cfg.data.tokenizer)


def _load_backbone(net: AstraNet, path: str) -> None:
    """Adapter mode: the backbone of an Astra checkpoint, or a Wan2.1 state dict (either layout)."""
    from safetensors.torch import load_file

    from astra_core.checkpoint import read_checkpoint
    from astra_core.model.dit import is_astra_addition
    from astra_core.model.wan_io import load_wan_state_dict

    if not path or not Path(path).is_file():
        raise CheckpointError(f"init_checkpoint {path!r}: no such file (adapter mode starts from it)")
    try:
        _, tensors, _ = read_checkpoint(path)
        tensors = {k[len("dit.") :]: v for k, v in tensors.items() if k.startswith("dit.")}
    except CheckpointError as astra_error:  # not an Astra checkpoint: a plain Wan state dict?
        try:
            tensors = load_file(path)
        except Exception as err:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(
                f"init_checkpoint {path}: neither an Astra checkpoint ({astra_error}) nor a safetensors "
                f"state dict ({type(err).__name__}: {err})"
            ) from None
    backbone = {k: v for k, v in tensors.items() if not is_astra_addition(k)}
    load_wan_state_dict(net.dit, backbone)


def _init_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))
