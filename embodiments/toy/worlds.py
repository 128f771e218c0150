"""The four toy worlds: procedural scenes with exact ground truth for any action sequence.

Each world is deterministic from a seed. `episode(seed, num_frames)` draws a plausible random action
stream (smooth motion with sudden switches) and renders it; `render_future(state, actions)` renders
the exact future of any state under any raw action stream of the world's modality, which is what the
benchmark compares rollouts against. Raw streams follow the modalities' formats (row t leads from
frame t−1 into frame t; for pose streams, row t is the pose of frame t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import quaternion
import torch

from astra_core.data import Episode
from astra_core.errors import AstraError
from astra_core.modality import raw_rows

from .render import Scene, look_at, render, yaw_pitch_pose

PRESET_FRAMES = 96  # every preset script is this long: the demo rolls out at least 96 frames
KEYS = ("W", "A", "S", "D", "UP", "DOWN", "LEFT", "RIGHT", "SPACE", "SHIFT")


def _switching_controls(rng: np.random.Generator, num_frames: int, draw, smooth: float = 0.35) -> np.ndarray:
    """Piecewise-constant targets that switch suddenly every 6–20 frames, followed with smoothing."""
    out, current, target, left = [], None, None, 0
    for _ in range(num_frames):
        if left == 0:
            target, left = np.asarray(draw(rng), dtype=np.float64), int(rng.integers(6, 21))
            current = target if current is None else current
        current = current + smooth * (target - current)
        out.append(current)
        left -= 1
    return np.array(out)


def _random_objects(rng: np.random.Generator, spheres: int, boxes: int, x_range, z_range, avoid_x: float = 0.0):
    def place(n):
        x = rng.uniform(*x_range, n)
        if avoid_x:
            x = np.where(np.abs(x) < avoid_x, np.sign(x + 1e-9) * (avoid_x + np.abs(x)), x)
        return x, rng.uniform(*z_range, n)

    sx, sz = place(spheres)
    r = rng.uniform(0.3, 0.9, spheres)
    bx, bz = place(boxes)
    size = rng.uniform(0.5, 2.0, (boxes, 3))
    lo = np.stack([bx, np.zeros(boxes), bz], 1)
    return Scene(
        sphere_centers=torch.tensor(np.stack([sx, r, sz], 1), dtype=torch.float32),
        sphere_radii=torch.tensor(r, dtype=torch.float32),
        sphere_colors=torch.tensor(rng.uniform(0.15, 0.95, (spheres, 3)), dtype=torch.float32),
        box_min=torch.tensor(lo, dtype=torch.float32),
        box_max=torch.tensor(lo + size, dtype=torch.float32),
        box_colors=torch.tensor(rng.uniform(0.15, 0.95, (boxes, 3)), dtype=torch.float32),
    )


class ToyWorld:
    """Base class: subclasses define the scene, the state, the policy and how actions move the state."""

    name = ""
    modality = ""
    embodiment = ""
    fps = 10.0

    def __init__(self, height: int = 64, width: int = 64):
        self.height, self.width = height, width

    # --- to implement --------------------------------------------------------------------------
    def scene(self, seed: int) -> Scene:
        raise NotImplementedError

    def initial_state(self, seed: int) -> dict:
        raise NotImplementedError

    def random_actions(self, rng: np.random.Generator, state: dict, num_frames: int):
        """A raw action stream of `num_frames` rows starting at `state` (row 0 is the start)."""
        raise NotImplementedError

    def advance(self, state: dict, actions) -> tuple[list[dict], dict]:
        """States after each action row, and the final state."""
        raise NotImplementedError

    def render_states(self, seed: int, states: list[dict]) -> torch.Tensor:
        raise NotImplementedError

    def presets(self) -> dict:
        return {}

    def preset_actions(self, name: str, state: dict):
        """The raw stream of preset `name` starting at `state` (row 0 is the start)."""
        presets = self.presets()
        if name not in presets:
            raise AstraError(f"{self.name}: unknown preset {name!r}; choose one of {sorted(presets)}")
        return self._preset_stream(presets[name], state)

    def _preset_stream(self, preset, state):
        raise NotImplementedError

    # --- interactive play ----------------------------------------------------------------------
    keys = KEYS  # the keys `astra play` accepts
    key_help = ""  # what they do

    def key_control(self, pressed: frozenset[str]):
        """One frame's control, in the form of a preset row, for the set of keys held (from KEYS)."""
        raise NotImplementedError

    def stream_for_keys(self, state: dict, pressed, num_frames: int):
        """The raw stream of `num_frames` frames with `pressed` held, from `state` (row 0 is `state`)."""
        pressed = frozenset(str(k).upper() for k in pressed)
        unknown = pressed - set(KEYS)
        if unknown:
            raise AstraError(f"{self.name}: unknown keys {sorted(unknown)}; use {list(KEYS)}")
        return self._preset_stream(self._repeat(self.key_control(pressed), num_frames), state)

    def _repeat(self, control, num_frames: int):
        return [control] * num_frames

    # --- shared --------------------------------------------------------------------------------
    def episode(self, seed: int, num_frames: int = 33, actions=None) -> Episode:
        """A rendered episode from the world's random policy (or from the given raw stream)."""
        state = self.initial_state(seed)
        if actions is None:
            actions = self.random_actions(np.random.default_rng(seed + 7919), state, num_frames)
        states, _ = self.advance(state, raw_rows(actions, 1, None))
        frames = self.render_states(seed, [state] + states)
        return Episode(
            self.embodiment,
            {self.modality: actions},
            frames=frames.permute(1, 0, 2, 3).contiguous(),
            fps=self.fps,
            source=f"toy:{self.name}:{seed}",
            meta={"world": self.name, "seed": seed, "initial_state": state},
        )

    def state_at(self, episode: Episode, frame: int) -> dict:
        """The world state at `frame` of an episode made by this world."""
        meta = getattr(episode, "meta", None) or {}
        if meta.get("world") != self.name or "initial_state" not in meta:
            made = f"world {meta['world']!r}" if meta.get("world") else f"{episode.source!r}"
            raise AstraError(f"{self.name}: state_at needs an episode this world made, not one of {made}")
        state = meta["initial_state"]
        if frame == 0:
            return state
        _, final = self.advance(state, raw_rows(episode.actions[self.modality], 1, frame + 1))
        return final

    def render_future(self, state: dict, actions) -> torch.Tensor:
        """Frames [3, T, H, W] in [-1, 1] for each row of `actions`, starting from `state`."""
        states, _ = self.advance(state, actions)
        return self.render_states(state["seed"], states).permute(1, 0, 2, 3).contiguous()


