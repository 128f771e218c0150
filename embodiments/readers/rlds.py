"""RT-1 / Open X-Embodiment RLDS TFRecord shards -> `robot_ee` episodes, without TensorFlow.

A shard is a TFRecord file: records framed as length (uint64 LE), masked CRC-32C of the length, the
data, masked CRC-32C of the data. Each record is one `tf.train.Example` holding a whole episode with
flat keys: `steps/action/world_vector` (3 per step), `steps/action/rotation_delta` (3 per step, small
angles taken as an axis-angle vector), `steps/action/gripper_closedness_action` (1 per step, +1 closes
and -1 opens), `steps/observation/image` (one encoded JPEG/PNG per step). The step-t action leads into
step t + 1, so the raw stream's row t + 1 is action t. The gripper state is where the last command left it.
Both CRCs are checked; a bad CRC or a truncated record ends in a `ReaderError` naming the file, the
record and the byte offset. Parsing the protobuf needs the `rlds` extra (the `tfrecord` package).

Pass `shard.tfrecord:3` for the fourth episode of a shard (default: the first).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.data.video import resize_crop, uint8_to_frames
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE

KEYS = {
    "world_vector": "steps/action/world_vector",
    "rotation_delta": "steps/action/rotation_delta",
    "gripper": "steps/action/gripper_closedness_action",
    "image": "steps/observation/image",
}


def _masked_crc(data: bytes) -> int:
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_records(path: Path):
    """Yield (index, offset, payload bytes) of every record, checking both CRCs."""
    size = path.stat().st_size
    with path.open("rb") as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ReaderError(f"{path}: record {index} at byte {offset}: truncated header")
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != length_crc:
                raise ReaderError(f"{path}: record {index} at byte {offset}: bad CRC of the length")
            if offset + 16 + length > size:
                raise ReaderError(f"{path}: record {index} at byte {offset}: truncated ({length} bytes announced)")
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            if _masked_crc(data) != data_crc:
                raise ReaderError(f"{path}: record {index} at byte {offset}: bad CRC of the data")
            yield index, offset, data
            index += 1


class RT1TFRecordReader:
    name = "rt1_tfrecord"
    modalities = ("robot_ee",)
    embodiment = "rt1_robot"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, fps: float = 3.0):
        self.size, self.fps = size, fps

    @staticmethod
    def split(path: str | Path) -> tuple[Path, int]:
        text = str(path)
        head, sep, tail = text.rpartition(":")
        if sep and tail.isdigit() and head:
            return Path(head), int(tail)
        return Path(text), 0

    def read(self, path: str | Path) -> Episode:
        file, wanted = self.split(path)
        if not file.is_file():
            raise ReaderError(f"{file}: no such TFRecord shard")
        try:
            from tfrecord import example_pb2
        except ImportError:
            raise ReaderError(f'{self.name} needs the rlds extra: pip install "astra-world[rlds]"') from None
        try:
            import crc32c  # noqa: F401
        except ImportError:
            raise ReaderError(f'{self.name} needs the rlds extra: pip install "astra-world[rlds]"') from None
        for index, offset, data in iter_records(file):
            if index != wanted:
                continue
            example = example_pb2.Example()
            try:
                example.ParseFromString(data)
            except Exception as err:  # protobuf's DecodeError and friends
                raise ReaderError(f"{file}: record {index} at byte {offset}: not a tf.train.Example: {err}") from None
            return self._episode(example, f"{file}:{index}")
        raise ReaderError(f"{file}: no episode {wanted} (the shard holds fewer records)")

    def _episode(self, example, where: str) -> Episode:
        feature = example.features.feature
        missing = [key for key in KEYS.values() if key not in feature]
        if missing:
            raise ReaderError(f"{where}: missing keys {missing}")

        def floats(key: str, width: int) -> np.ndarray:
            values = np.asarray(feature[key].float_list.value, dtype=np.float64)
            if len(values) % width or not len(values):
                raise ReaderError(f"{where}: {key} holds {len(values)} floats, not a multiple of {width}")
            if not np.all(np.isfinite(values)):
                raise ReaderError(f"{where}: {key} holds NaN or Inf")
            return values.reshape(-1, width)

        world = floats(KEYS["world_vector"], 3)
        rotation = floats(KEYS["rotation_delta"], 3)
        gripper = floats(KEYS["gripper"], 1)
        images = list(feature[KEYS["image"]].bytes_list.value)
        steps = len(images)
        if steps < 2 or not (len(world) == len(rotation) == len(gripper) == steps):
            raise ReaderError(
                f"{where}: {steps} images, {len(world)} world vectors, {len(rotation)} rotations, "
                f"{len(gripper)} gripper actions: need equal counts, at least 2"
            )
        decoded = [self._decode(img, f"{where}: step {t} image") for t, img in enumerate(images)]
        for t, image in enumerate(decoded):
            if image.shape != decoded[0].shape:
                raise ReaderError(
                    f"{where}: step {t} image is {image.shape[0]}×{image.shape[1]} (H×W), step 0's "
                    f"{decoded[0].shape[0]}×{decoded[0].shape[1]}: an episode's images must share one size"
                )
        frames = np.stack(decoded)
        state = np.zeros(steps)
        closed = 0.0
        for t in range(steps):  # the gripper stays where the last non-zero command left it
            g = gripper[t, 0]
            closed = 1.0 if g > 0.5 else (0.0 if g < -0.5 else closed)
            state[t] = closed
        raw = np.zeros((steps, 7))
        raw[1:, :3] = world[:-1]
        raw[1:, 3:6] = rotation[:-1]
        raw[1:, 6] = state[:-1]
        raw[0, 6] = raw[1, 6]
        video = resize_crop(uint8_to_frames(frames), self.size)
        return Episode(self.embodiment, {"robot_ee": raw}, video, self.fps, where, {"steps": steps})

    @staticmethod
    def _decode(data: bytes, where: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ReaderError(f"{where}: cannot decode: {err}") from None
