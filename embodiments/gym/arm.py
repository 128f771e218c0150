"""A small pybullet arm world as a Gymnasium environment: `astra/BulletArm-v0`.

A KUKA iiwa (pybullet's own model) stands at a table with two cubes on it; a fixed camera looks at
the table from the front and above, rendered by pybullet's CPU renderer (no display, no GPU).

- Action: Box(4) in [−1, 1]: the end-effector's target moves by (dx, dy, dz) · `step_size` metres,
  and the fourth value is a gripper command kept as a state (> 0: closed). The iiwa model has no
  fingers, so the gripper is a recorded signal only; the arm pushes the cubes.
- Observation: the end-effector pose, [x, y, z, qx, qy, qz, qw] in the world frame.
- `end_effector_pose()` gives the same pose, which the `robot_ee` adapter records.
- `save_state()` / `restore_state(token)` wrap pybullet's in-memory state snapshots, so a replay of
  the same actions from a saved state gives the same frames.

Frames are rendered at `render_size` (default 64) straight from the simulator. Needs `pybullet`
(`pip install "astra-world[gym]"`).
"""

from __future__ import annotations

import numpy as np

WORKSPACE_LOW = np.array([0.35, -0.25, 0.05])
WORKSPACE_HIGH = np.array([0.75, 0.25, 0.45])
EE_LINK = 6
DOWN = (0.0, 1.0, 0.0, 0.0)  # quaternion (x, y, z, w): the tool pointing down


def _gym():
    import gymnasium

    return gymnasium


def make_arm_env_class():
    """The environment class, built on first use so that importing this module needs neither
    gymnasium nor pybullet."""
    gymnasium = _gym()
    from gymnasium import spaces

    class BulletArm(gymnasium.Env):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

        def __init__(self, render_mode: str = "rgb_array", render_size: int = 64, step_size: float = 0.03):
            import pybullet as p
            import pybullet_data

            if render_mode != "rgb_array":
                raise ValueError(f"astra/BulletArm-v0 renders 'rgb_array' only, not {render_mode!r}")
            self.render_mode = render_mode
            self.size = int(render_size)
            self.step_size = float(step_size)
            self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(7,), dtype=np.float64)
            self.p = p
            self.client = p.connect(p.DIRECT)
            p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
            p.setGravity(0, 0, -9.81, physicsClientId=self.client)
            p.loadURDF("plane.urdf", physicsClientId=self.client)
            p.loadURDF("table/table.urdf", [0.55, 0.0, -0.625], physicsClientId=self.client)
            self.robot = p.loadURDF(
                "kuka_iiwa/model.urdf", [0.0, 0.0, 0.0], useFixedBase=True, physicsClientId=self.client
            )
            self.cubes = [
                p.loadURDF("cube_small.urdf", [0.55, 0.0, 0.03], globalScaling=1.6, physicsClientId=self.client)
                for _ in range(2)
            ]
            p.changeVisualShape(self.cubes[0], -1, rgbaColor=[0.9, 0.2, 0.2, 1], physicsClientId=self.client)
            p.changeVisualShape(self.cubes[1], -1, rgbaColor=[0.2, 0.4, 0.9, 1], physicsClientId=self.client)
            self.view = p.computeViewMatrix([1.3, 0.0, 1.0], [0.4, 0.0, 0.2], [0, 0, 1])
            self.projection = p.computeProjectionMatrixFOV(50, 1.0, 0.05, 5.0)
            self.target = np.zeros(3)
            self.gripper = 0.0

        # ---- state --------------------------------------------------------------------------------

        def end_effector_pose(self) -> np.ndarray:
            state = self.p.getLinkState(self.robot, EE_LINK, computeForwardKinematics=True, physicsClientId=self.client)
            return np.concatenate([np.asarray(state[4]), np.asarray(state[5])])

        def save_state(self):
            return (self.p.saveState(physicsClientId=self.client), self.target.copy(), self.gripper)

        def restore_state(self, token) -> None:
            state, target, gripper = token
            self.p.restoreState(state, physicsClientId=self.client)
            self.target, self.gripper = target.copy(), gripper

        # ---- gymnasium ----------------------------------------------------------------------------

        def reset(self, *, seed: int | None = None, options=None):
            super().reset(seed=seed)
            p, rng = self.p, self.np_random
            for j, angle in enumerate([0.0, 0.5, 0.0, -1.6, 0.0, 1.0, 0.0]):
                p.resetJointState(self.robot, j, angle, physicsClientId=self.client)
            for cube in self.cubes:
                xy = rng.uniform([0.45, -0.18], [0.68, 0.18])
                yaw = rng.uniform(-np.pi, np.pi)
                p.resetBasePositionAndOrientation(
                    cube, [xy[0], xy[1], 0.03], p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=self.client
                )
            self.target = rng.uniform(WORKSPACE_LOW + [0.05, 0.05, 0.1], WORKSPACE_HIGH - [0.05, 0.05, 0.1])
            self.gripper = 0.0
            for _ in range(60):  # settle the arm at its first target
                self._drive()
            return self.end_effector_pose(), {}

        def _drive(self) -> None:
            p = self.p
            joints = p.calculateInverseKinematics(
                self.robot, EE_LINK, self.target.tolist(), DOWN, maxNumIterations=50, physicsClientId=self.client
            )
            for j in range(7):
                p.setJointMotorControl2(
                    self.robot, j, p.POSITION_CONTROL, joints[j], force=300, physicsClientId=self.client
                )
            p.stepSimulation(physicsClientId=self.client)

        def step(self, action):
            a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
            self.target = np.clip(self.target + a[:3] * self.step_size, WORKSPACE_LOW, WORKSPACE_HIGH)
            self.gripper = 1.0 if a[3] > 0 else 0.0
            for _ in range(24):  # 24 physics steps of 1/240 s: 10 frames per second
                self._drive()
            return self.end_effector_pose(), 0.0, False, False, {}

        def render(self):
            p = self.p
            _, _, rgba, _, _ = p.getCameraImage(
                self.size,
                self.size,
                self.view,
                self.projection,
                renderer=p.ER_TINY_RENDERER,
                physicsClientId=self.client,
            )
            return np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[..., :3]

        def close(self):
            if self.client is not None and self.p.isConnected(self.client):
                self.p.disconnect(self.client)
            self.client = None

    return BulletArm


ENV_ID = "astra/BulletArm-v0"


def register_arm_env() -> None:
    """Register `astra/BulletArm-v0` with Gymnasium (once)."""
    gymnasium = _gym()
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point=make_arm_env_class(), max_episode_steps=1000)
