"""The trainer behind `astra train CONFIG.yaml`: the step and the loop here; its setup in
`train_setup`, its held-out evaluation in `train_eval`, its checkpoints and resume in `train_state`.

- AdamW with linear warmup then cosine (or constant) decay, gradient clipping, bf16 autocast, EMA;
  on a CUDA device when there is one (`device: auto`), the CPU otherwise.
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
import json
import math
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from astra_core.apps.train_eval import EvaluationMixin, held_out_partners, held_out_picks  # noqa: F401
from astra_core.apps.train_setup import (  # noqa: F401
    SetupMixin,
    build_run_tokenizer,
    check_data_against_model,
    init_distributed,
    open_tensorboard,
    pad_to_one_vector,
    training_device,
    warn_history_window,
)
from astra_core.apps.train_state import RESUMABLE_CHANGES, CheckpointMixin, read_training_state  # noqa: F401
from astra_core.checkpoint import (
    remove_leftovers,
)
from astra_core.config import TrainConfig
from astra_core.data import Batch, ClipSampler, collate
from astra_core.errors import ConfigError
from astra_core.model.actions import AstraNet
from astra_core.model.dit import compile_dit
from astra_core.model.objective import WorldModelObjective
from astra_core.world import warn_emulated_bf16


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
            actions, masks = pad_to_one_vector(batch, self.net.config.action.action_dim)
        loss, logs = self.objective.loss(batch.latents, actions, masks, num_history, positions, generator, rows, total)
        if self.touch_all:  # FSDP reduces every gradient on every rank: unused experts must still get one
            rest = [p for n, p in self.net.named_parameters() if p.requires_grad and not n.startswith("dit.blocks.")]
            loss = loss + 0.0 * sum(p.sum() for p in rest)
        return loss, logs


# the files of a training run in its out_dir: a fresh run refuses a folder that holds any of them
RUN_FILES = ("state.pt", "model.safetensors", "metrics.jsonl")


class Trainer(SetupMixin, EvaluationMixin, CheckpointMixin):
    """Trains one world model as a `TrainConfig` says: `Trainer(cfg).train()`.

    `cfg`: a `TrainConfig` (`TrainConfig.from_yaml(path)` or `.from_dict({...})`, the same mapping a
    YAML file holds). `resume=True` continues from `cfg.out_dir/state.pt` bit for bit; `progress=False`
    hides the bar; a resumed run must have the stored config but for `RESUMABLE_CHANGES`, unless
    `accept_config_changes`. `train()` runs to `cfg.steps`, logs to `out_dir/metrics.jsonl`, evaluates every
    `eval_every` steps, and writes `out_dir/model.safetensors` (the EMA weights, loadable by
    `WorldModel.from_checkpoint`) and `out_dir/state.pt` every `checkpoint_every` steps and at the end;
    `train_step()` runs one step and returns its logs; `evaluate()` the held-out figures."""

    def __init__(
        self,
        cfg: TrainConfig | Mapping,
        resume: bool = False,
        progress: bool = True,
        accept_config_changes: bool = False,
    ):
        if isinstance(cfg, Mapping):  # the dict form of a YAML config
            cfg = TrainConfig.from_dict(dict(cfg))
        elif not isinstance(cfg, TrainConfig):
            raise ConfigError(f"Trainer: expected a TrainConfig (or its dict), got {type(cfg).__name__}")
        self.cfg = cfg
        self.accept_config_changes = accept_config_changes
        check_data_against_model(cfg)  # before any folder is made or any episode rendered or read
        warn_history_window(cfg)
        self.device = training_device(cfg.device)
        if cfg.precision == "bf16":
            warn_emulated_bf16(
                self.device,
                "precision: bf16",
                "set precision: fp32 in the config (or: astra train CONFIG --precision fp32)",
            )
        self.rank, self.world_size = init_distributed(self.device)
        self.out = Path(cfg.out_dir)
        held = [name for name in RUN_FILES if (self.out / name).is_file()]
        if not resume and held:  # a fresh start would overwrite that run's weights and state, and add to its log
            then = (
                "continue it with --resume (Trainer(..., resume=True))"
                if "state.pt" in held
                else "it has no state.pt to resume from (stopped before its first checkpoint?): delete those files"
            )
            raise ConfigError(
                f"out_dir {self.out} already holds a training run ({', '.join(held)}); {then}, or train into "
                "another out_dir (--out)"
            )
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.out)  # temporary files of a run killed while writing
        torch.manual_seed(cfg.seed)
        self.progress = progress and self.rank == 0
        self.tokenizer = build_run_tokenizer(cfg)
        self.net = self._build_net(resume)
        self.pools, self.held_out = self._load_clips()
        self._fit_normalizers()
        self.net.to(self.device)  # after the normalisers are fitted on the CPU, before the EMA copy and the optimiser
        self.sampler = ClipSampler(self.pools, {k: v for k, v in cfg.data.weights.items() if k in self.pools}, cfg.seed)
        self.sharded = cfg.parallel == "fsdp" and self.world_size > 1
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        if cfg.compile:  # in place, after the EMA copy: the parameter names stay those of the checkpoint
            compile_dit(self.net.dit)
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
        self.cpu_started = time.process_time()
        self._stop = False
        if resume:
            self.load_state()

    # ---- setup --------------------------------------------------------------------------------

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
        weights, most = cfg.phase_at(self.step)  # data.phases, then data.weights and data.history_chunks
        batch = collate(self.sampler.sample(total, weights if cfg.data.phases else None))
        chunks = int(torch.randint(most + 1, (1,), generator=self.generator))
        opening = False
        if cfg.data.opening_prob > 0:  # no draw at 0, so runs without the opening layout keep their random stream
            draw = float(torch.rand(1, generator=self.generator))
            opening = chunks < most and draw < cfg.data.opening_prob
        if chunks == most < cfg.data.history_chunks:  # a full clip of a phase with fewer chunks: contiguous
            opening = True
        batch, num_history, positions = self._crop(batch, chunks, opening)
        rows = slice(self.rank * cfg.batch_size, (self.rank + 1) * cfg.batch_size)
        local = Batch(
            batch.latents[rows],
            {k: v[rows] for k, v in batch.actions.items()},
            {k: v[rows] for k, v in batch.masks.items()},
            batch.embodiments[rows],
        ).to(self.device)
        positions = positions.to(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
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

    # ---- loop, checkpoints --------------------------------------------------------------------

    def train(self) -> dict:
        cfg = self.cfg
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._request_stop)
        writer = open_tensorboard(self.out) if cfg.tensorboard and self.rank == 0 else None
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
