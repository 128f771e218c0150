"""Where a checkpoint's action following is lost: chunk by chunk, in a rollout and from true history.

For each validation episode of one toy world, two figures per chunk of the model's step:
- rollout: the model rolls out from the one context frame, driven once by the episode's own actions and
  once by another episode's (spliced on from the first frame, as `astra eval` does); the chunk's
  following is the other rollout's squared error over the true rollout's, against the truth;
- teacher-forced: the model is given the true frames up to the chunk and predicts only that chunk,
  with the true actions and with another episode's for that chunk alone.
Both are the mean over episodes of the per-episode ratio (1: the actions make no difference). A
teacher-forced figure that stays high where the rollout's falls says the model reads its actions but
loses them to its own history (what it generated blurs or drifts); a low teacher-forced figure says
it does not read them. A diagnostic for docs/results.md, not a benchmark figure.

    python bench/following_by_chunk.py --checkpoint astra_core/assets/toy_default.safetensors
"""

from __future__ import annotations

import argparse

import torch

from astra_core.apps.evaluate import _splice
from astra_core.plugins import get_registry
from astra_core.world import WorldModel

OTHER_SEEDS = 10_000  # the other episode of validation seed s is s + OTHER_SEEDS


def _ratio(wrong: torch.Tensor, true: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over the batch of |wrong − truth|² / |true − truth|²."""
    err_true = (true - truth).pow(2).mean(dim=(1, 2, 3, 4))
    err_wrong = (wrong - truth).pow(2).mean(dim=(1, 2, 3, 4))
    return float((err_wrong / err_true.clamp(min=1e-12)).mean())


def following_by_chunk(wm: WorldModel, world_name: str, seeds: list[int], chunks: int) -> dict[str, list[float]]:
    """{"rollout": following per chunk, "teacher-forced": following per chunk} over `seeds`."""
    world = get_registry().worlds[world_name]
    n = wm.frames_per_step
    frames_needed = 1 + chunks * n
    own = [world.episode(s, frames_needed) for s in seeds]
    other = [world.episode(s + OTHER_SEEDS, frames_needed) for s in seeds]
    frames = torch.stack([e.frames for e in own])
    streams = [e.actions for e in own]

    def spliced(at: int) -> list[dict]:  # by each modality's own rule, as `astra eval` splices
        return [_splice(wm, s, o.actions, at) for s, o in zip(streams, other)]

    def rollout(context_frames: int, actions: list[dict], num: int) -> torch.Tensor:
        torch.manual_seed(0)
        return wm.rollout(frames[:, :, :context_frames], actions, num).float()

    truth = frames[:, :, 1:frames_needed]
    true = rollout(1, streams, chunks * n)
    wrong = rollout(1, spliced(1), chunks * n)
    free = [
        _ratio(wrong[:, :, k * n : (k + 1) * n], true[:, :, k * n : (k + 1) * n], truth[:, :, k * n : (k + 1) * n])
        for k in range(chunks)
    ]
    forced = []
    for k in range(chunks):
        at = 1 + k * n
        target = frames[:, :, at : at + n]
        forced.append(_ratio(rollout(at, spliced(at), n), rollout(at, streams, n), target))
    return {"rollout": free, "teacher-forced": forced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--world", default="tabletop_arm", help="a toy world (astra worlds lists them)")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=8, help="chunks scored (8 chunks of 2 frames: 16 frames)")
    parser.add_argument("--first-seed", type=int, default=3_000_000, help="validation seeds by default")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.episodes < 1 or args.chunks < 1:
        parser.error("--episodes and --chunks must be at least 1")
    worlds = get_registry().worlds
    if args.world not in worlds:
        parser.error(f"--world {args.world!r}: not a toy world; choose one of {sorted(worlds)}")
    wm = WorldModel.from_checkpoint(args.checkpoint)
    rows = following_by_chunk(wm, args.world, [args.first_seed + i for i in range(args.episodes)], args.chunks)
    print(f"{'following per chunk':20s} " + " ".join(f"{k + 1:>5d}" for k in range(args.chunks)))
    for name, values in rows.items():
        print(f"{name:20s} " + " ".join(f"{v:5.2f}" for v in values))


if __name__ == "__main__":
    main()
