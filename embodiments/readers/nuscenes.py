"""nuScenes v1.0 -> `vehicle_pose` episodes: one scene's CAM_FRONT frames with the ego pose of each.

Input: `<dataroot>/<version>:<scene name>`, e.g. `data/nuscenes/v1.0-mini:scene-0061`. The tables
(JSON lists in `<dataroot>/<version>/`) are joined as nuScenes does: scene -> sample (by scene_token)
-> sample_data of the CAM_FRONT sensor (through calibrated_sensor -> sensor.channel), keyframes and
sweeps alike, ordered by timestamp (µs) -> ego_pose (translation, rotation as w, x, y, z). Image
files are `<dataroot>/<filename>`. A missing table, or a token that points nowhere, fails naming the
table and the token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.data.video import image_to_uint8, resize_crop, uint8_to_frames
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE

TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")


class NuScenesReader:
    name = "nuscenes"
    modalities = ("vehicle_pose",)
    embodiment = "nuscenes"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, channel: str = "CAM_FRONT", sweeps: bool = True):
        self.size, self.channel, self.sweeps = size, channel, sweeps

    @staticmethod
    def split(path: str | Path) -> tuple[Path, str]:
        text = str(path)
        folder, sep, scene = text.rpartition(":")
        if not sep or not scene:
            raise ReaderError(f"{text}: give the tables folder and a scene, e.g. data/nuscenes/v1.0-mini:scene-0061")
        return Path(folder), scene

    def read(self, path: str | Path) -> Episode:
        tables_dir, scene_name = self.split(path)
        tables = self.load_tables(tables_dir)
        by_token = {name: {r["token"]: r for r in rows} for name, rows in tables.items()}

        def lookup(table: str, token: str, referrer: str) -> dict:
            record = by_token[table].get(token) if isinstance(token, str) else None
            if record is None:
                raise ReaderError(f"{tables_dir}: {referrer} points to {table} token {token!r}, which does not exist")
            return record

        scenes = [s for s in tables["scene"] if s.get("name") == scene_name]
        if not scenes:
            names = sorted(str(s.get("name", "?")) for s in tables["scene"])[:5]
            raise ReaderError(f"{tables_dir}: no scene named {scene_name!r} in scene.json (e.g. {names})")
        scene = scenes[0]
        samples = {s["token"] for s in tables["sample"] if s.get("scene_token") == scene["token"]}
        if not samples:
            raise ReaderError(f"{tables_dir}: scene {scene_name!r} has no samples in sample.json")
        records = []
        for sd in tables["sample_data"]:
            token = sd.get("sample_token")
            if not isinstance(token, str) or token not in samples or (not self.sweeps and not sd.get("is_key_frame")):
                continue
            calib = lookup("calibrated_sensor", sd.get("calibrated_sensor_token"), f"sample_data {sd['token']}")
            sensor = lookup("sensor", calib.get("sensor_token"), f"calibrated_sensor {calib['token']}")
            if sensor.get("channel") == self.channel:
                if not isinstance(sd.get("timestamp"), (int, float)) or not isinstance(sd.get("filename"), str):
                    raise ReaderError(
                        f"{tables_dir}: sample_data {sd['token']}: needs a numeric timestamp and a filename"
                    )
                records.append(sd)
        if len(records) < 2:
            raise ReaderError(f"{tables_dir}: scene {scene_name!r} has {len(records)} {self.channel} frames; need 2")
        records.sort(key=lambda r: r["timestamp"])
        translation, rotation, images = [], [], []
        root = tables_dir.parent
        for sd in records:
            pose = lookup("ego_pose", sd.get("ego_pose_token"), f"sample_data {sd['token']}")
            t, q = np.asarray(pose.get("translation"), float), np.asarray(pose.get("rotation"), float)
            if t.shape != (3,) or q.shape != (4,) or not np.all(np.isfinite(t)) or not np.all(np.isfinite(q)):
                raise ReaderError(f"{tables_dir}: ego_pose {pose['token']}: translation (3) and rotation (4) expected")
            if np.linalg.norm(q) < 1e-6:
                raise ReaderError(f"{tables_dir}: ego_pose {pose['token']}: zero quaternion")
            translation.append(t)
            rotation.append(q / np.linalg.norm(q))
            images.append(self._image(root / sd["filename"], images[0].shape if images else None))
        times = np.array([r["timestamp"] for r in records], dtype=np.float64)
        fps = 1e6 / float(np.median(np.diff(times)))
        frames = resize_crop(uint8_to_frames(np.stack(images)), self.size)
        stream = {"translation": np.stack(translation), "rotation": np.stack(rotation)}
        meta = {
            "scene": scene_name,
            "timestamps_us": times,
            "key_frame": [bool(r.get("is_key_frame")) for r in records],
        }
        return Episode(self.embodiment, {"vehicle_pose": stream}, frames, fps, f"{tables_dir}:{scene_name}", meta)

    @staticmethod
    def load_tables(folder: Path) -> dict[str, list[dict]]:
        if not folder.is_dir():
            raise ReaderError(f"{folder}: no such nuScenes tables folder (e.g. <dataroot>/v1.0-mini)")
        tables = {}
        for name in TABLES:
            path = folder / f"{name}.json"
            if not path.is_file():
                raise ReaderError(f"{folder}: missing table {name}.json")
            try:
                rows = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ReaderError(f"{path}: not valid JSON: {err}") from None
            if not isinstance(rows, list) or not all(
                isinstance(r, dict) and isinstance(r.get("token"), str) for r in rows
            ):
                raise ReaderError(f"{path}: expected a list of records, each with a string 'token'")
            tables[name] = rows
        return tables

    @staticmethod
    def _image(path: Path, shape) -> np.ndarray:
        import imageio.v3 as iio

        if not path.is_file():
            raise ReaderError(f"{path}: image file missing")
        try:
            img = np.asarray(iio.imread(path))
        except Exception as err:
            raise ReaderError(f"{path}: cannot decode the image: {err}") from None
        if img.ndim != 3 or img.shape[-1] < 3:
            raise ReaderError(f"{path}: not an RGB image (shape {img.shape})")
        if shape is not None and img.shape != shape:
            raise ReaderError(f"{path}: size {img.shape} differs from the scene's first frame {shape}")
        return image_to_uint8(img[..., :3], str(path), ReaderError)
