"""Interactive speed of a world model (default: the shipped one) and the peak memory of `astra demo`.

One key-driven session (batch 1, 64x64 toy world) per setting, run side by side in this process:
with and without action-free guidance, with and without the KV cache, and the DiT in fp32 against
bf16 (`--precision`), and with `--compile` each under torch.compile too, timed in turn. For each:
frames/s over a stream of steps, and the latency from an action to the first frame that shows it (a step generates
its whole chunk at once, so that is the step's wall time). The sampling settings are those of the
quality table in docs/results.md unless given. Then `astra demo` runs in a child process, and its
wall time and peak resident memory are reported.

Run: python bench/bench_play.py [--checkpoint PATH] [--steps 24] [--guidance 1.0] [--sampling-steps 8] [--compile]
     [--baseline OTHER.safetensors]   (both at their own defaults, in turn, with the frames/s ratio)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from astra_core.apps.play import PlaySession
from astra_core.plugins import get_registry
from astra_core.world import WorldModel

KEYS = (["W"], ["W", "LEFT"], ["A"], ["W", "RIGHT"], ["S"], [])


def session_speed(model: WorldModel, world, steps: int) -> dict[str, float]:
    session = PlaySession(model, world, seed=1)
    session.warm_up()  # every history length once (a compiled model compiles here)
    latencies = []
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        session.step(KEYS[i % len(KEYS)])
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    frames = steps * model.frames_per_step
    return {
        "fps": frames / total,
        "latency_ms": 1e3 * statistics.median(latencies),
        "latency_p90_ms": 1e3 * sorted(latencies)[int(0.9 * (len(latencies) - 1))],
    }


def demo_memory(checkpoint: str | None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `astra demo` in a child process."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "astra_core.apps.cli", "demo", "--out", out, "--quiet"]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kb / 1024


def speeds_in_turn(models: dict[str, WorldModel], world, steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """One session per model, the models timed in turn `rounds` times: the median frames/s, key-to-frame
    latency and p90 latency of each."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            runs[name].append(session_speed(model, world, steps))
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}


def compare(checkpoint: str | None, baseline: str, world, steps: int, rounds: int = 3) -> None:
    """Both models at their own defaults (KV cache), timed in turn `rounds` times; medians and the ratio."""
    models = {"model": WorldModel.from_checkpoint(checkpoint), "baseline": WorldModel.from_checkpoint(baseline)}
    speed = speeds_in_turn(models, world, steps, rounds)
    print(f"side by side, each at its own defaults, {rounds} rounds in turn:")
    for name, model in models.items():
        r = speed[name]
        print(
            f"  {name:8s} ({model.latent.num_steps} steps, guidance {model.latent.guidance_scale:g}): "
            f"{r['fps']:.1f} frames/s, latency {r['latency_ms']:.0f} ms median, {r['latency_p90_ms']:.0f} ms p90"
        )
    print(f"  model / baseline frames/s: {speed['model']['fps'] / speed['baseline']['fps']:.2f}x")


def compare_precisions(
    checkpoint: str | None, world, steps: int, options: dict, rounds: int = 3, compiled: bool = False
) -> None:
    """fp32 (the reference) and bf16 for the DiT (and each under torch.compile with `compiled`), at the
    table settings with the KV cache, timed in turn `rounds` times; medians, p90 latency and the ratios
    to fp32. A compiled model's compile time (its warm-up over a full window) is reported beside it."""
    variants = [("fp32", False), ("bf16", False)] + ([("fp32", True), ("bf16", True)] if compiled else [])
    models, compile_s = {}, {}
    for precision, on in variants:
        name = precision + ("+compile" if on else "")
        start = time.perf_counter()
        models[name] = WorldModel.from_checkpoint(checkpoint, precision=precision, compile=on, **options)
        if on:
            PlaySession(models[name], world, seed=1).warm_up()
            compile_s[name] = time.perf_counter() - start
    speed = speeds_in_turn(models, world, steps, rounds)
    print(f"precision, side by side ({rounds} rounds in turn, table settings, KV cache):")
    for name, r in speed.items():
        extra = f" (compiled in {compile_s[name]:.0f} s)" if name in compile_s else ""
        print(
            f"  {name}: {r['fps']:.1f} frames/s, key-to-frame latency {r['latency_ms']:.0f} ms median, "
            f"{r['latency_p90_ms']:.0f} ms p90, {r['fps'] / speed['fp32']['fps']:.2f}x fp32{extra}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: the shipped toy model")
    parser.add_argument("--world", default="keyboard_game")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="the DiT's precision in the settings table"
    )
    parser.add_argument("--steps", type=int, default=24, help="steps per setting (each makes one chunk)")
    parser.add_argument("--guidance", type=float, help="default: the checkpoint's (1: no AFG)")
    parser.add_argument("--afg-scale", type=float, default=1.5, help="scale for the 'with AFG' rows")
    parser.add_argument("--sampling-steps", type=int, help="default: the checkpoint's")
    parser.add_argument("--no-demo", action="store_true", help="skip the astra demo measurement")
    parser.add_argument("--compile", action="store_true", help="also time fp32 and bf16 under torch.compile")
    parser.add_argument(
        "--baseline", help="another checkpoint: both at their own defaults, timed in turn, and the ratio printed"
    )
    args = parser.parse_args()
    world = get_registry().get("worlds", args.world)
    print(f"{args.world}, 64x64, batch 1, torch threads {torch.get_num_threads()}, settings table in {args.precision}")
    settings = {
        "table settings, KV cache": {"guidance_scale": args.guidance, "use_kv_cache": True},
        "table settings, no cache": {"guidance_scale": args.guidance, "use_kv_cache": False},
        f"AFG {args.afg_scale}, KV cache": {"guidance_scale": args.afg_scale, "use_kv_cache": True},
        f"AFG {args.afg_scale}, no cache": {"guidance_scale": args.afg_scale, "use_kv_cache": False},
    }
    rows = {}
    for name, options in settings.items():
        if args.sampling_steps:
            options["num_steps"] = args.sampling_steps
        options["precision"] = args.precision
        model = WorldModel.from_checkpoint(args.checkpoint, **options)
        rows[name] = session_speed(model, world, args.steps)
    steps = model.latent.num_steps
    print(f"{steps} sampling steps per chunk, {model.frames_per_step} frames per chunk, {args.steps} chunks each")
    print(f"{'setting':28s} {'frames/s':>9s} {'latency ms':>11s} {'p90 ms':>8s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['fps']:9.1f} {r['latency_ms']:11.0f} {r['latency_p90_ms']:8.0f}")
    base = rows["table settings, KV cache"]["fps"]
    for name, r in rows.items():
        print(f"  {name}: {r['fps'] / base:.2f}x the frames/s of the table settings with the cache")
    table = {k: v for k, v in settings["table settings, KV cache"].items() if v is not None and k != "precision"}
    compare_precisions(args.checkpoint, world, args.steps, table, compiled=args.compile)
    if args.baseline:
        compare(args.checkpoint, args.baseline, world, args.steps)
    if not args.no_demo:
        seconds, peak = demo_memory(args.checkpoint)
        print(f"astra demo: {seconds:.1f} s wall, peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