# ------------------------------------------------------------------------------------------------
# Free camera (camera_se3)
# ------------------------------------------------------------------------------------------------


def _camera_motion(forward: float, strafe: float, yaw: float, lift: float = 0.0) -> np.ndarray:
    """Motion in the camera's own frame (OpenCV axes): turn left by `yaw` about the up axis, then move."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # rotation about camera y (down): positive = left turn
    m[:3, 3] = [strafe, -lift, forward]
    return m


class FreeCameraWorld(ToyWorld):
    name = "free_camera"
    modality = "camera_se3"
    embodiment = "free_camera"

    def scene(self, seed):
        return _random_objects(np.random.default_rng(seed), 14, 10, (-14, 14), (-6, 30))

    def initial_state(self, seed):
        rng = np.random.default_rng(seed)
        return {"seed": seed, "pose": yaw_pitch_pose([rng.uniform(-2, 2), 1.4, -4.0], rng.uniform(-0.3, 0.3))}

    def random_actions(self, rng, state, num_frames):
        controls = _switching_controls(
            rng, num_frames, lambda r: [r.uniform(-0.05, 0.3), r.uniform(-0.08, 0.08), r.normal(0, 0.05)]
        )
        return self.poses_from_controls(state["pose"], controls)

    @staticmethod
    def poses_from_controls(start: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """Absolute camera-to-world poses: row 0 is `start`, row t applies controls[t] to row t−1."""
        poses = [np.asarray(start, dtype=np.float64)]
        for forward, strafe, yaw in controls[1:]:
            poses.append(poses[-1] @ _camera_motion(forward, strafe, yaw))
        return np.stack(poses)

    def _preset_stream(self, preset, state):
        return self.poses_from_controls(state["pose"], np.array([[0.0, 0.0, 0.0]] + list(preset)))

    key_help = "W/S forward/back, A/D strafe, LEFT/RIGHT turn, SHIFT faster"

    def key_control(self, pressed):
        fast = 2.0 if "SHIFT" in pressed else 1.0
        forward = 0.15 * fast * (("W" in pressed) - ("S" in pressed))
        strafe = 0.08 * fast * (("D" in pressed) - ("A" in pressed))
        return [forward, strafe, 0.04 * (("LEFT" in pressed) - ("RIGHT" in pressed))]

    def advance(self, state, actions):
        poses = np.asarray(actions, dtype=np.float64)
        states = [{"seed": state["seed"], "pose": p} for p in poses]
        return states, (states[-1] if states else state)

    def render_states(self, seed, states):
        return render(self.scene(seed), np.stack([s["pose"] for s in states]), self.height, self.width)

    def presets(self):
        """The paper's seven camera presets, as per-frame (forward m, strafe m, yaw rad) controls over
        `PRESET_FRAMES` frames."""
        v, w, n = 0.15, 0.04, PRESET_FRAMES
        return {
            "forward": [[v, 0, 0]] * n,
            "yaw_left": [[0, 0, w]] * n,
            "yaw_right": [[0, 0, -w]] * n,
            "forward_left": [[v, 0, w]] * n,
            "forward_right": [[v, 0, -w]] * n,
            "s_curve": [[v, 0, w]] * (n // 2) + [[v, 0.01, -w]] * (n - n // 2),
            "left_then_right": [[0, 0, w]] * (n // 2) + [[0, 0, -w]] * (n - n // 2),
        }


# ------------------------------------------------------------------------------------------------
# Car on a road (vehicle_pose)
# ------------------------------------------------------------------------------------------------


def _yaw_quat(yaw: np.ndarray) -> np.ndarray:
    """Quaternions (w, x, y, z) of rotations by `yaw` about the world up axis (y)."""
    return np.stack([np.cos(yaw / 2), 0 * yaw, np.sin(yaw / 2), 0 * yaw], -1)


class CarWorld(ToyWorld):
    """A car drives along a road lined with buildings; its camera sits 1.5 m up, looking ahead.
    Ego poses come as keyframes every `keyframe_every` frames and are interpolated per frame (linear
    translation, slerp rotation), like nuScenes' sweeps between keyframes."""

    name = "car"
    modality = "vehicle_pose"
    embodiment = "car"
    keyframe_every = 4

    def scene(self, seed):
        scene = _random_objects(np.random.default_rng(seed), 10, 18, (-16, 16), (-5, 60), avoid_x=5.0)
        scene.road_half_width = 3.5
        scene.ground_colors = ((0.42, 0.5, 0.33), (0.38, 0.46, 0.3))
        return scene

    def initial_state(self, seed):
        rng = np.random.default_rng(seed)
        return {"seed": seed, "x": rng.uniform(-1.5, 1.5), "z": -3.0, "yaw": 0.0}

    def random_actions(self, rng, state, num_frames):
        controls = _switching_controls(rng, num_frames, lambda r: [r.choice([0.0, 0.3, 0.5, 0.6]), r.normal(0, 0.02)])
        return self.poses_from_controls(state, controls)

    def poses_from_controls(self, state: dict, controls: np.ndarray) -> dict:
        """Per-frame ego poses {"translation", "rotation" (w, x, y, z)} from (speed, yaw rate) controls,
        sampled at keyframes and interpolated in between."""
        x, z, yaw = state["x"], state["z"], state["yaw"]
        keys = [(0, x, z, yaw)]
        for t, (speed, turn) in enumerate(controls[1:], start=1):
            yaw += turn
            x, z = x + speed * math.sin(yaw), z + speed * math.cos(yaw)
            if t % self.keyframe_every == 0 or t == len(controls) - 1:
                keys.append((t, x, z, yaw))
        return self.interpolate(keys, len(controls))

    @staticmethod
    def interpolate(keys, num_frames: int) -> dict:
        times = np.array([k[0] for k in keys], dtype=np.float64)
        trans = np.array([[k[1], 0.0, k[2]] for k in keys])
        quats = quaternion.from_float_array(_yaw_quat(np.array([k[3] for k in keys])))
        t = np.arange(num_frames, dtype=np.float64)
        out_t = np.stack([np.interp(t, times, trans[:, i]) for i in range(3)], 1)
        out_q = np.empty(num_frames, dtype=quaternion.quaternion)
        seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, max(len(keys) - 2, 0))
        for i, (frame, k) in enumerate(zip(t, seg)):
            if len(keys) == 1:
                out_q[i] = quats[0]
            else:
                out_q[i] = quaternion.slerp(quats[k], quats[k + 1], times[k], times[k + 1], frame)
        return {"translation": out_t, "rotation": quaternion.as_float_array(out_q)}

    def _preset_stream(self, preset, state):
        return self.poses_from_controls(state, np.array([[0.0, 0.0]] + list(preset)))

    key_help = "W accelerate, S brake, nothing held: cruise; A/LEFT steer left, D/RIGHT steer right"

    def key_control(self, pressed):
        speed = 0.0 if "S" in pressed else (0.5 if "W" in pressed else 0.3)
        left = bool(pressed & {"A", "LEFT"}) - bool(pressed & {"D", "RIGHT"})
        return [speed, 0.05 * left]

    def advance(self, state, actions):
        t = np.asarray(actions["translation"], dtype=np.float64)
        q = np.asarray(actions["rotation"], dtype=np.float64)
        yaw = 2 * np.arctan2(q[:, 2], q[:, 0])
        states = [{"seed": state["seed"], "x": t[i, 0], "z": t[i, 2], "yaw": float(yaw[i])} for i in range(len(t))]
        return states, (states[-1] if states else state)

    def render_states(self, seed, states):
        poses = [yaw_pitch_pose([s["x"], 1.5, s["z"]], s["yaw"], -0.08) for s in states]
        return render(self.scene(seed), np.stack(poses), self.height, self.width)

    def presets(self):
        """Per-frame (speed m, yaw rate rad) controls over `PRESET_FRAMES` frames."""
        return {
            "straight": [[0.5, 0.0]] * 96,
            "turn": [[0.45, 0.0]] * 24 + [[0.4, 0.05]] * 48 + [[0.45, 0.0]] * 24,
            "stop": [[0.5, 0.0]] * 32 + [[max(0.0, 0.5 - 0.02 * i), 0.0] for i in range(32)] + [[0.0, 0.0]] * 32,
        }


