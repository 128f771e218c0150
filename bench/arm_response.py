"""How a checkpoint answers the toy arm's commands: opposite commands from the same true history.

For each validation episode, the arm is driven from frame CONTEXT on by +3 cm and by −3 cm a frame
along one axis (x, y, z in turn), and the gripper is held closed and held open. The world renders
both futures; the model rolls both out from the same true context. Printed per frame after the
context: the correlation between the model's difference of the two rollouts and the truth's (1: it
moves what the world moves, the way the world moves it; 0: its response is unrelated) and the ratio
of their energies (how much it moves). A diagnostic for docs/results.md, not a benchmark figure.

    python bench/arm_response.py --checkpoint astra_core/assets/toy_default.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from astra_core.plugins import get_registry
from astra_core.world import WorldModel

CONTEXT = 5  # true frames before the commands: the context frame and two chunks of history
FRAMES = 4  # frames scored after it
STEP = 0.03  # metres a frame, the world policy's largest delta


def _pair(wm, world, seeds, base, edit) -> tuple[torch.Tensor, torch.Tensor]:
    """(truth difference, model difference) [B, 3, FRAMES, H, W] between edit(+1) and edit(−1)."""
    out = []
    for sign in (1.0, -1.0):
        streams, truths = [], []
        for seed, episode in zip(seeds, base):
            actions = np.array(episode.actions["robot_ee"], dtype=np.float64)[: CONTEXT + FRAMES].copy()
            edit(actions, sign)
            streams.append({"robot_ee": actions})
            truths.append(world.episode(seed, CONTEXT + FRAMES, actions=actions).frames)
        truth = torch.stack(truths)
        torch.manual_seed(0)
        pred = wm.rollout(truth[:, :, :CONTEXT], streams, FRAMES).float()[:, :, -FRAMES:]
        out.append((truth[:, :, CONTEXT:], pred))
    return out[0][0] - out[1][0], out[0][1] - out[1][1]


def _scores(truth_diff: torch.Tensor, model_diff: torch.Tensor) -> tuple[list[float], list[float]]:
    corr, energy = [], []
    for k in range(truth_diff.shape[2]):
        t, m = truth_diff[:, :, k], model_diff[:, :, k]
        et, em = float((t * t).sum()), float((m * m).sum())
        corr.append(float((t * m).sum()) / max((et * em) ** 0.5, 1e-12))
        energy.append((em / max(et, 1e-12)) ** 0.5)
    return corr, energy


def arm_response(wm: WorldModel, seeds: list[int]) -> dict[str, tuple[list[float], list[float]]]:
    """{command: (correlation per frame, energy ratio per frame)} over the episodes of `seeds`."""
    world = get_registry().worlds["tabletop_arm"]
    base = [world.episode(s, CONTEXT + FRAMES) for s in seeds]

    def move(axis):
        def edit(actions, sign):
            actions[CONTEXT:, :3] = 0.0
            actions[CONTEXT:, axis] = sign * STEP

        return edit

    def grip(actions, sign):
        actions[:, 6] = 0.0
        actions[CONTEXT:, 6] = 1.0 if sign > 0 else 0.0

    moves = [_scores(*_pair(wm, world, seeds, base, move(axis))) for axis in range(3)]
    position = tuple(np.mean([m[i] for m in moves], axis=0).tolist() for i in range(2))
    return {
        "position (mean of x, y, z)": position,
        "gripper closed vs open": _scores(*_pair(wm, world, seeds, base, grip)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=3_000_000, help="validation seeds by default")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wm = WorldModel.from_checkpoint(args.checkpoint)
    rows = arm_response(wm, [args.first_seed + i for i in range(args.episodes)])
    header = " ".join(f"+{k + 1:<5d}" for k in range(FRAMES))
    print(f"{'command':28s} correlation {header} | energy ratio {header}")
    for name, (corr, energy) in rows.items():
        cells = " ".join(f"{c:+.2f} " for c in corr)
        ratios = " ".join(f"{e:.2f}  " for e in energy)
        print(f"{name:28s}             {cells} |              {ratios}")


if __name__ == "__main__":
    main()
