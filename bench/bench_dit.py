"""AstraDiT vs diffusers' WanTransformer3DModel: one forward at a shared small config, fp32 and bf16.

FLOPs are counted as 2·(matmul parameters acting on video tokens)·tokens + 4·tokens²·dim·layers;
the peak is the median of 2048x2048 matmuls in the same process and dtype; each variant's time is the
median of alternating runs after warm-up. Then the toy model's own case, which the comparison config
does not exercise: the shipped model's DiT (tiny, no text) over a training clip with the block-causal
chunk mask (1 context frame and 4 chunks of 2 frames, 576 tokens), fp32 against bf16, with the same
FLOP formula (it counts full attention, so the block-causal shares are upper bounds).
Run: python bench/bench_dit.py [--repeats 10] [--toy-only]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _timing import alternating_medians, matmul_peak
from diffusers import WanTransformer3DModel
from torch import nn

from astra_core import AstraDiT, dit_preset
from astra_core.model.wan_io import diffusers_config, load_wan_state_dict


def video_matmul_params(model: AstraDiT) -> int:
    """Weights of the Linear/Conv layers applied to every video token (not to text or timesteps)."""
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv3d)):
            continue
        if name.startswith(("time_", "text_")) or name.endswith(("cross_attn.k", "cross_attn.v")):
            continue
        total += module.weight.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--toy-only", action="store_true", help="only the shipped toy model's block-causal case")
    parser.add_argument("--compile", action="store_true", help="also time the toy forward under torch.compile")
    parser.add_argument("--profile", action="store_true", help="also print the toy forward's top operators")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.toy_only:
        compare_with_diffusers(args.repeats)
    toy_model(args.repeats, args.compile, args.profile)


def toy_model(repeats: int, compiled: bool = False, profile: bool = False) -> None:
    """The shipped model's DiT, block-causal over a training clip, fp32 vs bf16, timed in turn."""
    from astra_core import WorldModel
    from astra_core.model.memory import sequence_chunk_ids

    net = WorldModel.from_checkpoint().net
    cfg, history = net.dit.config, net.config.history
    frames = history.context_frames + 4 * history.chunk_size
    x = torch.randn(1, cfg.in_dim, frames, 16, 16)
    t = torch.rand(1, frames) * 1000
    features = torch.randn(1, frames, cfg.dim) * 0.1
    chunk_ids = sequence_chunk_ids(frames, history.context_frames, history.chunk_size)
    tokens = frames * 16 * 16 // (cfg.patch_size[1] * cfg.patch_size[2])
    flops = 2 * video_matmul_params(net.dit) * tokens + 4 * tokens**2 * cfg.dim * cfg.num_layers
    print(
        f"toy model: dim {cfg.dim}, ffn {cfg.ffn_dim}, heads {cfg.num_heads}, layers {cfg.num_layers}, "
        f"{frames} latent frames, {tokens} tokens, block-causal chunks of {history.chunk_size}; "
        f"{flops / 1e9:.2f} GFLOP per forward (full-attention count)"
    )
    times, peaks = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        dit = net.dit.to(dtype)
        xd, fd = x.to(dtype), features.to(dtype)
        with torch.no_grad():
            times[dtype] = alternating_medians(
                {"toy": lambda: dit(xd, t, fd, chunk_ids=chunk_ids)},
                repeats=repeats,  # noqa: B023
            )["toy"]
        peaks[dtype] = matmul_peak(dtype)
        name = str(dtype).removeprefix("torch.")
        achieved = flops / times[dtype]
        print(
            f"{name:9s} toy        {times[dtype] * 1e3:8.2f} ms  {achieved / 1e9:7.1f} GFLOP/s  "
            f"{100 * achieved / peaks[dtype]:5.1f}% of peak ({peaks[dtype] / 1e9:.1f} GFLOP/s)"
        )
    print(f"toy model time ratio bf16/fp32 = {times[torch.bfloat16] / times[torch.float32]:.3f}")
    net.dit.to(torch.float32)
    if profile:
        top_operators(net, x, t, features, chunk_ids)
    if compiled:
        compiled_forward(net, x, t, features, chunk_ids, repeats)
    cached_step(net, repeats)


