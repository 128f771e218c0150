"""The built-in environment adapters (`astra_core.envs.EnvAdapter`), registered by this plugin.

By action space (`stream = "space"`):
- `AtariActions`: an ALE game's `Discrete` actions -> `atari_action`, each by its meaning, so every
  game shares ALE's 18-action vocabulary; keeps the console's RAM per frame (`extras/ram`); records
  with `repeat_action_probability=0` unless told otherwise, so a replay is exact.
- `DiscreteActions`: any `Discrete(n)`, n ≤ 32 -> `discrete_action`.
- `BoxActions`: a bounded `Box` of ≤ 16 dimensions -> `box_action`, scaled to [−1, 1].

By pose (`stream = "pose"`), one small adapter per environment family:
- `HighwayEgoPose`: highway-env's ego vehicle -> `vehicle_pose` (nuScenes' convention: x forward,
  z up); records at 5 policy steps per second on a square 128 × 128 screen unless told otherwise.
- `BulletArmPose`: the end-effector of `astra/BulletArm-v0` -> `robot_ee` (measured position and
  rotation change per step, and the gripper state).
"""

from __future__ import annotations

import os

import numpy as np
from astra_experts.categorical import ATARI_MEANINGS, DISCRETE_SLOTS
from astra_experts.vector import BOX_DIMS, scale_to_unit

from astra_core.envs import EnvAdapter, unwrapped
from astra_core.errors import ConfigError

INSTALL_HINT = 'pip install "astra-world[gym]"'


def _is_ale(env) -> bool:
    u = unwrapped(env)
    return hasattr(u, "ale") and hasattr(u, "get_action_meanings")


def _space(env, kind: str) -> bool:
    from gymnasium import spaces

    return isinstance(env.action_space, getattr(spaces, kind))


class AtariActions(EnvAdapter):
    name = "ale"
    stream = "space"
    modality = "atari_action"
    embodiment = "atari"
    keys = ("UP", "DOWN", "LEFT", "RIGHT", "SPACE")
    key_help = "arrows move, SPACE fires (each game takes the combinations it knows)"

    @classmethod
    def prepare(cls, env_id):
        if not env_id.startswith("ALE/"):
            return {}
        try:
            import ale_py
        except ImportError:
            raise ConfigError(f"{env_id}: ALE games need ale-py: {INSTALL_HINT}") from None
        import gymnasium

        gymnasium.register_envs(ale_py)
        return {"repeat_action_probability": 0.0}

    @classmethod
    def matches(cls, env):
        return _is_ale(env) and _space(env, "Discrete")

    def __init__(self, env):
        self.meanings = list(unwrapped(env).get_action_meanings())
        unknown = [m for m in self.meanings if m not in ATARI_MEANINGS]
        if unknown:
            raise ConfigError(f"the ALE game's actions {unknown} are not in ALE's full set {list(ATARI_MEANINGS)}")
        self.index = [ATARI_MEANINGS.index(m) for m in self.meanings]

    def key_action(self, pressed):
        """ALE names its actions UP, RIGHT, UPRIGHT, UPFIRE, …: the held keys' name, or the nearest one
        the game has (dropping the vertical, then the horizontal part), or NOOP."""
        vertical = "UP" if "UP" in pressed else ("DOWN" if "DOWN" in pressed else "")
        horizontal = "RIGHT" if "RIGHT" in pressed else ("LEFT" if "LEFT" in pressed else "")
        fire = "FIRE" if "SPACE" in pressed else ""
        for name in (vertical + horizontal + fire, horizontal + fire, vertical + fire, fire, horizontal, vertical):
            if name and name in self.meanings:
                return self.meanings.index(name)
        return self.meanings.index("NOOP") if "NOOP" in self.meanings else 0

    def start(self, env):
        return 0  # NOOP; row 0 is ignored by the modality

    def row(self, env, action):
        return self.index[int(action)]

    def meta(self, env):
        return {"action_meanings": self.meanings}

    def extras(self, env):
        return {"ram": unwrapped(env).ale.getRAM().copy()}

    @classmethod
    def objects(cls, extras, env_id, shape):
        """Breakout's ball and paddle, from the RAM (fitted on recorded screens: the ball's centre at
        x = RAM[99] − 48.5, y = RAM[101] + 11, RAM[101] = 0 while no ball is in play; the paddle's left
        edge at RAM[72] − 47, 16 pixels wide on rows 189 – 194), each box a few pixels larger than the
        object so a slightly misplaced prediction is still scored there."""
        if not env_id.startswith("ALE/Breakout") or "ram" not in extras or tuple(shape) != (210, 160):
            return None
        ram = extras["ram"].astype(int)
        masks = np.zeros((len(ram), *shape), dtype=bool)
        for t, r in enumerate(ram):
            if 0 < r[101] and r[101] + 11 < 196:
                cx, cy = r[99] - 48.5, r[101] + 11
                masks[t, max(0, int(cy - 5)) : int(cy + 6), max(0, int(cx - 3)) : int(cx + 4)] = True
            left = r[72] - 47
            masks[t, 187:197, max(0, left - 2) : max(0, left + 18)] = True
        return masks

    def fps(self, env):
        skip = getattr(unwrapped(env), "_frameskip", 4)  # ALE runs at 60 Hz; one frame per `frameskip`
        return 60.0 / skip if isinstance(skip, int) and skip > 0 else None


