"""robot_ee: end-effector deltas and gripper per frame (RT-1 style) -> per latent frame."""

from __future__ import annotations

import numpy as np

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, latent_frame_indices

from .geometry import rotmat_to_rotvec, rotvec_to_rotmat


class RobotEE(Modality):
    """Raw: [T, 7] per frame: position delta (3), rotation delta as axis-angle (3), gripper state
    (1, 0 = open, 1 = closed); row t is the motion that leads from frame t−1 into frame t (row 0 is
    ignored). Vector (7): the deltas of the raw frames inside the latent frame, summed (positions)
    and composed (rotations), and the gripper state at the latent frame."""

    name = "robot_ee"
    action_dim = 7
    raw_format = "per-frame [T, 7]: position delta (3), rotation delta axis-angle (3), gripper state (1)"
    vector_format = "summed position delta (3), composed rotation delta (3), gripper state (1)"
    # a per-frame delta: positions within ±10 (metres, or a dataset's own normalised units), axis-angle
    # within ±2π, and the gripper's state as datasets store it (0 – 1, −1 – 1 or 0 – 255)
    bounds = {"raw": (-255.0, 255.0), "position": (-10.0, 10.0), "rotation": (-2 * np.pi, 2 * np.pi)}

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        a = np.asarray(raw, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 7:
            raise ShapeError(f"{self.name}: expected raw actions [T, 7], got {a.shape}")
        self.check_values(a)
        self.check_values(a[:, :3], "position")
        self.check_values(a[:, 3:6], "rotation")
        idx = latent_frame_indices(len(a), temporal_factor)
        vectors = []
        for start, end in zip(idx[:-1], idx[1:]):
            rows = a[start + 1 : end + 1]  # the frames after the previous latent frame, up to this one
            rotation = np.eye(3)
            for rv in rows[:, 3:6]:
                rotation = rotvec_to_rotmat(rv) @ rotation
            vectors.append(np.concatenate([rows[:, :3].sum(0), rotmat_to_rotvec(rotation), rows[-1, 6:7]]))
        return self._aligned(np.array(vectors).reshape(-1, 7))
