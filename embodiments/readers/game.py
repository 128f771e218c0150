"""Keyboard/mouse game logs (VPT style) -> `discrete_cmd` episodes.

A log is a video `<name>.mp4` and `<name>.jsonl` beside it: one JSON object per video frame, with
`keyboard.keys` (held keys, named like "key.keyboard.w") and `mouse.dx`, `mouse.dy` (the mouse motion
during that frame). Line t is the input after frame t, so it leads into frame t + 1: the raw stream's
row t + 1 holds line t's keys and motion, and row 0 is empty. Keys map to the modality's names: W A S
D, the arrows, SPACE (jump) and SHIFT (left or right shift, sprint); other keys are dropped and counted
in the episode's meta. Mouse motion stays in the log's units (pixels), for mouse look.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from astra_core.data import Episode
from astra_core.errors import ReaderError

from .common import DEFAULT_SIZE, read_video

KEY_NAMES = {
    "w": "W",
    "a": "A",
    "s": "S",
    "d": "D",
    "up": "UP",
    "down": "DOWN",
    "left": "LEFT",
    "right": "RIGHT",
    "space": "SPACE",
    "left.shift": "SHIFT",
    "right.shift": "SHIFT",
    "shift": "SHIFT",
}


def key_name(raw: str) -> str | None:
    """'key.keyboard.w' (or plain 'w', 'W') -> 'W'; None for keys the modality does not know."""
    name = raw.lower()
    for prefix in ("key.keyboard.", "key."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return KEY_NAMES.get(name)


class GameLogReader:
    name = "game_log"
    modalities = ("discrete_cmd",)
    embodiment = "game_player"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE):
        self.size = size

    def read(self, path: str | Path) -> Episode:
        path = Path(path)
        log = path.with_suffix(".jsonl")
        video = path.with_suffix(".mp4")
        keys, mouse, dropped = self.read_log(log)
        frames, fps = read_video(video, self.size)
        t = frames.shape[1]
        if not t - 1 <= len(keys) <= t:
            raise ReaderError(
                f"{log}: {len(keys)} lines for a video of {t} frames ({video.name}); one line per frame, "
                f"{t - 1} or {t}: is the video cut short, or the log another episode's?"
            )
        raw_keys = [[]] + keys[: t - 1]
        raw_mouse = np.zeros((t, 2))
        raw_mouse[1:] = mouse[: t - 1]
        meta = {"dropped_keys": dropped, "log": str(log)}
        return Episode(
            self.embodiment, {"discrete_cmd": {"keys": raw_keys, "mouse": raw_mouse}}, frames, fps, str(video), meta
        )

    @staticmethod
    def read_log(log: Path) -> tuple[list[list[str]], np.ndarray, dict[str, int]]:
        if not log.is_file():
            raise ReaderError(f"{log}: no such action log (one JSON object per frame)")
        try:
            lines = log.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ReaderError(f"{log}: cannot read: {err}") from None
        while lines and not lines[-1].strip():  # blank lines at the end are no frames
            lines.pop()
        keys, mouse, dropped = [], [], {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():  # skipping it would shift every later frame's input by one
                raise ReaderError(f"{log}: line {number} is empty; the log holds one JSON object per frame")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReaderError(f"{log}: line {number} is not JSON: {err.msg}") from None
            if not isinstance(record, dict):
                raise ReaderError(f"{log}: line {number} is not a JSON object")
            keyboard, m = record.get("keyboard", {}), record.get("mouse", {})
            if not isinstance(keyboard, dict) or not isinstance(m, dict):
                raise ReaderError(f"{log}: line {number}: 'keyboard' and 'mouse' must be objects")
            held = keyboard.get("keys", [])
            if not isinstance(held, list) or not all(isinstance(k, str) for k in held):
                raise ReaderError(f"{log}: line {number}: keyboard.keys must be a list of key names")
            names = []
            for k in held:
                name = key_name(k)
                if name is None:
                    dropped[k] = dropped.get(k, 0) + 1
                elif name not in names:
                    names.append(name)
            try:
                dx, dy = float(m.get("dx", 0.0)), float(m.get("dy", 0.0))
            except (TypeError, ValueError):
                raise ReaderError(f"{log}: line {number}: mouse.dx and mouse.dy must be numbers") from None
            if not (np.isfinite(dx) and np.isfinite(dy)):
                raise ReaderError(f"{log}: line {number}: mouse motion is NaN or Inf")
            keys.append(names)
            mouse.append((dx, dy))
        if not keys:
            raise ReaderError(f"{log}: no actions")
        return keys, np.array(mouse, dtype=np.float64), dropped