class DiscreteActions(EnvAdapter):
    name = "discrete"
    stream = "space"
    modality = "discrete_action"
    embodiment = "gym_discrete"

    @classmethod
    def matches(cls, env):
        return _space(env, "Discrete")

    def __init__(self, env):
        n = int(env.action_space.n)
        if n > DISCRETE_SLOTS:
            raise ConfigError(
                f"the action space Discrete({n}) has more than the {DISCRETE_SLOTS} actions `discrete_action` "
                "holds; register a categorical modality of its own (subclass astra_experts.categorical."
                "CategoricalAction) and an adapter for it"
            )
        self.n = n
        self.start_index = int(getattr(env.action_space, "start", 0))

    def start(self, env):
        return 0

    def row(self, env, action):
        return int(action) - self.start_index

    def meta(self, env):
        u = unwrapped(env)
        meanings = None
        if hasattr(u, "get_action_meanings"):
            meanings = list(u.get_action_meanings())
        elif hasattr(getattr(u, "action_type", None), "actions"):  # highway-env's meta-actions
            meanings = [str(v) for _, v in sorted(u.action_type.actions.items())]
        return {"action_meanings": meanings or [f"action_{i}" for i in range(self.n)]}


class BoxActions(EnvAdapter):
    name = "box"
    stream = "space"
    modality = "box_action"
    embodiment = "gym_box"

    @classmethod
    def matches(cls, env):
        return _space(env, "Box")

    def __init__(self, env):
        space = env.action_space
        self.shape = tuple(space.shape)
        self.low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(space.high, dtype=np.float64).reshape(-1)
        if len(self.low) > BOX_DIMS:
            raise ConfigError(
                f"the action space Box{self.shape} has {len(self.low)} dimensions; `box_action` holds at most "
                f"{BOX_DIMS} (register a modality of its own for this body)"
            )
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ConfigError(
                f"the action space Box{self.shape} is unbounded (low {self.low.tolist()}, high {self.high.tolist()}); "
                "`box_action` scales each dimension by its bounds"
            )

    def start(self, env):
        return np.zeros(len(self.low))

    def row(self, env, action):
        return scale_to_unit(np.asarray(action).reshape(-1), self.low, self.high)

    def meta(self, env):
        return {"action_low": self.low.tolist(), "action_high": self.high.tolist()}


# ---- pose adapters ------------------------------------------------------------------------------

HIGHWAY_IDS = ("highway", "merge", "roundabout", "intersection", "parking", "racetrack", "two-way", "exit", "u-turn")


