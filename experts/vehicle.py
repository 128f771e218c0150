"""vehicle_pose: ego poses (translation + quaternion w, x, y, z) -> ego motion per latent frame."""

from __future__ import annotations

import numpy as np
import quaternion  # numpy-quaternion

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, latent_frame_indices

from .geometry import make_pose, quat_wxyz_to_rotmat, relative_pose, rotmat_to_rotvec, rotvec_to_rotmat


class VehiclePose(Modality):
    """Raw: {"translation": [T, 3] metres, "rotation": [T, 4] quaternions (w, x, y, z)}, the ego
    pose in a global frame per frame (nuScenes' ego_pose). Vector (6): translation in the previous
    latent frame's ego frame (3) and the relative rotation as an axis-angle vector (3)."""

    name = "vehicle_pose"
    action_dim = 6
    raw_format = "ego pose per frame: translation [T, 3] + quaternion (w, x, y, z) [T, 4]"
    vector_format = "relative translation (3) + relative rotation axis-angle (3), in the previous ego frame"
    # metres within 1,000 km of the map origin (a UTM northing stays below that); quaternion entries
    bounds = {"translation": (-1e6, 1e6), "rotation": (-1e3, 1e3)}

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        poses = self.poses(raw)
        idx = latent_frame_indices(len(poses), temporal_factor)
        rel = relative_pose(poses[idx[:-1]], poses[idx[1:]])
        return self._aligned(np.concatenate([rel[:, :3, 3], rotmat_to_rotvec(rel[:, :3, :3])], axis=-1))

    def poses(self, raw) -> np.ndarray:
        if not isinstance(raw, dict) or not {"translation", "rotation"} <= set(raw):
            raise ShapeError(f"{self.name}: expected a dict with 'translation' [T, 3] and 'rotation' [T, 4]")
        t = np.asarray(raw["translation"], dtype=np.float64)
        q = np.asarray(raw["rotation"], dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 3 or q.shape != (len(t), 4):
            raise ShapeError(f"{self.name}: translation {t.shape} and rotation {q.shape} must be [T, 3] and [T, 4]")
        self.check_values(t, "translation")
        self.check_values(q, "rotation")
        norms = np.linalg.norm(q, axis=-1)
        if np.any(norms < 1e-6):
            raise ShapeError(f"{self.name}: rotation has a zero quaternion at frame {int(np.argmin(norms))}")
        return make_pose(quat_wxyz_to_rotmat(q), t)

    def splice(self, stream, other, at: int) -> dict:
        """`other`'s ego motion from frame `at` on, re-anchored to `stream`'s pose at `at − 1`."""
        mine, theirs = self.poses(stream), self.poses(other)
        anchor = mine[at - 1] @ np.linalg.inv(theirs[at - 1])
        poses = np.concatenate([mine[:at], anchor[None] @ theirs[at:]])
        rotation = quaternion.as_float_array(quaternion.from_rotation_matrix(poses[:, :3, :3]))
        return {"translation": poses[:, :3, 3], "rotation": rotation}

    @staticmethod
    def integrate(vectors: np.ndarray, start: np.ndarray) -> np.ndarray:
        poses = [np.asarray(start, dtype=np.float64)]
        for v in vectors[1:]:
            poses.append(poses[-1] @ make_pose(rotvec_to_rotmat(v[3:6]), v[:3]))
        return np.stack(poses)
