"""Rotation and rigid-motion helpers (numpy-quaternion on arrays, roma in torch).

Quaternion order: numpy-quaternion and nuScenes use (w, x, y, z); roma and SpatialVID use (x, y, z, w).
Poses are 4x4 homogeneous matrices; `relative_pose(a, b) = a⁻¹ · b` is pose b seen from frame a.
"""

from __future__ import annotations

import numpy as np
import quaternion  # numpy-quaternion
import roma
import torch


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def quat_wxyz_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) [..., 4] -> rotation matrices [..., 3, 3] (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return quaternion.as_rotation_matrix(quaternion.from_float_array(q))


def rotmat_to_rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> axis-angle vectors [..., 3]; stable near angle π (roma)."""
    return roma.rotmat_to_rotvec(torch.as_tensor(r, dtype=torch.float64)).numpy()


def rotvec_to_rotmat(v: np.ndarray) -> np.ndarray:
    return roma.rotvec_to_rotmat(torch.as_tensor(v, dtype=torch.float64)).numpy()


def rotmat_to_6d(r: np.ndarray) -> np.ndarray:
    """The first two columns of R, flattened (Zhou et al. 2019): [..., 3, 3] -> [..., 6]."""
    return np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


def sixd_to_rotmat(v: np.ndarray) -> np.ndarray:
    """Inverse of `rotmat_to_6d` by Gram-Schmidt (roma), also for vectors that drifted off SO(3)."""
    cols = torch.as_tensor(v, dtype=torch.float64).reshape(*v.shape[:-1], 2, 3).transpose(-1, -2)
    return roma.special_gramschmidt(cols).numpy()


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    pose = np.zeros((*rotation.shape[:-2], 4, 4))
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Rigid inverse of [..., 4, 4] poses (world-to-camera <-> camera-to-world)."""
    r = pose[..., :3, :3]
    t = pose[..., :3, 3]
    rt = np.swapaxes(r, -1, -2)
    return make_pose(rt, -(rt @ t[..., None])[..., 0])


def relative_pose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a⁻¹ · b: where b sits in a's frame."""
    return invert_pose(a) @ b


def is_rotation(r: np.ndarray, tol: float = 1e-3) -> bool:
    eye = np.eye(3)
    ortho = np.abs(np.swapaxes(r, -1, -2) @ r - eye).max() < tol
    return bool(ortho and np.all(np.linalg.det(r) > 0))