# ------------------------------------------------------------------------------------------------
# Tabletop arm (robot_ee)
# ------------------------------------------------------------------------------------------------

BLOCK = 0.12  # block edge, metres
WORKSPACE = np.array([[-0.45, 0.02, -0.3], [0.45, 0.5, 0.35]])
ARM_BASE = np.array([0.0, 0.45, 0.75])


@dataclass
class _ArmPhysics:
    """Moves the end effector; grabs a block under a closing gripper, carries it, drops it on
    opening; a low end effector pushes blocks out of its way."""

    reach: float = 0.07

    def step(self, state: dict, row: np.ndarray) -> dict:
        ee = np.clip(state["ee"] + row[:3], *WORKSPACE)
        grip = float(row[6] > 0.5)
        blocks = state["blocks"].copy()
        held = state["held"]
        if grip and held < 0:
            tops = blocks + [0, BLOCK, 0]
            dist = np.linalg.norm(tops - ee, axis=1)
            if dist.min() < self.reach:
                held = int(dist.argmin())
        if not grip and held >= 0:
            blocks[held, 1] = 0.0
            held = -1
        if held >= 0:
            blocks[held] = ee - [0, BLOCK, 0]
        elif ee[1] < BLOCK + 0.02:
            for i in range(len(blocks)):
                d = blocks[i, [0, 2]] - ee[[0, 2]]
                gap = BLOCK * 0.5 + 0.03 - np.abs(d).max()
                if gap > 0:
                    axis = int(np.abs(d).argmax())
                    blocks[i, [0, 2][axis]] += np.sign(d[axis] + 1e-9) * gap
        return {"seed": state["seed"], "ee": ee, "grip": grip, "blocks": blocks, "held": held}


