"""Environment adapters: how one family of Gymnasium environments becomes training data.

`astra record` runs an environment and asks the registered adapters (hook
`astra_register_env_adapters`, `register(AdapterClass)`) which one maps its actions: first the
adapters of `stream = "pose"` (a pose the environment exposes: a vehicle, an end-effector), then those
of `stream = "space"` (the action space itself), each in registration order; the first whose
`matches(env)` is true is instantiated once per recording.

Timing, as everywhere in the framework: frame 0 follows `reset`, frame t + 1 follows step t, and row
t + 1 of the raw stream is what step t did (row 0 stands for frame 0 and is ignored by modalities).

A subclass sets `name`, `stream`, `modality` (a registered modality's name) and `embodiment`, and
implements `matches`, `start` and `row`; the rest has defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class EnvAdapter:
    name: str = ""
    stream: str = "space"  # "pose" or "space": what `astra record --stream` selects
    modality: str = ""
    embodiment: str = ""
    # For `astra play --env`: the key names it understands (from W A S D UP DOWN LEFT RIGHT SPACE
    # SHIFT), what they do, and `key_action(pressed)`; an adapter without keys cannot be played.
    keys: tuple[str, ...] = ()
    key_help: str = ""

    @classmethod
    def prepare(cls, env_id: str) -> dict[str, Any]:
        """Called for every adapter before `gymnasium.make(env_id)`: register the family's environments
        with Gymnasium if `env_id` is one of them, and return keyword arguments `make` should get by
        default (the user's `--env-arg` values override them); {} when `env_id` is not the family's."""
        return {}

    @classmethod
    def matches(cls, env) -> bool:
        """Whether this adapter maps `env` (a made environment, wrappers included)."""
        raise NotImplementedError

    def __init__(self, env) -> None:
        """Built once per recording, after `matches`; raise `ConfigError` for a space it cannot hold."""

    def start(self, env) -> Any:
        """The row for frame 0, right after `reset`."""
        raise NotImplementedError

    def row(self, env, action) -> Any:
        """The row for the frame after `env.step(action)`."""
        raise NotImplementedError

    def stack(self, rows: list) -> Any:
        """One episode's rows -> the modality's raw stream (default: one array)."""
        return np.stack([np.asarray(r) for r in rows])

    def meta(self, env) -> dict[str, Any]:
        """JSON-able facts a reader of the episode needs (action meanings, bounds, conventions)."""
        return {}

    def extras(self, env) -> dict[str, np.ndarray]:
        """Per-frame arrays worth keeping beside the frames (an emulator's RAM, object positions),
        stored as `extras/<key>` [T, ...]; called after `reset` and after every step."""
        return {}

    @classmethod
    def objects(cls, extras: dict[str, np.ndarray], env_id: str, shape: tuple[int, int]) -> np.ndarray | None:
        """Where the objects that matter are in each recorded frame, from the recording's `extras`: bool
        masks [T, h, w] at the environment's render size `shape`, or None (the default: unknown).
        Evaluation scores a model on these pixels too (`object_psnr`)."""
        return None

    def key_action(self, pressed: frozenset[str]) -> Any:
        """The environment's action for the set of keys held (names from `keys`)."""
        raise NotImplementedError(f"{self.name}: no key controls")

    def fps(self, env) -> float | None:
        """Frames per second of the recording, when the family knows it better than the
        environment's `metadata["render_fps"]`."""
        return None


def unwrapped(env):
    """The innermost environment, under Gymnasium's wrappers."""
    return getattr(env, "unwrapped", env)