def _yaw_quaternion(yaw: float) -> np.ndarray:
    """(w, x, y, z) of a rotation by `yaw` about the z axis (up)."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


class HighwayEgoPose(EnvAdapter):
    """highway-env draws its road in screen coordinates (x along the road, y pointing down the
    screen), so the pose is (x, −y, 0) metres with yaw −heading about z."""

    name = "highway"
    stream = "pose"
    modality = "vehicle_pose"
    embodiment = "highway"
    keys = ("UP", "DOWN", "LEFT", "RIGHT")
    key_help = "UP faster, DOWN slower, LEFT/RIGHT change lane, nothing held: keep lane and speed"

    @classmethod
    def prepare(cls, env_id):
        if not env_id.startswith(HIGHWAY_IDS):
            return {}
        try:
            import highway_env
        except ImportError:
            raise ConfigError(f"{env_id}: highway-env's environments need highway-env: {INSTALL_HINT}") from None
        import gymnasium

        gymnasium.register_envs(highway_env)
        if os.environ.get("SDL_VIDEODRIVER", "dummy") == "dummy":
            # Headless rendering: pygame's "dummy" video driver hands back black frames; "offscreen" draws.
            os.environ["SDL_VIDEODRIVER"] = "offscreen"
        # One frame per policy step: at highway-env's default of 1 per second the car moves ~25 m between
        # frames; and a square screen instead of its 600 × 150 strip.
        screen = {"screen_width": 128, "screen_height": 128, "scaling": 3.0}
        return {"config": {"policy_frequency": 5, "simulation_frequency": 15, **screen}}

    @classmethod
    def matches(cls, env):
        u = unwrapped(env)
        return type(u).__module__.startswith("highway_env") and hasattr(u, "vehicle")

    def __init__(self, env):
        actions = getattr(getattr(unwrapped(env), "action_type", None), "actions", None)
        self.meta_actions = {str(v): k for k, v in actions.items()} if isinstance(actions, dict) else {}

    def key_action(self, pressed):
        """highway-env's meta-actions (its default `DiscreteMetaAction` space)."""
        if not self.meta_actions:
            raise ConfigError("highway-env: key controls need the DiscreteMetaAction action space")
        wanted = "IDLE"
        for key, name in (("LEFT", "LANE_LEFT"), ("RIGHT", "LANE_RIGHT"), ("UP", "FASTER"), ("DOWN", "SLOWER")):
            if key in pressed:
                wanted = name
                break
        return self.meta_actions.get(wanted, self.meta_actions.get("IDLE", 1))

    def _pose(self, env) -> tuple[np.ndarray, np.ndarray]:
        v = unwrapped(env).vehicle
        x, y = (float(c) for c in v.position)
        return np.array([x, -y, 0.0]), _yaw_quaternion(-float(v.heading))

    def start(self, env):
        return self._pose(env)

    def row(self, env, action):
        return self._pose(env)

    def stack(self, rows):
        return {"translation": np.stack([r[0] for r in rows]), "rotation": np.stack([r[1] for r in rows])}

    def meta(self, env):
        return {"pose_convention": "x forward along the road, z up; highway-env's (x, y, heading) as (x, -y, -heading)"}

    def fps(self, env):
        config = getattr(unwrapped(env), "config", {})
        return float(config["policy_frequency"]) if "policy_frequency" in config else None


class BulletArmPose(EnvAdapter):
    """Per step: the measured end-effector position change (metres, world frame), its rotation change
    as axis-angle (world frame), and the gripper state (0 open, 1 closed)."""

    name = "bullet_arm"
    stream = "pose"
    modality = "robot_ee"
    embodiment = "bullet_arm"
    keys = ("W", "A", "S", "D", "UP", "DOWN", "SPACE")
    key_help = "W/S away/towards the camera, A/D left/right, UP/DOWN raise/lower, SPACE closes the gripper"

    @classmethod
    def prepare(cls, env_id):
        from .arm import ENV_ID, register_arm_env

        if env_id != ENV_ID:
            return {}
        try:
            import pybullet  # noqa: F401
        except ImportError:
            raise ConfigError(f"{env_id}: needs pybullet: {INSTALL_HINT}") from None
        register_arm_env()
        return {}

    @classmethod
    def matches(cls, env):
        u = unwrapped(env)
        return hasattr(u, "end_effector_pose") and hasattr(u, "gripper")

    def __init__(self, env):
        self.previous: np.ndarray | None = None

    def key_action(self, pressed):
        """The camera looks along −x: W moves the tool away from it (−x), A to its left (−y)."""
        dx = ("S" in pressed) - ("W" in pressed)
        dy = ("D" in pressed) - ("A" in pressed)
        dz = ("UP" in pressed) - ("DOWN" in pressed)
        return np.array([dx, dy, dz, 1.0 if "SPACE" in pressed else -1.0], dtype=np.float32)

    def start(self, env):
        self.previous = unwrapped(env).end_effector_pose()
        return np.zeros(7)

    def row(self, env, action):
        pose = unwrapped(env).end_effector_pose()
        delta = _rotation_delta(self.previous[3:], pose[3:])
        out = np.concatenate([pose[:3] - self.previous[:3], delta, [float(unwrapped(env).gripper)]])
        self.previous = pose
        return out

    def fps(self, env):
        return float(unwrapped(env).metadata.get("render_fps", 10))


def _rotation_delta(q0_xyzw: np.ndarray, q1_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle of R1 · R0ᵀ (the rotation that takes orientation 0 to orientation 1, world frame)."""
    import quaternion

    q0 = quaternion.quaternion(q0_xyzw[3], *q0_xyzw[:3])
    q1 = quaternion.quaternion(q1_xyzw[3], *q1_xyzw[:3])
    return quaternion.as_rotation_vector(q1 * q0.conjugate())


ADAPTERS: tuple[type[EnvAdapter], ...] = (HighwayEgoPose, BulletArmPose, AtariActions, DiscreteActions, BoxActions)
