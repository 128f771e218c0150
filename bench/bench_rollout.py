"""Streaming rollout: per-chunk latency with the KV cache (commit pass included) vs recomputing the
history at every denoising step, at 1, 2, 4, 8 and 16 chunks of history, with and without action-free
guidance; and the cache's memory as the rollout runs past its window.

Each latency is the median of alternating runs of `step()` on forks of the same session after warm-up.
Run: python bench/bench_rollout.py [--preset tiny] [--steps 10] [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch
from _timing import alternating_medians

from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, SamplerConfig, dit_preset
from astra_core.model.actions import AstraNet
from astra_core.model.rollout import LatentWorldModel


def session(net: AstraNet, history_chunks: int, guidance: float, cached: bool, latent_hw: int) -> LatentWorldModel:
    """A session whose history holds `history_chunks` chunks after the context frame."""
    chunk = net.config.history.chunk_size
    wm = LatentWorldModel(net, guidance_scale=guidance, use_kv_cache=cached, num_steps=1, seed=0)
    wm.reset(torch.randn(1, net.config.dit.in_dim, 1, latent_hw, latent_hw))
    for _ in range(history_chunks):
        wm.step(torch.randn(1, chunk, net.config.action.action_dim))
    wm.num_steps = net.config.sampler.num_steps
    return wm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per chunk")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--latent", type=int, default=16, help="latent height = width")
    parser.add_argument("--chunk", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    lengths = [1, 2, 4, 8, 16]
    config = AstraConfig(
        dit=dit_preset(args.preset, in_dim=16, out_dim=16),
        action=ActionConfig(action_dim=7),
        history=HistoryConfig(chunk_size=args.chunk, window=args.chunk * max(lengths)),
        sampler=SamplerConfig(num_steps=args.steps),
    )
    net = AstraNet(config).eval()
    tokens_per_frame = (args.latent // 2) ** 2
    print(
        f"preset {args.preset}, chunk {args.chunk} latent frames x {tokens_per_frame} tokens, "
        f"{args.steps} Euler steps, threads {torch.get_num_threads()}"
    )
    print(f"{'history':>8s} {'AFG':>4s} {'cached ms':>10s} {'recompute ms':>13s} {'speed-up':>9s} {'cache MB':>9s}")
    actions = torch.randn(1, args.chunk, 7)
    for guidance in (1.0, 2.0):
        for n in lengths:
            base = {c: session(net, n, guidance, c, args.latent) for c in (True, False)}
            times = alternating_medians(
                {c: (lambda c=c: base[c].fork().step(actions)) for c in (True, False)},
                repeats=args.repeats,
                warmup=1,
            )
            mb = base[True].cache.nbytes() / 2**20
            print(
                f"{n:8d} {'on' if guidance != 1 else 'off':>4s} {times[True] * 1e3:10.1f} "
                f"{times[False] * 1e3:13.1f} {times[False] / times[True]:8.2f}x {mb:9.2f}"
            )

    window = 2 * args.chunk
    small = AstraNet(config.model_copy(update={"history": HistoryConfig(chunk_size=args.chunk, window=window)}))
    wm = LatentWorldModel(small, guidance_scale=2.0, num_steps=1)
    wm.reset(torch.randn(1, 16, 1, args.latent, args.latent))
    sizes = []
    for _ in range(8):
        wm.step(actions)
        sizes.append(wm.cache.nbytes() / 2**20)
    print(f"cache MB over 8 chunks with a {window}-frame window (AFG on): " + " ".join(f"{s:.2f}" for s in sizes))


if __name__ == "__main__":
    main()