class TabletopArmWorld(ToyWorld):
    name = "tabletop_arm"
    modality = "robot_ee"
    embodiment = "tabletop_arm"
    physics = _ArmPhysics()

    def scene(self, seed):
        scene = Scene(checker_size=0.1, ground_colors=((0.72, 0.62, 0.48), (0.66, 0.56, 0.43)), fov_degrees=55)
        scene.fog_distance = 30.0
        return scene

    def initial_state(self, seed):
        rng = np.random.default_rng(seed)
        blocks = np.stack([rng.uniform(-0.35, 0.35, 3), np.zeros(3), rng.uniform(-0.2, 0.25, 3)], 1)
        return {"seed": seed, "ee": np.array([0.0, 0.25, 0.0]), "grip": 0.0, "blocks": blocks, "held": -1}

    def random_actions(self, rng, state, num_frames):
        """Seek targets that switch suddenly: above a block, low beside it (a push), or anywhere;
        the gripper closes on reaching a block's top and opens again later."""
        raw = np.zeros((num_frames, 7))
        target, left, grip = state["ee"], 0, 0.0
        for t in range(1, num_frames):
            if left == 0:
                left = int(rng.integers(6, 16))
                block = state["blocks"][int(rng.integers(len(state["blocks"])))]
                choice = rng.random()
                if choice < 0.4:
                    target = block + [0, BLOCK + 0.01, 0]
                elif choice < 0.7:
                    target = block + [rng.choice([-1, 1]) * 0.12, 0.03, 0]
                else:
                    target = rng.uniform(*WORKSPACE)
            delta = np.clip(0.3 * (target - state["ee"]), -0.03, 0.03)
            if np.linalg.norm(target - state["ee"]) < 0.03 and target[1] > BLOCK:
                grip = 1.0
            elif rng.random() < 0.05:
                grip = 0.0
            raw[t, :3], raw[t, 6] = delta, grip
            state = self.physics.step(state, raw[t])
            left -= 1
        return raw

    def _preset_stream(self, preset, state):
        return np.array([[0.0] * 7] + list(preset))

    key_help = "W/S away/towards the camera, A/D left/right, UP/DOWN raise/lower, SPACE hold the gripper closed"

    def key_control(self, pressed):
        dx = 0.012 * (("D" in pressed) - ("A" in pressed))
        dz = 0.012 * (("W" in pressed) - ("S" in pressed))
        dy = 0.01 * (("UP" in pressed) - ("DOWN" in pressed))
        return [dx, dy, dz, 0.0, 0.0, 0.0, 1.0 if "SPACE" in pressed else 0.0]

    def advance(self, state, actions):
        states = []
        for row in np.asarray(actions, dtype=np.float64):
            state = self.physics.step(state, row)
            states.append(state)
        return states, state

    def render_states(self, seed, states):
        base = self.scene(seed)
        camera = look_at([0.0, 0.75, -0.8], [0.0, 0.05, 0.05])
        frames = []
        colors = torch.tensor([[0.85, 0.2, 0.2], [0.2, 0.45, 0.85], [0.95, 0.8, 0.2]])
        for s in states:
            lo = torch.tensor(s["blocks"] - [BLOCK / 2, 0, BLOCK / 2], dtype=torch.float32)
            links = np.linspace(ARM_BASE, s["ee"], 6)[:-1]
            grip_color = [0.25, 0.25, 0.25] if s["grip"] > 0.5 else [0.85, 0.85, 0.85]
            centers = torch.tensor(np.concatenate([links, s["ee"][None]]), dtype=torch.float32)
            radii = torch.tensor([0.035] * 5 + [0.04])
            cols = torch.tensor([[0.55, 0.55, 0.6]] * 5 + [grip_color], dtype=torch.float32)
            scene = base.with_objects(spheres=(centers, radii, cols), boxes=(lo, lo + BLOCK, colors[: len(lo)]))
            frames.append(render(scene, camera[None], self.height, self.width))
        return torch.cat(frames)

    def presets(self):
        """Per-frame raw rows [dx, dy, dz, 0, 0, 0, gripper] over `PRESET_FRAMES` frames."""

        def move(dx=0.0, dy=0.0, dz=0.0, grip=0.0):
            return [dx, dy, dz, 0, 0, 0, grip]

        reach = [move(dx=0.012)] * 24 + [move(dz=0.012)] * 24 + [move(dx=-0.012)] * 24 + [move(dz=-0.012)] * 24
        push = [move(dy=-0.01)] * 20 + [move(dx=0.012)] * 38 + [move(dx=-0.012)] * 38
        grip = [move(dy=-0.01)] * 20 + [move(grip=1)] * 4 + [move(dy=0.01, grip=1)] * 24 + [move(dx=0.01, grip=1)] * 24
        grip += [move(dy=-0.01, grip=1)] * 20 + [move()] * 4
        return {"reach": reach, "push": push, "grip": grip}


