"""Camera-pose video datasets -> `camera_se3` episodes (camera-to-world poses, OpenCV axes).

RealEstate10K: one `.txt` per clip. Line 1 is the video's URL; every further line is one frame:
timestamp (µs), fx fy cx cy (normalised by the image size), two zeros, then the 3x4 world-to-camera
matrix [R | t] in row-major order (19 numbers). Frames come from a folder named like the file without
`.txt` (images sorted by name, one per line) or from `<stem>.mp4`, whose frames are matched to the
poses by time (the video starts at the first timestamp; poses are slerped to each frame's time).
Poses are inverted to camera-to-world, the convention of `camera_se3`.

SpatialVID: one annotation folder per clip, `annotations/<group>/<clip id>/` with `poses.npy` (N, 7):
tx ty tz qx qy qz qw, world-to-camera, OpenCV axes, for sampled frames; `indexes.txt`, one line per
pose "ordinal frame_index" (an optional `#` header line); `intrinsics.npy` (N, 4) fx fy cx cy
normalised; `caption.json`. The video is `videos/<group>/<clip id>.mp4` beside `annotations/` (or an
mp4 inside the folder). Without `indexes.txt`, poses are taken every int(0.2·fps) frames, the
interval the dataset's annotation pipeline samples at. Poses are slerped to every frame between the
first and the last annotated one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astra_experts.geometry import invert_pose

from astra_core.data import Episode
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE, first_non_rotation, read_frame_folder, read_video, resample_poses


class RealEstate10KReader:
    name = "realestate10k"
    modalities = ("camera_se3",)
    embodiment = "realestate10k"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE):
        self.size = size

    def read(self, path: str | Path) -> Episode:
        path = Path(path)
        url, times_us, intrinsics, w2c = self.read_cameras(path)
        c2w = invert_pose(w2c)
        times = (times_us - times_us[0]) / 1e6
        folder, video = path.with_suffix(""), path.with_suffix(".mp4")
        if folder.is_dir():
            frames, files = read_frame_folder(folder, self.size)
            if len(files) != len(c2w):
                raise ReaderError(f"{folder}: {len(files)} images for the {len(c2w)} poses of {path.name}")
            poses = c2w
            fps = 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 30.0
        elif video.is_file():
            frames, fps = read_video(video, self.size)
            frame_times = np.arange(frames.shape[1]) / fps
            keep = frame_times <= times[-1] + 0.5 / fps
            if not keep.any():
                raise ReaderError(f"{video}: no frame lies within the poses' time range")
            frames, frame_times = frames[:, keep], frame_times[keep]
            poses = resample_poses(times, c2w, frame_times, str(path))
        else:
            raise ReaderError(f"{path}: no frames: expected the folder {folder.name}/ or the video {video.name}")
        return Episode(
            self.embodiment,
            {"camera_se3": poses},
            frames=frames,
            fps=fps,
            source=str(path),
            meta={"url": url, "intrinsics": intrinsics, "timestamps_us": times_us},
        )

    @staticmethod
    def read_cameras(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """(url, timestamps µs [N], intrinsics [N, 4] normalised, world-to-camera poses [N, 4, 4])."""
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ReaderError(f"{path}: cannot read the camera file: {err}") from None
        lines = [line.strip() for line in lines]
        if not lines or not lines[0]:
            raise ReaderError(f"{path}: line 1 must be the video URL")
        url, rows = lines[0], []
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            fields = line.split()
            if len(fields) != 19:
                raise ReaderError(f"{path}: line {number} has {len(fields)} values, expected 19")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise ReaderError(f"{path}: line {number} holds a value that is not a number") from None
            if not np.all(np.isfinite(values)):
                raise ReaderError(f"{path}: line {number} holds NaN or Inf")
            rows.append(values)
        if len(rows) < 2:
            raise ReaderError(f"{path}: needs at least 2 frame lines, found {len(rows)}")
        table = np.array(rows, dtype=np.float64)
        times = table[:, 0]
        if np.any(np.diff(times) <= 0):
            bad = int(np.nonzero(np.diff(times) <= 0)[0][0]) + 3
            raise ReaderError(f"{path}: line {bad}: timestamps must increase")
        w2c = np.zeros((len(table), 4, 4))
        w2c[:, :3, :] = table[:, 7:19].reshape(-1, 3, 4)
        w2c[:, 3, 3] = 1.0
        bad = first_non_rotation(w2c[:, :3, :3])
        if bad is not None:
            raise ReaderError(f"{path}: line {bad + 2}: the 3x3 block is not a rotation matrix")
        return url, times, table[:, 1:5], w2c


class SpatialVIDReader:
    name = "spatialvid"
    modalities = ("camera_se3",)
    embodiment = "spatialvid"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE):
        self.size = size

    def read(self, path: str | Path) -> Episode:
        folder = Path(path)
        if not folder.is_dir():
            raise ReaderError(f"{folder}: expected a SpatialVID annotation folder (with poses.npy)")
        w2c = self.read_poses(folder / "poses.npy")
        video = self.find_video(folder)
        frames, fps = read_video(video, self.size)
        index = self.read_indexes(folder / "indexes.txt", len(w2c), fps)
        if index[-1] >= frames.shape[1]:
            raise ReaderError(
                f"{folder / 'indexes.txt'}: frame index {int(index[-1])} is past the video's {frames.shape[1]} frames"
            )
        span = np.arange(index[0], index[-1] + 1)
        poses = resample_poses(index.astype(np.float64), invert_pose(w2c), span.astype(np.float64), str(folder))
        meta = {"clip": folder.name, "pose_frames": index}
        intrinsics = folder / "intrinsics.npy"
        if intrinsics.is_file():
            meta["intrinsics"] = self._load_npy(intrinsics, (len(w2c), 4))
        caption = folder / "caption.json"
        if caption.is_file():
            try:
                meta["caption"] = json.loads(caption.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ReaderError(f"{caption}: not valid JSON: {err}") from None
        return Episode(
            self.embodiment,
            {"camera_se3": poses},
            frames=frames[:, span],
            fps=fps,
            source=str(folder),
            meta=meta,
        )

    @staticmethod
    def _load_npy(path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ReaderError(f"{path}: not a readable .npy array: {err}") from None
        if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
            want = "(" + ", ".join("N" if w is None else str(w) for w in shape) + ")"
            raise ReaderError(f"{path}: expected shape {want}, got {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise ReaderError(f"{path}: expected numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ReaderError(f"{path}: holds NaN or Inf")
        return arr

    def read_poses(self, path: Path) -> np.ndarray:
        """poses.npy (N, 7) t, q(x, y, z, w) world-to-camera -> [N, 4, 4]."""
        if not path.is_file():
            raise ReaderError(f"{path}: missing (SpatialVID poses, (N, 7) t + quaternion x y z w)")
        table = self._load_npy(path, (None, 7))
        if len(table) < 2:
            raise ReaderError(f"{path}: needs at least 2 poses, got {len(table)}")
        norms = np.linalg.norm(table[:, 3:], axis=1)
        if np.any(norms < 1e-6):
            raise ReaderError(f"{path}: row {int(np.argmin(norms))} has a zero quaternion")
        from astra_experts.geometry import quat_wxyz_to_rotmat, xyzw_to_wxyz

        pose = np.zeros((len(table), 4, 4))
        pose[:, :3, :3] = quat_wxyz_to_rotmat(xyzw_to_wxyz(table[:, 3:]))
        pose[:, :3, 3] = table[:, :3]
        pose[:, 3, 3] = 1.0
        return pose

    @staticmethod
    def read_indexes(path: Path, count: int, fps: float) -> np.ndarray:
        """The video frame of every pose: indexes.txt's second column, or every int(0.2·fps) frames."""
        if not path.is_file():
            stride = max(1, int(0.2 * fps))
            return np.arange(count) * stride
        try:
            lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except (OSError, UnicodeDecodeError) as err:
            raise ReaderError(f"{path}: cannot read: {err}") from None
        if len(lines) != count:
            raise ReaderError(f"{path}: {len(lines)} frame indexes for {count} poses")
        try:
            index = np.array([int(fields[-1]) for fields in lines])
        except (ValueError, IndexError):
            raise ReaderError(f"{path}: every line must end with an integer frame index") from None
        if index[0] < 0 or np.any(np.diff(index) <= 0):
            raise ReaderError(f"{path}: frame indexes must be non-negative and increasing")
        return index

    @staticmethod
    def find_video(folder: Path) -> Path:
        inside = sorted(folder.glob("*.mp4"))
        if len(inside) == 1:
            return inside[0]
        group, annotations = folder.parent, folder.parent.parent
        beside = annotations.parent / "videos" / group.name / f"{folder.name}.mp4"
        if beside.is_file():
            return beside
        raise ReaderError(f"{folder}: no video: expected {beside} or one .mp4 inside the folder")
