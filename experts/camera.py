"""camera_se3: a camera's pose per frame -> relative SE(3) motion per latent frame."""

from __future__ import annotations

import numpy as np

from astra_core.errors import ShapeError
from astra_core.modality import AlignedActions, Modality, latent_frame_indices

from .geometry import invert_pose, is_rotation, make_pose, relative_pose, rotmat_to_6d, sixd_to_rotmat


class CameraSE3(Modality):
    """Raw: camera-to-world poses [T, 4, 4] (OpenCV axes: x right, y down, z forward).
    Vector (9): translation of the camera in the previous latent frame's camera frame (3), then the
    relative rotation in the 6-D representation (first two columns of R, 6)."""

    name = "camera_se3"
    action_dim = 9
    raw_format = "camera-to-world 4x4 poses per frame [T, 4, 4]"
    vector_format = "relative translation (3) + relative rotation 6-D (6), in the previous camera's frame"
    bounds = {"raw": (-1e5, 1e5)}  # pose entries: positions within 100 km of the origin

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        poses = self.check_raw(raw)
        idx = latent_frame_indices(len(poses), temporal_factor)
        rel = relative_pose(poses[idx[:-1]], poses[idx[1:]])  # motion leading into latent i from i−1
        vectors = np.concatenate([rel[:, :3, 3], rotmat_to_6d(rel[:, :3, :3])], axis=-1)
        return self._aligned(vectors)

    def check_raw(self, raw) -> np.ndarray:
        poses = np.asarray(raw, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ShapeError(f"{self.name}: expected poses [T, 4, 4], got {poses.shape}")
        self.check_values(poses)
        if not is_rotation(poses[:, :3, :3]):
            raise ShapeError(f"{self.name}: the 3x3 blocks of the poses are not rotations")
        return poses

    def splice(self, stream, other, at: int) -> np.ndarray:
        """`other`'s camera motion from frame `at` on, re-anchored to `stream`'s pose at `at − 1`."""
        stream, other = np.asarray(stream, dtype=np.float64), np.asarray(other, dtype=np.float64)
        anchor = stream[at - 1] @ np.linalg.inv(other[at - 1])
        return np.concatenate([stream[:at], anchor[None] @ other[at:]])

    @staticmethod
    def integrate(vectors: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Inverse of `align` at factor 1: chain the relative motions of latent frames 1… onto `start`."""
        poses = [np.asarray(start, dtype=np.float64)]
        for v in vectors[1:]:
            poses.append(poses[-1] @ make_pose(sixd_to_rotmat(v[3:9]), v[:3]))
        return np.stack(poses)

    @staticmethod
    def from_world_to_camera(w2c: np.ndarray) -> np.ndarray:
        """World-to-camera poses (RealEstate10K's convention) -> camera-to-world."""
        return invert_pose(np.asarray(w2c, dtype=np.float64))
