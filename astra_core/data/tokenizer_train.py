"""Training the causal video VAE on frames from the registered toy worlds (`astra train-tokenizer`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from astra_core.checkpoint import atomic_save_tensors, tokenizer_weights
from astra_core.data.tokenizer import CausalVideoVAE, build_tokenizer, psnr_from_mse
from astra_core.errors import CheckpointError


@dataclass
class TokenizerTrainConfig:
    channels: int = 16
    width: int = 64
    steps: int = 3000
    batch: int = 4
    clip_frames: int = 9  # 1 + 4·2
    episodes_per_world: int = 48
    held_out_per_world: int = 4
    lr: float = 1e-3
    seed: int = 0


def world_clips(num_episodes: int, clip_frames: int, seed_offset: int) -> torch.Tensor:
    """Clips [N, 3, T, 64, 64] from every registered toy world (episodes of 2·T frames, two clips each)."""
    from astra_core.plugins import get_registry

    clips = []
    for world in get_registry().worlds.values():
        for i in range(num_episodes):
            frames = world.episode(seed_offset + i, 2 * clip_frames).frames
            clips.extend([frames[:, :clip_frames], frames[:, clip_frames:]])
    return torch.stack(clips)


@torch.no_grad()
def evaluate_psnr(vae: CausalVideoVAE, clips: torch.Tensor, batch: int = 8) -> float:
    vae.eval()
    mse = 0.0
    for i in range(0, len(clips), batch):
        x = clips[i : i + batch]
        mse += float((vae.decode(vae.encode(x)) - x).pow(2).sum())
    return psnr_from_mse(mse / clips.numel())


def train_tokenizer(cfg: TokenizerTrainConfig, out: Path, log_every: int = 50, progress: bool = True) -> dict:
    torch.manual_seed(cfg.seed)
    started = time.time()
    train = world_clips(cfg.episodes_per_world, cfg.clip_frames, 0)
    held_out = world_clips(cfg.held_out_per_world, cfg.clip_frames, 100_000)
    vae = CausalVideoVAE(cfg.channels, cfg.width)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="train-tokenizer", unit="step", disable=not progress)
    for step in bar:
        vae.train()
        idx = torch.randint(len(train), (cfg.batch,), generator=gen)
        loss, logs = vae.loss(train[idx], gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0:
            bar.set_postfix(loss=f"{logs['loss']:.4f}", psnr=f"{logs['psnr']:.1f}")
        if (step + 1) % 500 == 0 or step + 1 == cfg.steps:
            save_tokenizer(out, vae, {"step": step + 1})
    result = {
        "held_out_psnr": evaluate_psnr(vae, held_out),
        "steps": cfg.steps,
        "cpu_minutes": (time.time() - started) / 60,
        "train_clips": len(train),
        "held_out_clips": len(held_out),
    }
    save_tokenizer(out, vae, result)
    return result


def save_tokenizer(path: str | Path, tokenizer: torch.nn.Module, info: dict | None = None) -> Path:
    meta = {"format": "astra-tokenizer", "tokenizer": json.dumps(tokenizer.describe()), "info": json.dumps(info or {})}
    return atomic_save_tensors(path, tokenizer.state_dict(), meta)


def load_tokenizer(path: str | Path) -> torch.nn.Module:
    """A tokenizer file (`astra train-tokenizer`), or the tokenizer a world-model checkpoint carries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such tokenizer file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        spec = json.loads(meta["tokenizer"])
    except Exception as err:  # noqa: BLE001 - any failure here means an unreadable file
        raise CheckpointError(f"{path}: not a readable tokenizer checkpoint ({err})") from None
    if meta.get("format") != "astra-tokenizer":  # a world model's checkpoint: its tokenizer's tensors only
        tensors = tokenizer_weights(tensors)
    tokenizer = build_tokenizer(spec)
    try:
        tokenizer.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the tokenizer's weights do not load ({err})") from None
    return tokenizer.eval()