def top_operators(net, x, t, features, chunk_ids, rows: int = 12) -> None:
    """torch.profiler over 5 forwards in each precision: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    for dtype in (torch.float32, torch.bfloat16):
        dit = net.dit.to(dtype)
        xd, fd = x.to(dtype), features.to(dtype)
        with torch.no_grad():
            dit(xd, t, fd, chunk_ids=chunk_ids)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    dit(xd, t, fd, chunk_ids=chunk_ids)
        print(f"top operators, {str(dtype).removeprefix('torch.')} (self CPU time over 5 forwards):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    net.dit.to(torch.float32)


def compiled_forward(net, x, t, features, chunk_ids, repeats: int) -> None:
    """The same block-causal forward, eager against torch.compile (inductor), in fp32 and bf16."""
    for dtype in (torch.float32, torch.bfloat16):
        eager = copy.deepcopy(net.dit).to(dtype)
        compiled = copy.deepcopy(net.dit).to(dtype)
        compiled.compile()
        xd, fd = x.to(dtype), features.to(dtype)
        with torch.no_grad():
            start = time.perf_counter()
            compiled(xd, t, fd, chunk_ids=chunk_ids)
            compile_s = time.perf_counter() - start
            times = alternating_medians(
                {
                    "eager": lambda: eager(xd, t, fd, chunk_ids=chunk_ids),  # noqa: B023
                    "compiled": lambda: compiled(xd, t, fd, chunk_ids=chunk_ids),  # noqa: B023
                },
                repeats=repeats,
            )
        name = str(dtype).removeprefix("torch.")
        print(
            f"{name:9s} toy eager {times['eager'] * 1e3:.2f} ms, compiled {times['compiled'] * 1e3:.2f} ms: "
            f"eager/compiled = {times['eager'] / times['compiled']:.2f}x (compile {compile_s:.1f} s)"
        )


def cached_step(net, repeats: int) -> None:
    """One KV-cached rollout step at batch 1 (the play path: the chunk's tokens over a full window of
    cached history, every Euler step plus the commit pass), fp32 against bf16."""
    from astra_core.model.rollout import LatentWorldModel

    history = net.config.history
    channels = net.config.latent_channels
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        copy_net = copy.deepcopy(net)
        copy_net.dit.to(dtype)
        wm = LatentWorldModel(copy_net, seed=0)
        modalities = copy_net.config.action.modalities
        wm.reset(torch.randn(1, channels, history.context_frames, 16, 16))

        def actions():
            if not modalities:
                return torch.zeros(1, history.chunk_size, copy_net.config.action.action_dim)
            from astra_core.plugins import get_registry

            name = modalities[0]
            return {name: torch.zeros(1, history.chunk_size, get_registry().get("modalities", name).action_dim)}

        step_actions = actions()
        for _ in range(history.window // history.chunk_size + 1):  # fill the window
            wm.step(step_actions)
        times[dtype] = alternating_medians({"step": lambda: wm.fork().step(step_actions)}, repeats=repeats)["step"]  # noqa: B023
    print(
        f"toy model KV-cached step (batch 1, {net.config.sampler.num_steps} Euler steps + commit, "
        f"{history.window} cached frames): fp32 {times[torch.float32] * 1e3:.2f} ms, bf16 "
        f"{times[torch.bfloat16] * 1e3:.2f} ms, bf16/fp32 = {times[torch.bfloat16] / times[torch.float32]:.3f}"
    )


def compare_with_diffusers(repeats: int) -> None:
    """The comparison config: AstraDiT against diffusers' Wan transformer, fp32 and bf16."""

    # dim 384, ffn 1536, 6 heads, 8 layers; 8 latent frames of 16x16 -> 8·8·8 = 512 tokens
    cfg = dit_preset("small", text_dim=384, attention="full", use_projector=False)
    ours = AstraDiT(cfg).eval()
    ref = WanTransformer3DModel(**diffusers_config(ours)).eval()
    load_wan_state_dict(ours, ref.state_dict())
    x = torch.randn(1, 16, 8, 16, 16)
    t = torch.tensor([500.0])
    ctx = torch.randn(1, 16, 384)
    tokens, text_tokens = 512, ctx.shape[1]
    flops = 2 * video_matmul_params(ours) * tokens + 4 * tokens**2 * cfg.dim * cfg.num_layers
    flops += 2 * 2 * cfg.dim * cfg.dim * text_tokens * cfg.num_layers  # cross-attention k, v on text
    print(
        f"config: dim {cfg.dim}, ffn {cfg.ffn_dim}, heads {cfg.num_heads}, layers {cfg.num_layers}, "
        f"{tokens} tokens; {flops / 1e9:.2f} GFLOP per forward; threads {torch.get_num_threads()}"
    )

    for dtype in (torch.float32, torch.bfloat16):
        ours_d, ref_d = ours.to(dtype), ref.to(dtype)
        xd, ctxd = x.to(dtype), ctx.to(dtype)
        with torch.no_grad():
            diff = ours_d(xd, t, context=ctxd).float() - ref_d(xd, t, ctxd, return_dict=False)[0].float()
            rel = float(diff.norm() / ref_d(xd, t, ctxd, return_dict=False)[0].float().norm())
            times = alternating_medians(
                {
                    "astra": lambda: ours_d(xd, t, context=ctxd),
                    "diffusers": lambda: ref_d(xd, t, ctxd, return_dict=False),
                },
                repeats=repeats,
            )
        peak = matmul_peak(dtype)
        name = str(dtype).removeprefix("torch.")
        for variant, seconds in times.items():
            achieved = flops / seconds
            print(
                f"{name:9s} {variant:10s} {seconds * 1e3:8.2f} ms  {achieved / 1e9:7.1f} GFLOP/s  "
                f"{100 * achieved / peak:5.1f}% of peak ({peak / 1e9:.1f} GFLOP/s)"
            )
        print(
            f"{name:9s} time ratio astra/diffusers = {times['astra'] / times['diffusers']:.3f}  "
            f"(output rel. diff {rel:.1e})"
        )


if __name__ == "__main__":
    main()
