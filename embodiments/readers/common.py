"""What the dataset readers share: video decoding, resizing, frame folders and pose resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import quaternion  # numpy-quaternion
import torch

from astra_core.data.video import IMAGE_SUFFIXES, image_to_uint8, resize_crop, uint8_to_frames
from astra_core.errors import ReaderError

DEFAULT_SIZE = (64, 64)  # (H, W) of the toy models


def read_video(path: Path, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[torch.Tensor, float]:
    """An mp4 (any container ffmpeg reads) -> (frames [3, T, H, W] in [-1, 1] resized and centre-cropped
    to `size`, frames per second)."""
    import imageio.v3 as iio

    if not path.is_file():
        raise ReaderError(f"{path}: no such video")
    try:
        meta = iio.immeta(path, plugin="FFMPEG")
        frames = iio.imread(path, index=None, plugin="FFMPEG")
    except Exception as err:  # decoders raise many types; name the file
        raise ReaderError(f"{path}: cannot decode the video: {err}") from None
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] < 3:
        raise ReaderError(f"{path}: no RGB frames decoded (array of shape {frames.shape})")
    fps = float(meta.get("fps") or 0.0)
    if not np.isfinite(fps) or fps <= 0:
        raise ReaderError(f"{path}: the video gives no frame rate")
    return resize_crop(uint8_to_frames(frames[..., :3]), size), fps


def read_frame_folder(folder: Path, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[torch.Tensor, list[Path]]:
    """Images in a folder, in order (numeric when every name is a number, else by name) -> (frames
    [3, T, H, W], their paths)."""
    import imageio.v3 as iio

    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if files and all(p.stem.isdigit() for p in files):  # named by frame number or timestamp: numeric order
        files.sort(key=lambda p: int(p.stem))
    else:
        files.sort()
    if not files:
        raise ReaderError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    frames = []
    for f in files:
        try:
            img = np.asarray(iio.imread(f))
        except Exception as err:
            raise ReaderError(f"{f}: cannot decode the image: {err}") from None
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] < 3:
            raise ReaderError(f"{f}: not an RGB image (shape {img.shape})")
        if frames and img.shape[:2] != frames[0].shape[:2]:
            raise ReaderError(f"{f}: size {img.shape[:2]} differs from the first frame's {frames[0].shape[:2]}")
        frames.append(image_to_uint8(img[..., :3], str(f), ReaderError))
    return resize_crop(uint8_to_frames(np.stack(frames)), size), files


def resample_poses(times: np.ndarray, poses: np.ndarray, at: np.ndarray, where: str) -> np.ndarray:
    """Poses [N, 4, 4] known at increasing `times` -> poses at the times `at`: rotations by slerp,
    translations linearly; `at` must lie within the known range (half a frame of slack at the ends)."""
    times = np.asarray(times, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    if len(times) != len(poses):
        raise ReaderError(f"{where}: {len(times)} timestamps for {len(poses)} poses")
    if len(times) < 2 or np.any(np.diff(times) <= 0):
        raise ReaderError(f"{where}: pose timestamps must be at least 2 and strictly increasing")
    slack = 0.5 * float(np.median(np.diff(times)))
    if at.min() < times[0] - slack or at.max() > times[-1] + slack:
        raise ReaderError(
            f"{where}: frames at {at.min():.3f}…{at.max():.3f} s lie outside the poses' "
            f"{times[0]:.3f}…{times[-1]:.3f} s"
        )
    at = np.clip(at, times[0], times[-1])
    q = quaternion.from_rotation_matrix(poses[:, :3, :3])
    hi = np.clip(np.searchsorted(times, at, side="right"), 1, len(times) - 1)
    lo = hi - 1
    w = (at - times[lo]) / (times[hi] - times[lo])
    out = np.zeros((len(at), 4, 4))
    for i, (a, b, s) in enumerate(zip(lo, hi, w)):
        qi = quaternion.slerp_evaluate(q[a], q[b], s)
        out[i, :3, :3] = quaternion.as_rotation_matrix(qi)
        out[i, :3, 3] = (1 - s) * poses[a, :3, 3] + s * poses[b, :3, 3]
    out[:, 3, 3] = 1.0
    return out


def first_non_rotation(rotations: np.ndarray, tol: float = 1e-2) -> int | None:
    """Index of the first 3x3 block that is not a rotation (within `tol`), or None."""
    eye = np.eye(3)
    err = np.abs(np.swapaxes(rotations, -1, -2) @ rotations - eye).max(axis=(-1, -2))
    det = np.linalg.det(rotations)
    bad = np.nonzero((err > tol) | (det <= 0) | ~np.isfinite(err))[0]
    return int(bad[0]) if len(bad) else None
