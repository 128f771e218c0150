"""Rendering speed of the toy worlds at 64x64 on this machine: frames/s for rendering a 64-frame
episode's states (the ground-truth path) and for a whole episode (policy + physics + rendering).

Run: python bench/bench_worlds.py [--frames 64] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from _timing import alternating_medians

from astra_core.modality import raw_rows
from astra_core.plugins import get_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"64x64, {args.frames} frames per episode, threads {torch.get_num_threads()}")
    for name, world in get_registry().worlds.items():
        episode = world.episode(0, args.frames)
        state = world.state_at(episode, 0)
        states, _ = world.advance(state, raw_rows(episode.actions[world.modality], 1, None))
        states = [state] + states
        times = alternating_medians(
            {
                "render": lambda: world.render_states(0, states),
                "episode": lambda: world.episode(1, args.frames),
            },
            repeats=args.repeats,
            warmup=1,
        )
        print(
            f"{name:14s} render {args.frames / times['render']:7.0f} frames/s   "
            f"episode {args.frames / times['episode']:7.0f} frames/s"
        )


if __name__ == "__main__":
    main()
