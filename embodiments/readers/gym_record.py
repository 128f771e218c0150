"""Episodes written by `astra record` (one HDF5 file each, `episode_000000.h5`) -> `Episode`s.

The file says its embodiment and modality (see `astra_embodiments.gym.record` for the layout); the
frames are returned at the size they were recorded at (`astra encode --size` resizes them), and the
episode's metadata carries the environment id, its seed, the policy and the action meanings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.data.video import uint8_to_frames
from astra_core.errors import ReaderError

FORMAT = "astra-gym-record"
SUPPORTED_VERSIONS = (1,)


class GymRecordReader:
    name = "gym_record"
    modalities = ("atari_action", "discrete_action", "box_action", "vehicle_pose", "robot_ee")
    embodiment = "atari"  # the usual one; each file names its own

    def read(self, path: str | Path) -> Episode:
        import h5py

        path = Path(path)
        if not path.is_file():
            raise ReaderError(f"{path}: no such episode file")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise ReaderError(f"{path}: not a readable HDF5 file: {err}") from None
        with f:
            if f.attrs.get("format") != FORMAT:
                raise ReaderError(f"{path}: not an `astra record` episode (no format attribute {FORMAT!r})")
            version = int(f.attrs.get("format_version", 0))
            if version not in SUPPORTED_VERSIONS:
                raise ReaderError(f"{path}: format version {version}; this reader reads {list(SUPPORTED_VERSIONS)}")
            for key in ("frames", "actions"):
                if key not in f:
                    raise ReaderError(f"{path}: missing '{key}'")
            frames = np.asarray(f["frames"])
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ReaderError(f"{path}: 'frames' must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
            actions = {}
            for modality, item in f["actions"].items():
                if hasattr(item, "keys"):
                    actions[modality] = {k: np.asarray(v) for k, v in item.items()}
                else:
                    actions[modality] = np.asarray(item)
                length = (
                    len(next(iter(actions[modality].values())))
                    if isinstance(actions[modality], dict)
                    else len(actions[modality])
                )
                if length != len(frames):
                    raise ReaderError(
                        f"{path}: actions/{modality} has {length} rows for {len(frames)} frames (one row per frame)"
                    )
            meta = {
                "env_id": str(f.attrs.get("env_id", "")),
                "seed": int(f.attrs.get("seed", -1)),
                "policy": str(f.attrs.get("policy", "")),
                "terminated": bool(f.attrs.get("terminated", False)),
                **json.loads(str(f.attrs.get("meta", "{}"))),
            }
            embodiment = str(f.attrs.get("embodiment", ""))
            fps = float(f.attrs.get("fps", 10.0))
        return Episode(embodiment, actions, uint8_to_frames(frames), fps, str(path), meta)