# ------------------------------------------------------------------------------------------------
# Keyboard game (discrete_cmd)
# ------------------------------------------------------------------------------------------------


class KeyboardGameWorld(ToyWorld):
    """W/S forward/back, A/D strafe, LEFT/RIGHT turn, UP/DOWN look, SPACE jump, SHIFT run, mouse look."""

    name = "keyboard_game"
    modality = "discrete_cmd"
    embodiment = "keyboard_game"
    step_size, turn, look, jump, gravity, eye = 0.18, 0.06, 0.04, 0.28, 0.05, 1.3

    def scene(self, seed):
        scene = _random_objects(np.random.default_rng(seed + 1), 16, 12, (-15, 15), (-15, 15))
        scene.ground_colors = ((0.55, 0.5, 0.7), (0.48, 0.44, 0.62))
        scene.checker_size = 2.0
        return scene

    def initial_state(self, seed):
        rng = np.random.default_rng(seed)
        return {
            "seed": seed,
            "pos": np.array([rng.uniform(-3, 3), 0.0, rng.uniform(-12, -8)]),
            "yaw": rng.uniform(-0.4, 0.4),
            "pitch": 0.0,
            "vy": 0.0,
        }

    def random_actions(self, rng, state, num_frames):
        combos = [
            (),
            ("W",),
            ("W",),
            ("W", "SHIFT"),
            ("S",),
            ("A",),
            ("D",),
            ("LEFT",),
            ("RIGHT",),
            ("W", "LEFT"),
            ("W", "RIGHT"),
            ("SPACE",),
            ("W", "SPACE"),
            ("UP",),
            ("DOWN",),
        ]
        keys, mouse, t = [], np.zeros((num_frames, 2)), 0
        while len(keys) < num_frames:
            combo, hold = combos[int(rng.integers(len(combos)))], int(rng.integers(4, 16))
            keys.extend([list(combo)] * hold)
            if rng.random() < 0.3:
                mouse[t : t + hold] = rng.normal(0, 4, 2)
            t += hold
        keys = keys[:num_frames]
        keys[0] = []
        mouse[0] = 0
        return {"keys": keys, "mouse": mouse}

    def _preset_stream(self, preset, state):
        keys = [[]] + list(preset["keys"])
        return {"keys": keys, "mouse": np.zeros((len(keys), 2))}

    key_help = "W/A/S/D walk, LEFT/RIGHT turn, UP/DOWN look, SPACE jump, SHIFT run"

    def key_control(self, pressed):
        return sorted(pressed)

    def _repeat(self, control, num_frames):
        return {"keys": [control] * num_frames}

    def advance(self, state, actions):
        keys, mouse = actions["keys"], actions.get("mouse")
        mouse = np.zeros((len(keys), 2)) if mouse is None else np.asarray(mouse, dtype=np.float64)
        states = []
        for pressed, (mdx, mdy) in zip(keys, mouse):
            state = self._step(state, {str(k).upper() for k in pressed}, mdx, mdy)
            states.append(state)
        return states, state

    def _step(self, s: dict, pressed: set, mdx: float, mdy: float) -> dict:
        unknown = pressed - set(KEYS)
        if unknown:
            raise AstraError(f"keyboard_game: unknown keys {sorted(unknown)}")
        yaw = s["yaw"] + self.turn * (("LEFT" in pressed) - ("RIGHT" in pressed)) - 0.004 * mdx
        pitch = np.clip(s["pitch"] + self.look * (("UP" in pressed) - ("DOWN" in pressed)) - 0.004 * mdy, -0.5, 0.5)
        speed = self.step_size * (2.0 if "SHIFT" in pressed else 1.0)
        fwd = ("W" in pressed) - ("S" in pressed)
        side = ("D" in pressed) - ("A" in pressed)
        heading = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        right = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])
        pos = s["pos"] + speed * (fwd * heading + side * right)
        vy = s["vy"]
        if "SPACE" in pressed and pos[1] <= 0.0:
            vy = self.jump
        pos[1] = max(0.0, pos[1] + vy)
        vy = 0.0 if pos[1] == 0.0 and vy <= 0 else vy - self.gravity
        return {"seed": s["seed"], "pos": pos, "yaw": float(yaw), "pitch": float(pitch), "vy": float(vy)}

    def render_states(self, seed, states):
        poses = [yaw_pitch_pose(s["pos"] + [0, self.eye, 0], s["yaw"], s["pitch"]) for s in states]
        return render(self.scene(seed), np.stack(poses), self.height, self.width)

    def presets(self):
        """Per-frame pressed keys over `PRESET_FRAMES` frames."""
        return {
            "wwww": {"keys": [["W"]] * 96},
            "wasd": {"keys": [["W"]] * 24 + [["A"]] * 24 + [["S"]] * 24 + [["D"]] * 24},
            "turn_and_jump": {
                "keys": [["W", "LEFT"]] * 32 + [["W", "SPACE"]] * 16 + [["W", "RIGHT"]] * 32 + [["W"]] * 16
            },
        }


WORLDS = (FreeCameraWorld, CarWorld, TabletopArmWorld, KeyboardGameWorld)
