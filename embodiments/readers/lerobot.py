"""LeRobot datasets (layouts v2.x and v3.0) -> `robot_ee` episodes.

`meta/info.json` gives `codebase_version`, `fps`, the `data_path` and `video_path` templates and the
`features` (camera keys have dtype "video"). v2.x keeps one parquet file and one mp4 per camera per
episode (chunk = episode_index // chunks_size). v3.0 packs many episodes per file: the episode's
rows in the data parquet are those with its `episode_index`, and `meta/episodes/*/*.parquet` says
which video file holds it and from which timestamp. The `action` column (width 7: position delta 3,
rotation delta 3, gripper) becomes the raw stream; the action of frame t leads into frame t + 1.
Reading parquet needs the `lerobot` extra (pyarrow).

Pass `<dataset folder>:<episode index>`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE, read_video


class LeRobotReader:
    name = "lerobot"
    modalities = ("robot_ee",)
    embodiment = "lerobot_arm"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, camera: str | None = None, action_key: str = "action"):
        self.size, self.camera, self.action_key = size, camera, action_key

    @staticmethod
    def split(path: str | Path) -> tuple[Path, int]:
        head, sep, tail = str(path).rpartition(":")
        if not sep or not tail.isdigit():
            raise ReaderError(f"{path}: give the dataset folder and an episode index, e.g. data/pusht:0")
        return Path(head), int(tail)

    def read(self, path: str | Path) -> Episode:
        root, episode = self.split(path)
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ReaderError(f'{self.name} needs the lerobot extra: pip install "astra-world[lerobot]"') from None
        info = self._info(root)
        version = str(info.get("codebase_version", ""))
        fps = info.get("fps")
        if not isinstance(fps, (int, float)) or fps <= 0:
            raise ReaderError(f"{root / 'meta' / 'info.json'}: 'fps' must be a positive number")
        features = info.get("features")
        if not isinstance(features, dict):
            raise ReaderError(f"{root / 'meta' / 'info.json'}: no 'features' mapping")
        cameras = [k for k, v in features.items() if isinstance(v, dict) and v.get("dtype") == "video"]
        camera = self.camera or (cameras[0] if cameras else None)
        if camera not in cameras:
            raise ReaderError(f"{root}: no video feature {camera!r}; the dataset has {cameras}")
        if version.startswith("v2"):
            chunk = episode // int(info.get("chunks_size", 1000))
            data_file = root / self._fill(info, "data_path", episode_chunk=chunk, episode_index=episode)
            video_file = root / self._fill(
                info, "video_path", episode_chunk=chunk, episode_index=episode, video_key=camera
            )
            table = self._parquet(pq, data_file)
            start_time = 0.0
        elif version.startswith("v3"):
            meta = self._episode_meta(pq, root, episode)
            data_file = root / self._fill(
                info, "data_path", chunk_index=meta["data/chunk_index"], file_index=meta["data/file_index"]
            )
            video_file = root / self._fill(
                info,
                "video_path",
                video_key=camera,
                chunk_index=meta[f"videos/{camera}/chunk_index"],
                file_index=meta[f"videos/{camera}/file_index"],
            )
            table = self._parquet(pq, data_file)
            start_time = float(meta.get(f"videos/{camera}/from_timestamp", 0.0))
        else:
            raise ReaderError(f"{root / 'meta' / 'info.json'}: codebase_version {version!r} is not v2.x or v3.0")
        columns = table.column_names
        for needed in ("episode_index", self.action_key):
            if needed not in columns:
                raise ReaderError(f"{data_file}: no column {needed!r} (columns: {columns})")
        rows = np.asarray(table.column("episode_index").to_numpy()) == episode
        if rows.sum() < 2:
            raise ReaderError(f"{data_file}: episode {episode} has {int(rows.sum())} frames; need at least 2")
        try:
            actions = np.asarray(table.column(self.action_key).to_pylist(), dtype=np.float64)[rows]
        except (TypeError, ValueError) as err:
            raise ReaderError(f"{data_file}: column {self.action_key!r} is not numeric vectors: {err}") from None
        if actions.ndim != 2 or actions.shape[1] != 7:
            raise ReaderError(
                f"{data_file}: {self.action_key!r} has shape {actions.shape}; robot_ee needs 7 values per frame "
                "(position delta 3, rotation delta 3, gripper)"
            )
        if not np.all(np.isfinite(actions)):
            raise ReaderError(f"{data_file}: {self.action_key!r} holds NaN or Inf")
        frames, video_fps = read_video(video_file, self.size)
        first = int(round(start_time * video_fps))
        count = len(actions)
        if first + count > frames.shape[1]:
            raise ReaderError(
                f"{video_file}: {frames.shape[1]} frames; episode {episode} needs {first}…{first + count}"
            )
        raw = np.zeros((count, 7))
        raw[1:] = actions[:-1]
        raw[0, 6] = actions[0, 6]
        meta = {"camera": camera, "version": version, "episode": episode}
        return Episode(
            self.embodiment, {"robot_ee": raw}, frames[:, first : first + count], float(fps), f"{root}:{episode}", meta
        )

    @staticmethod
    def _info(root: Path) -> dict:
        path = root / "meta" / "info.json"
        if not path.is_file():
            raise ReaderError(f"{root}: no meta/info.json (not a LeRobot dataset)")
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReaderError(f"{path}: not valid JSON: {err}") from None
        if not isinstance(info, dict):
            raise ReaderError(f"{path}: expected a JSON object")
        return info

    @staticmethod
    def _fill(info: dict, key: str, **values) -> str:
        template = info.get(key)
        if not isinstance(template, str):
            raise ReaderError(f"meta/info.json: no {key!r} template")
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as err:
            raise ReaderError(f"meta/info.json: template {key} = {template!r} does not fit: {err}") from None

    @staticmethod
    def _parquet(pq, path: Path):
        if not path.is_file():
            raise ReaderError(f"{path}: missing parquet file")
        try:
            return pq.read_table(path)
        except Exception as err:  # pyarrow raises several types
            raise ReaderError(f"{path}: not a readable parquet file: {err}") from None

    def _episode_meta(self, pq, root: Path, episode: int) -> dict:
        files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise ReaderError(f"{root}: no meta/episodes/*/*.parquet (v3.0 layout)")
        for path in files:
            table = self._parquet(pq, path)
            if "episode_index" not in table.column_names:
                raise ReaderError(f"{path}: no column 'episode_index'")
            for row in table.to_pylist():
                if row.get("episode_index") == episode:
                    for key in ("data/chunk_index", "data/file_index"):
                        if not isinstance(row.get(key), int):
                            raise ReaderError(f"{path}: episode {episode}: {key!r} missing or not an integer")
                    return row
        raise ReaderError(f"{root}: no episode {episode} in meta/episodes")
