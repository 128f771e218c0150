"""The streaming step of a Wan2.1-1.3B-sized world model on one accelerator: per-chunk latency with the
KV cache against recomputing the history at every denoising step, side by side in one run, and the
cached step's model FLOP utilisation (MFU) against the bf16 matmul peak measured in the same process.

Defaults are the released backbone's: the `wan2.1-1.3b` preset (dim 1536, 30 layers) without text,
480×832 frames (60×104 latents, 1,560 tokens per latent frame), chunks of 8 latent frames, a history
of 1 context frame and 2 chunks, 4 Euler steps, bf16. FLOPs are counted as in bench_dit.py:
2·(matmul parameters acting on video tokens)·tokens + 4·(query tokens)·(key tokens)·dim·layers,
summed over the denoising forwards and the commit pass of one step.
Run: python bench/gpu_check.py [--device cuda] [--preset wan2.1-1.3b] [--height 480 --width 832]
(bench/gpu_check.sh also runs the GPU-marked tests first.) On a CPU it runs too, at a small size,
which is how the test suite checks it: `--device cpu --preset tiny --height 64 --width 64`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _timing import matmul_peak
from bench_dit import video_matmul_params

from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, SamplerConfig, dit_preset
from astra_core.model.actions import AstraNet
from astra_core.model.rollout import LatentWorldModel

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    """Wall times (s) of `fn` after one warm-up call, the device synchronised around each call."""
    fn()
    sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="wan2.1-1.3b")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels")
    parser.add_argument("--width", type=int, default=832, help="frame width in pixels")
    parser.add_argument("--vae-factor", type=int, default=8, help="pixels per latent cell (Wan's VAE: 8)")
    parser.add_argument("--chunk", type=int, default=8, help="latent frames per step")
    parser.add_argument("--history-chunks", type=int, default=2, help="chunks of history before the timed step")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-size", type=int, default=8192, help="side of the square matmul for the peak")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; pass --device cpu (with a small --preset and size) to try it on CPU")
        return 2
    if args.height % (2 * args.vae_factor) or args.width % (2 * args.vae_factor):
        print(f"gpu_check: --height/--width must be multiples of {2 * args.vae_factor} (VAE factor × patch 2)")
        return 2
    dtype = DTYPES[args.precision]
    lat_h, lat_w = args.height // args.vae_factor, args.width // args.vae_factor
    window = args.chunk * args.history_chunks
    config = AstraConfig(
        dit=dit_preset(args.preset, text_dim=None, in_dim=16, out_dim=16),
        action=ActionConfig(action_dim=7),
        history=HistoryConfig(chunk_size=args.chunk, window=window),
        sampler=SamplerConfig(num_steps=args.steps),
    )
    torch.manual_seed(0)
    net = AstraNet(config).eval().to(device)
    net.dit.to(dtype)
    cfg = net.dit.config
    per_frame = (lat_h // cfg.patch_size[1]) * (lat_w // cfg.patch_size[2])
    history_tokens = (1 + window) * per_frame
    chunk_tokens = args.chunk * per_frame
    print(
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; preset {args.preset} "
        f"(dim {cfg.dim}, {cfg.num_layers} layers), {args.precision}; {args.height}x{args.width} -> "
        f"{lat_h}x{lat_w} latents, {per_frame} tokens per latent frame; chunk {args.chunk} latent frames "
        f"({chunk_tokens} tokens); history 1 + {window} frames ({history_tokens} tokens); {args.steps} Euler steps"
    )

    def session(cached: bool) -> LatentWorldModel:
        wm = LatentWorldModel(net, guidance_scale=1.0, use_kv_cache=cached, num_steps=1, seed=0)
        wm.reset(torch.randn(1, 16, 1, lat_h, lat_w, device=device))
        for _ in range(args.history_chunks):
            wm.step(torch.randn(1, args.chunk, 7, device=device))
        wm.num_steps = args.steps
        return wm

    actions = torch.randn(1, args.chunk, 7, device=device)
    results = {}
    for cached in (True, False):
        base = session(cached)
        results[cached] = timed(lambda base=base: base.fork().step(actions), device, args.repeats)
        del base
        if device.type == "cuda":
            torch.cuda.empty_cache()
    cached_s, recompute_s = (statistics.median(results[c]) for c in (True, False))

    keys = history_tokens + chunk_tokens
    params = video_matmul_params(net.dit)
    forward = 2 * params * chunk_tokens + 4 * chunk_tokens * keys * cfg.dim * cfg.num_layers
    flops = (args.steps + 1) * forward  # the denoising forwards, then the commit pass over the new chunk
    peak = matmul_peak(dtype, args.peak_size, device=device)
    print(f"{'path':10s} {'median s':>9s} {'min s':>8s} {'max s':>8s}")
    for name, cached in (("kv cache", True), ("recompute", False)):
        ts = results[cached]
        print(f"{name:10s} {statistics.median(ts):9.3f} {min(ts):8.3f} {max(ts):8.3f}")
    print(f"recompute / kv cache = {recompute_s / cached_s:.2f}x")
    print(
        f"kv-cached step: {flops / 1e12:.2f} TFLOP in {cached_s:.3f} s = {flops / cached_s / 1e12:.1f} TFLOP/s; "
        f"{args.precision} matmul peak {peak / 1e12:.1f} TFLOP/s ({args.peak_size}^2); "
        f"MFU {100 * flops / cached_s / peak:.1f}%"
    )
    if device.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
