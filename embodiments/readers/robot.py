"""Robot demonstrations in HDF5 (robomimic / LIBERO layout) -> `robot_ee` episodes.

Layout: `data/<demo>/actions` [T, 7] (position delta 3, rotation delta axis-angle 3, gripper in
[-1, 1] with -1 open and +1 closed) and `data/<demo>/obs/<camera>` [T, H, W, 3] uint8. `actions[t]` is
applied after observation t, so it leads into frame t + 1: the raw stream's row t + 1 is actions[t]
(row 0, before the first frame, is zeros) and the gripper becomes a state in [0, 1]. LIBERO renders
its cameras upside down; files whose `data` attributes name a LIBERO environment (or with
`flip=True`) get their frames turned by 180°.

Pass `file.hdf5:demo_3` to pick a demonstration; a plain path works when the file holds exactly one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.data.video import resize_crop, uint8_to_frames
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE

CAMERAS = ("agentview_image", "agentview_rgb", "image", "front_image")


class RobotHDF5Reader:
    name = "robot_hdf5"
    modalities = ("robot_ee",)
    embodiment = "robot_arm"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, camera: str | None = None, flip: bool | None = None):
        self.size, self.camera, self.flip = size, camera, flip

    @staticmethod
    def split(path: str | Path) -> tuple[Path, str | None]:
        text = str(path)
        head, sep, demo = text.rpartition(":")
        if sep and head.endswith((".hdf5", ".h5")):
            return Path(head), demo
        return Path(text), None

    def demos(self, path: str | Path) -> list[str]:
        """The demonstrations in a file, in numeric order (demo_2 before demo_10)."""

        file, _ = self.split(path)
        with self._open(file) as f:
            return self._demo_names(f, file)

    def read(self, path: str | Path) -> Episode:
        file, demo = self.split(path)
        with self._open(file) as f:
            names = self._demo_names(f, file)
            if demo is None:
                if len(names) != 1:
                    shown = ", ".join(f"{file}:{n}" for n in names[:3])
                    raise ReaderError(f"{file}: holds {len(names)} demonstrations; pick one, e.g. {shown}")
                demo = names[0]
            if demo not in names:
                raise ReaderError(
                    f"{file}: no demonstration {demo!r}; it has {names[:5]}{'…' if len(names) > 5 else ''}"
                )
            group = f["data"][demo]
            where = f"{file}:{demo}"
            actions = self._array(group, "actions", where)
            if actions.ndim != 2 or actions.shape[1] != 7:
                raise ReaderError(f"{where}: actions must be [T, 7], got {actions.shape}")
            if "obs" not in group:
                raise ReaderError(f"{where}: no 'obs' group")
            camera = self.camera or next((c for c in CAMERAS if c in group["obs"]), None)
            if camera is None or camera not in group["obs"]:
                raise ReaderError(
                    f"{where}: no camera among obs/{{{', '.join(self.camera and [self.camera] or CAMERAS)}}}"
                )
            images = self._array(group["obs"], camera, f"{where}/obs")
            env = str(f["data"].attrs.get("env_args", ""))
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ReaderError(f"{where}: obs/{camera} must be uint8 [T, H, W, 3], got {images.dtype} {images.shape}")
        if len(images) != len(actions) or len(images) < 2:
            raise ReaderError(
                f"{where}: {len(images)} frames and {len(actions)} actions; need equal counts, at least 2"
            )
        if not np.all(np.isfinite(actions)):
            raise ReaderError(f"{where}: actions hold NaN or Inf")
        flip = self.flip if self.flip is not None else "libero" in env.lower()
        if flip:
            images = images[:, ::-1, ::-1]
        raw = np.zeros((len(actions), 7))
        raw[1:] = actions[:-1]
        raw[:, 6] = np.clip((raw[:, 6] + 1) / 2, 0, 1)
        raw[0, 6] = raw[1, 6]
        frames = resize_crop(uint8_to_frames(np.ascontiguousarray(images)), self.size)
        fps = 20.0
        try:
            fps = float(json.loads(env).get("env_kwargs", {}).get("control_freq", fps)) if env else fps
        except (ValueError, AttributeError):
            pass
        return Episode(
            self.embodiment,
            {"robot_ee": raw},
            frames=frames,
            fps=fps,
            source=where,
            meta={"camera": camera, "flipped": flip},
        )

    @staticmethod
    def _open(file: Path):
        import h5py

        if not file.is_file():
            raise ReaderError(f"{file}: no such HDF5 file")
        try:
            return h5py.File(file, "r")
        except OSError as err:
            raise ReaderError(f"{file}: not a readable HDF5 file: {err}") from None

    @staticmethod
    def _demo_names(f, file: Path) -> list[str]:
        import h5py

        if "data" not in f or not isinstance(f["data"], h5py.Group):
            raise ReaderError(f"{file}: no 'data' group (robomimic / LIBERO layout: data/demo_N/...)")
        names = [k for k in f["data"] if isinstance(f["data"][k], h5py.Group)]
        if not names:
            raise ReaderError(f"{file}: the 'data' group holds no demonstrations")
        return sorted(names, key=lambda n: (len(n), n))

    @staticmethod
    def _array(group, key: str, where: str) -> np.ndarray:
        import h5py

        if key not in group or not isinstance(group[key], h5py.Dataset):
            raise ReaderError(f"{where}: no dataset {key!r}")
        try:
            return np.asarray(group[key][()])
        except (OSError, TypeError, ValueError) as err:
            raise ReaderError(f"{where}/{key}: cannot read: {err}") from None
