"""How much detail repeated warping alone costs: no network, only the warp a warp-predicting model applies.

A rollout of a `flow.prediction: warp` model samples each chunk from the chunk before it, so a frame 16
frames in has been resampled 8 times (2 frames per chunk). This takes true frames of the four toy
worlds (the first frame of validation episodes), warps them `--warps` times by a uniform sub-pixel
shift that alternates in sign (so the picture ends where it started and no border enters), with the
same `warp` function and pixel-tokenizer layout as the model, and prints the detail left (sharpness:
gradient energy over the original's, as `astra eval` computes it) and the PSNR against the original.
A diagnostic for docs/results.md: the ceiling resampling puts on a rollout's sharpness and PSNR.

    python bench/resampling_detail.py
"""

from __future__ import annotations

import argparse

import torch

from astra_core.apps.evaluate import psnr, sharpness
from astra_core.data.tokenizer import PixelTokenizer
from astra_core.model.flow import warp
from astra_core.plugins import get_registry

FIRST_SEED = 3_000_000  # validation seeds, as in the lever tables


def resampled(frames: torch.Tensor, warps: int, shift: float, mode: str, patch: int = 4) -> torch.Tensor:
    """frames [B, 3, H, W] in [-1, 1] after `warps` warps by ±`shift` pixels (x and y), alternating."""
    tok = PixelTokenizer(patch)
    latents = tok.encode(frames[:, :, None])  # [B, C, 1, h, w]
    b, _, f, h, w = latents.shape
    for k in range(warps):
        flow = torch.full((b, 2, f, h, w), (shift if k % 2 == 0 else -shift) / patch)  # in latent cells
        latents = warp(latents, flow, unshuffle=patch, mode=mode)
    return tok.decode(latents)[:, :, 0].clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="validation episodes per world")
    parser.add_argument("--warps", type=int, nargs="+", default=[8, 24, 48], help="numbers of warps")
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.25, 0.5], help="shifts in pixels")
    args = parser.parse_args()
    worlds = get_registry().worlds
    print("| world | mode | shift px | " + " | ".join(f"detail / PSNR after {n}" for n in args.warps) + " |")
    print("|---|---|---|" + "---|" * len(args.warps))
    for name, world in worlds.items():
        frames = torch.stack([world.episode(FIRST_SEED + i, 1).frames[:, 0] for i in range(args.episodes)]).float()
        inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # away from the border
        for mode in ("bilinear", "bicubic", "catmull_rom"):
            for shift in args.shifts:
                cells = []
                for n in args.warps:
                    out = resampled(frames, n, shift, mode)
                    cells.append(f"{sharpness(out[inner], frames[inner]):.2f} / {psnr(out[inner], frames[inner]):.1f}")
                print(f"| {name} | {mode} | {shift} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
