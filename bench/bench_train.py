"""Training throughput of a config, side by side in one run: fp32 eager, bf16 eager and bf16 with the
DiT compiled (`compile: true`, torch.compile with inductor), each a trainer built from the same seed so
all of them draw the same clips and history layouts. Each variant first warms up until it has met every
history layout (the compiled one compiles there; its warm-up time is reported as the compile cost),
then the variants run one step each in turn (the config's `data.phases` are left out: the bench
times the main mix, where a run spends most of its steps); latent tokens/s is the sum over the
timed steps.

Training FLOPs per step are counted as 3x the forward's (forward + backward):
3 · (2 · matmul parameters · tokens + 4 · tokens² · dim · layers) per sample; the share is of the
fp32 matmul peak for fp32 and of the bf16 peak for bf16, both measured in the same process.
Run: python bench/bench_train.py [--config examples/configs/toy.yaml] [--steps 20] [--variants ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _timing import matmul_peak
from bench_dit import video_matmul_params

from astra_core.apps.train import Trainer
from astra_core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "fp32": {"precision": "fp32", "compile": False},
    "bf16": {"precision": "bf16", "compile": False},
    "bf16+compile": {"precision": "bf16", "compile": True},
    "fp32+compile": {"precision": "fp32", "compile": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "toy.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument(
        "--episodes",
        type=int,
        default=4,
        help="episodes per toy world to build clips from (a cache config keeps its shards)",
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fp32", "bf16", "bf16+compile"])
    args = parser.parse_args()
    base = TrainConfig.from_yaml(args.config)
    layouts = base.data.history_chunks + 1
    trainers, warmup = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for name in args.variants:
            # through the validators, as a config file would be; without the config's `data.phases` (the
            # toy recipe opens with 2,000 steps of one world without history): the bench times the main mix
            data = {**base.data.model_dump(), "phases": []}
            if base.data.source == "worlds":  # a cache config trains on its shards as they are
                data.update(episodes_per_world=args.episodes, held_out_per_world=1)
            cfg = TrainConfig.model_validate(
                {
                    **base.model_dump(),
                    "data": data,
                    "out_dir": str(Path(out) / name.replace("+", "_")),
                    "eval_every": 0,
                    "checkpoint_every": 0,
                    "steps": 10**6,
                    **VARIANTS[name],
                }
            )
            trainer = Trainer(cfg, progress=False)
            seen, start, steps = set(), time.perf_counter(), 0
            while len(seen) < layouts or steps < 3:  # every history length once, so compiling is done
                seen.add(trainer.train_step()["history_chunks"])
                steps += 1
            warmup[name] = (steps, time.perf_counter() - start)
            trainers[name] = trainer
        times = {name: 0.0 for name in trainers}
        tokens = {name: 0.0 for name in trainers}
        for _ in range(args.steps):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                logs = trainer.train_step()
                seconds = time.perf_counter() - start
                times[name] += seconds
                tokens[name] += logs["tokens_per_s"] * seconds
    dit = next(iter(trainers.values())).net.dit
    cfgd = dit.config
    per_sample = tokens[args.variants[0]] / args.steps / base.batch_size
    fwd = 2 * video_matmul_params(dit) * per_sample + 4 * per_sample**2 * cfgd.dim * cfgd.num_layers
    flops_per_step = 3 * fwd * base.batch_size
    # only the precisions the variants use: a CPU without native bf16 takes minutes over a bf16 peak
    used = sorted({VARIANTS[name]["precision"] for name in trainers})
    peaks = {p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16) for p in used}
    print(
        f"config {args.config}: dim {cfgd.dim} x {cfgd.num_layers} layers, batch {base.batch_size}, "
        f"~{per_sample:.0f} tokens/sample; {args.steps} timed steps per variant, in turn; "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'variant':14s} {'tokens/s':>9s} {'ms/step':>8s} {'% peak':>7s} {'vs fp32':>8s}  warm-up")
    reference = tokens[args.variants[0]] / times[args.variants[0]]
    for name in trainers:
        rate = tokens[name] / times[name]
        peak = peaks[VARIANTS[name]["precision"]]
        share = 100 * flops_per_step * args.steps / times[name] / peak
        n, seconds = warmup[name]
        print(
            f"{name:14s} {rate:9.0f} {1e3 * times[name] / args.steps:8.0f} {share:6.1f}% "
            f"{rate / reference:7.2f}x  {n} steps in {seconds:.1f} s"
        )
    print("matmul peaks: " + ", ".join(f"{p} {peak / 1e9:.1f}" for p, peak in peaks.items()) + " GFLOP/s")


if __name__ == "__main__":
    main()
