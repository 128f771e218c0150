"""Training throughput of a config: latent tokens/s and achieved GFLOP/s against the measured matmul peak.

Training FLOPs per step are counted as 3x the forward's (forward + backward):
3 · (2 · matmul parameters · tokens + 4 · tokens² · dim · layers) per sample.
Run: python bench/bench_train.py [--config examples/configs/toy.yaml] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _timing import matmul_peak
from bench_dit import video_matmul_params

from astra_core.apps.train import Trainer
from astra_core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "toy.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per world to build clips from")
    args = parser.parse_args()
    cfg = TrainConfig.from_yaml(args.config)
    with tempfile.TemporaryDirectory() as out:
        data = cfg.data.model_copy(update={"episodes_per_world": args.episodes, "held_out_per_world": 1})
        cfg = cfg.model_copy(
            update={"data": data, "out_dir": out, "eval_every": 0, "checkpoint_every": 0, "steps": args.steps + 3}
        )
        trainer = Trainer(cfg, progress=False)
        times, tokens = [], []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            logs = trainer.train_step()
            if step >= 3:  # warm-up
                times.append(time.perf_counter() - start)
                tokens.append(logs["tokens_per_s"] * times[-1])
    dit = trainer.net.dit
    per_sample_tokens = statistics.median(tokens) / cfg.batch_size
    cfgd = dit.config
    fwd = 2 * video_matmul_params(dit) * per_sample_tokens + 4 * per_sample_tokens**2 * cfgd.dim * cfgd.num_layers
    flops = 3 * fwd * cfg.batch_size
    seconds = statistics.median(times)
    peak = matmul_peak(torch.float32)
    print(
        f"config {args.config}: preset dim {cfgd.dim} x {cfgd.num_layers} layers, batch {cfg.batch_size}, "
        f"~{per_sample_tokens:.0f} tokens/sample, threads {torch.get_num_threads()}"
    )
    print(
        f"step {seconds * 1e3:.0f} ms (median of {len(times)}), {statistics.median(tokens) / seconds:.0f} latent "
        f"tokens/s, {flops / seconds / 1e9:.1f} GFLOP/s = {100 * flops / seconds / peak:.1f}% of the fp32 matmul "
        f"peak ({peak / 1e9:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
