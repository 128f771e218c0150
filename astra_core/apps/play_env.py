"""`astra play --env ENV_ID`: the model beside the real environment, driven by the same keys.

`EnvWorld` wraps a Gymnasium environment in the world protocol `PlaySession` drives (keys, a start
state, a raw stream for held keys, advancing): each step, the held keys become the environment's
action through its adapter's `key_action` (`astra_core.envs.EnvAdapter`), the environment takes it
for the step's frames, and the model gets the action stream the adapter measured (for a pose stream,
the pose the environment really reached). The session shows the model's frames on the left and the
environment's on the right.
"""

from __future__ import annotations

from typing import Any

import torch

from astra_core.apps.record import choose_adapter, env_fps, fit_frames, make_env, render_rgb
from astra_core.data.video import uint8_to_frames
from astra_core.errors import AstraError
from astra_core.modality import raw_rows


class EnvWorld:
    """One Gymnasium environment as a playable world (frames resized like `astra record`'s)."""

    side_by_side = True

    def __init__(
        self,
        env_id: str,
        size: tuple[int, int],
        fit: str = "letterbox",
        env_kwargs: dict | None = None,
        stream: str = "auto",
    ):
        """`size`, `fit`, `env_kwargs` (gymnasium.make's keywords) and `stream` ("auto", "pose" or
        "space") as the model's training data was recorded with (`astra record`)."""
        self.name = env_id
        self.env = make_env(env_id, env_kwargs)
        try:
            self.adapter = choose_adapter(self.env, stream)
        except BaseException:
            self.env.close()
            raise
        if not self.adapter.keys:
            self.env.close()
            raise AstraError(
                f"{env_id}: its adapter {self.adapter.name!r} defines no key controls, so it cannot be played"
            )
        self.modality = self.adapter.modality
        self.keys = tuple(self.adapter.keys)
        self.key_help = self.adapter.key_help
        self.size, self.fit = size, fit
        self.fps = env_fps(self.env, self.adapter)
        self._pending: list[dict] = []

    def _frame(self) -> torch.Tensor:
        return uint8_to_frames(fit_frames(render_rgb(self.env, self.name)[None], self.size, self.fit))[:, 0]

    # --- the world protocol PlaySession drives ------------------------------------------------
    def initial_state(self, seed: int) -> dict[str, Any]:
        self.env.reset(seed=seed)
        self.env.action_space.seed(seed)
        return {"frame": self._frame(), "row": self.adapter.start(self.env), "done": False}

    def render_states(self, seed: int, states: list[dict]) -> torch.Tensor:
        return torch.stack([s["frame"] for s in states])

    def stream_for_keys(self, state: dict, pressed, num_frames: int):
        """Takes the environment `num_frames` steps with the keys' action; the raw stream (row 0: the
        state's row) is what the adapter measured, and the frames wait for `advance`."""
        action = self.adapter.key_action(frozenset(str(k).upper() for k in pressed))
        rows, self._pending = [state["row"]], []
        done = state["done"]
        for _ in range(num_frames):
            if not done:
                _, _, term, trunc, _ = self.env.step(action)
                done = bool(term or trunc)
                row = self.adapter.row(self.env, action)
            else:  # the episode is over: the picture stands still, and the stream says so
                row = self.adapter.start(self.env)
            rows.append(row)
            self._pending.append({"frame": self._frame(), "row": row, "done": done})
        return self.adapter.stack(rows)

    def start_stream(self, state: dict):
        """The raw stream of the start frame alone (for `WorldModel.reset`), without stepping."""
        return raw_rows(self.adapter.stack([state["row"]]), 0, 1)

    def advance(self, state: dict, rows) -> tuple[list[dict], dict]:
        states = self._pending or [state]
        return states, states[-1]

    def truth(self, states: list[dict]) -> torch.Tensor:
        """The environment's frames of `states` as a clip [3, n, H, W]."""
        return torch.stack([s["frame"] for s in states], dim=1)

    def close(self) -> None:
        self.env.close()
