"""`astra record`: run a Gymnasium environment with a policy and write its episodes for training.

How the actions become a modality's raw stream is decided by the registered environment adapters
(`astra_core.envs`). Each episode is one HDF5 file, `OUT/episode_000000.h5`, … (read back by the
`gym_record` reader):
- `frames`: uint8 [T, H, W, 3], the environment's renders resized to `size` (see `fit_frames`);
  frame 0 follows `reset`, frame t + 1 follows step t;
- `actions/<modality>`: the modality's raw stream (an array, or a group of arrays for a dict stream),
  row t + 1 from step t, row 0 for frame 0;
- `env_actions`: the actions given to `env.step`, as the environment takes them, so a replay from
  `reset(seed=...)` repeats the episode (`replay_episode`);
- `rewards` [T − 1]; `extras/<key>` [T, ...], what the adapter keeps per frame (ALE: the console's
  RAM);
- attributes: the format and its version, the environment id and its keyword arguments, the
  episode's seed, its embodiment and modality, the frames per second, how frames were resized, the
  policy, whether the episode terminated, and JSON `meta` (action meanings, bounds, conventions).

Episode i is seeded with `seed + i` (the environment's reset, its action space and the policy's
generator), so a recording is reproducible and resumable: run the same command again and the
episodes already written are kept (each file is written under a temporary name and renamed when
complete, so an interruption leaves no half-written episode); `record.json` in OUT holds the
settings, and a different command on the same OUT is refused.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astra_core.data.video import frames_to_uint8, resize_crop, resize_letterbox, uint8_to_frames
from astra_core.envs import EnvAdapter, unwrapped
from astra_core.errors import AstraError, ConfigError

FORMAT = "astra-gym-record"
FORMAT_VERSION = 1
FITS = ("letterbox", "crop")
INSTALL_HINT = 'pip install "astra-world[gym]"'


def require_gymnasium():
    """gymnasium, or one clear error naming the extra to install."""
    try:
        import gymnasium
    except ImportError:
        raise AstraError(f"astra record needs Gymnasium: {INSTALL_HINT}") from None
    return gymnasium


def adapters() -> list[type[EnvAdapter]]:
    """The registered environment adapters: pose adapters first, then action-space ones."""
    from astra_core.plugins import get_registry

    found = list(get_registry().env_adapters.values())
    return [a for a in found if a.stream == "pose"] + [a for a in found if a.stream != "pose"]


def default_env_kwargs(env_id: str) -> dict[str, Any]:
    """What the adapters' `prepare` asks `gymnasium.make` to get for `env_id` (they also register
    their family's environments with Gymnasium here)."""
    kwargs: dict[str, Any] = {}
    for adapter in adapters():
        kwargs.update(adapter.prepare(env_id))
    return kwargs


def env_kwargs_for(env_id: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of `default_env_kwargs` updated by the user's; a `config` mapping (highway-env's)
    is merged key by key, so `--env-arg config={lanes_count: 3}` keeps the other defaults."""
    kwargs = default_env_kwargs(env_id)
    for key, value in (user or {}).items():
        if key == "config" and isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key] = {**kwargs[key], **value}
        else:
            kwargs[key] = value
    return kwargs


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None):
    """`gymnasium.make(env_id, render_mode="rgb_array", **kwargs)`, with clear errors for an unknown id
    or an environment that cannot render."""
    gymnasium = require_gymnasium()
    kwargs = env_kwargs_for(env_id, env_kwargs)
    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown environment {env_id!r}{hint}")
    try:
        with warnings.catch_warnings():  # an environment without rgb_array is refused below, by name
            warnings.simplefilter("ignore")
            env = gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
    except TypeError as err:
        raise ConfigError(f"{env_id}: cannot make it with {kwargs}: {err}") from None
    except Exception as err:  # environments raise many kinds; name the id
        raise ConfigError(f"{env_id}: cannot make the environment: {type(err).__name__}: {err}") from None
    modes = list((env.metadata or {}).get("render_modes", []))
    if "rgb_array" not in modes:
        env.close()
        raise ConfigError(f"{env_id}: does not render 'rgb_array' frames (its render modes: {modes})")
    return env


def render_rgb(env, env_id: str) -> np.ndarray:
    """One frame from `env.render()`, checked to be an RGB image."""
    try:
        frame = env.render()
    except Exception as err:
        raise ConfigError(f"{env_id}: cannot render: {type(err).__name__}: {err}") from None
    if frame is None:
        raise ConfigError(f"{env_id}: render() gave nothing; the environment does not render 'rgb_array' frames")
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4) or frame.dtype != np.uint8:
        raise ConfigError(
            f"{env_id}: render() gave an array of shape {frame.shape} and type {frame.dtype}, not an RGB image "
            "[H, W, 3] of uint8"
        )
    return frame[..., :3]


def fit_frames(frames: np.ndarray, size: tuple[int, int], fit: str = "letterbox") -> np.ndarray:
    """uint8 [T, h, w, 3] -> uint8 [T, H, W, 3].

    - "letterbox": scale to fit inside (H, W) keeping the aspect ratio, centre, and pad with black;
      nothing of the picture is lost (an Atari screen's score and paddle stay in view).
    - "crop": scale to cover (H, W) keeping the aspect ratio, then centre-crop.
    Scaling is bilinear with antialiasing (an area average when shrinking)."""
    if fit not in FITS:
        raise ConfigError(f"--fit {fit!r}: choose one of {', '.join(FITS)}")
    resize = resize_letterbox if fit == "letterbox" else resize_crop
    return frames_to_uint8(resize(uint8_to_frames(frames), tuple(size)))


# ---- policies -----------------------------------------------------------------------------------

Policy = Callable[[Any, Any, np.random.Generator], Any]


def random_policy(env, observation, rng):
    """A uniformly random action each step (the action space is seeded per episode)."""
    return env.action_space.sample()


class StickyRandomPolicy:
    """A random action held for 1 – 8 steps (uniform), then another: motion that persists long enough
    for a world model to see what an action does."""

    def __init__(self, longest: int = 8):
        self.longest = longest
        self.left = 0
        self.action = None

    def __call__(self, env, observation, rng):
        if self.left == 0 or self.action is None:
            self.action = env.action_space.sample()
            self.left = int(rng.integers(1, self.longest + 1))
        self.left -= 1
        return self.action


def load_policy(spec: str) -> Callable[[], Policy]:
    """`random`, `sticky`, `module:function` or `path/to/file.py:function` -> a factory of fresh
    policies (one per episode). A user's policy is a callable `policy(env, observation, rng) -> action`
    (rng: the episode's numpy Generator)."""
    if spec == "random":
        return lambda: random_policy
    if spec == "sticky":
        return StickyRandomPolicy
    if ":" not in spec:
        raise ConfigError(f"--policy {spec!r}: use random, sticky, module:function or file.py:function")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"--policy {spec!r}: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(f"astra_policy_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"--policy {spec!r}: cannot import {where}: {type(err).__name__}: {err}") from None
    policy = getattr(module, name, None)
    if not callable(policy):
        raise ConfigError(f"--policy {spec!r}: {where} has no callable {name!r}")
    return lambda: policy


# ---- recording ----------------------------------------------------------------------------------


@dataclass
class RecordSettings:
    env_id: str
    episodes: int = 16
    steps: int = 100
    size: tuple[int, int] = (64, 64)
    fit: str = "letterbox"
    seed: int = 0
    policy: str = "random"
    stream: str = "auto"
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"--episodes {self.episodes}: record at least one episode")
        if self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: record at least one step per episode")
        if min(self.size) < 8:
            raise ConfigError(f"--size {self.size}: frames must be at least 8 pixels on a side")
        if self.fit not in FITS:
            raise ConfigError(f"--fit {self.fit!r}: choose one of {', '.join(FITS)}")

    def as_json(self) -> dict:
        return {**asdict(self), "size": list(self.size)}


def episode_path(out: Path, index: int) -> Path:
    return out / f"episode_{index:06d}.h5"


def _check_settings(out: Path, settings: RecordSettings) -> None:
    """OUT/record.json: written by the first run; a later run with other settings is refused."""
    path = out / "record.json"
    wanted = settings.as_json()
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the recording's settings: {err}") from None
        # More episodes than before extends the recording; anything else must match.
        differ = {k: (before.get(k), v) for k, v in wanted.items() if k != "episodes" and before.get(k) != v}
        if differ:
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
            raise ConfigError(f"{out} holds a recording made with other settings ({shown}); use another --out")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(wanted, indent=2) + "\n")
    os.replace(tmp, path)


def choose_adapter(env, stream: str = "auto") -> EnvAdapter:
    """`stream`: "pose" (a pose adapter must match), "space" (the action space), or "auto" (a pose
    adapter when one matches, else the action space's)."""
    if stream not in ("auto", "pose", "space"):
        raise ConfigError(f"--stream {stream!r}: choose auto, pose or space")
    found = adapters()
    for adapter in found:
        if stream in ("auto", adapter.stream) and adapter.matches(env):
            return adapter(env)
    env_id = getattr(unwrapped(env).spec, "id", None) or getattr(env.spec, "id", "?")
    names = ", ".join(f"{a.name} ({a.stream})" for a in found) or "none"
    if stream == "pose":
        raise ConfigError(f"--stream pose: no pose adapter matches {env_id!r} (adapters: {names})")
    raise ConfigError(
        f"{env_id}: cannot map the action space {env.action_space} to a modality; no registered environment "
        f"adapter takes it (adapters: {names}). A plugin adds one with the astra_register_env_adapters hook"
    )


def record_episode(env, mapping: EnvAdapter, policy: Policy, settings: RecordSettings, index: int) -> dict[str, Any]:
    """Run one episode; everything `write_episode` stores."""
    seed = settings.seed + index
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames = [render_rgb(env, settings.env_id)]
    rows = [mapping.start(env)]
    env_actions, rewards = [], []
    extras = {k: [np.array(v)] for k, v in mapping.extras(env).items()}
    terminated = False
    for _ in range(settings.steps):
        action = policy(env, observation, rng)
        if not env.action_space.contains(action):
            raise ConfigError(
                f"the policy {settings.policy!r} gave {action!r}, which is not in the action space {env.action_space}"
            )
        observation, reward, term, trunc, _ = env.step(action)
        env_actions.append(np.asarray(action))
        rewards.append(float(reward))
        frames.append(render_rgb(env, settings.env_id))
        rows.append(mapping.row(env, action))
        for k, v in mapping.extras(env).items():
            extras.setdefault(k, []).append(np.array(v))
        if term or trunc:
            terminated = bool(term)
            break
    return {
        "frames": fit_frames(np.stack(frames), settings.size, settings.fit),
        "render_shape": list(frames[0].shape[:2]),
        "actions": {mapping.modality: mapping.stack(rows)},
        "env_actions": np.stack(env_actions),
        "rewards": np.asarray(rewards),
        "extras": {k: np.stack(v) for k, v in extras.items()},
        "seed": seed,
        "terminated": terminated,
        "meta": mapping.meta(env),
    }


def env_fps(env, mapping: EnvAdapter) -> float:
    """Frames per second of a recording: the adapter's figure, else the environment's `render_fps`,
    else 10."""
    fps = mapping.fps(env) or (getattr(env, "metadata", None) or {}).get("render_fps")
    return float(fps) if fps else 10.0


def write_episode(path: Path, data: dict[str, Any], settings: RecordSettings, mapping, fps: float) -> None:
    """One episode to `path`, written under a temporary name and renamed when complete."""
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("frames", data=data["frames"], compression="lzf", chunks=(1, *data["frames"].shape[1:]))
        group = f.create_group("actions")
        for modality, stream in data["actions"].items():
            if isinstance(stream, dict):
                sub = group.create_group(modality)
                for key, value in stream.items():
                    sub.create_dataset(key, data=np.asarray(value))
            else:
                group.create_dataset(modality, data=np.asarray(stream))
        f.create_dataset("env_actions", data=data["env_actions"])
        f.create_dataset("rewards", data=data["rewards"])
        for key, value in data["extras"].items():
            f.create_dataset(f"extras/{key}", data=value)
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "env_id": settings.env_id,
            "env_kwargs": json.dumps(env_kwargs_for(settings.env_id, settings.env_kwargs)),
            "seed": data["seed"],
            "embodiment": mapping.embodiment,
            "modality": mapping.modality,
            "adapter": mapping.name,
            "fps": fps,
            "fit": settings.fit,
            "render_shape": data["render_shape"],
            "policy": settings.policy,
            "terminated": data["terminated"],
            "meta": json.dumps(data["meta"]),
        }
        for key, value in attrs.items():
            f.attrs[key] = value
    os.replace(tmp, path)


def record(settings: RecordSettings, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Record `settings.episodes` episodes into `out`; episodes already there are kept. Returns a
    summary: episodes written now, kept, frames, the modality and embodiment."""
    from tqdm import tqdm

    settings.check()
    out = Path(out)
    env = make_env(settings.env_id, settings.env_kwargs)
    try:
        mapping = choose_adapter(env, settings.stream)
        make_policy = load_policy(settings.policy)
        out.mkdir(parents=True, exist_ok=True)
        _check_settings(out, settings)
        for stale in out.glob("episode_*.h5.tmp"):  # left by an interrupted run
            stale.unlink()
        todo = [i for i in range(settings.episodes) if not episode_path(out, i).is_file()]
        fps = env_fps(env, mapping)
        frames = 0
        bar = tqdm(todo, desc=f"record {settings.env_id}", unit="episode", disable=not progress)
        for i in bar:
            data = record_episode(env, mapping, make_policy(), settings, i)
            write_episode(episode_path(out, i), data, settings, mapping, fps)
            frames += len(data["frames"])
            bar.set_postfix(frames=frames)
        bar.close()
    finally:
        env.close()
    return {
        "out": str(out),
        "written": len(todo),
        "kept": settings.episodes - len(todo),
        "frames": frames,
        "modality": mapping.modality,
        "embodiment": mapping.embodiment,
        "fps": fps,
    }


# ---- replay -------------------------------------------------------------------------------------


@dataclass
class Replay:
    """What a replay gives: frames uint8 [T, H, W, 3] from the start frame on (resized as the recording
    was), and the modality's raw stream over those frames as the recording's adapter measures it (row
    0 for the start frame)."""

    frames: np.ndarray
    modality: str
    stream: Any


def replay_episode(path: str | Path, actions: np.ndarray | None = None, start: int = 0) -> Replay:
    """Re-run a recorded episode in its environment: reset with the episode's seed, repeat its first
    `start` recorded actions, then take `actions` (default: the rest of the recorded ones), stopping
    where the environment ends the episode: the real environment's answer to any action sequence from
    any recorded frame."""
    import h5py

    from astra_core.plugins import get_registry

    path = Path(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ConfigError(f"{path}: not an `astra record` episode")
        env_id = str(f.attrs["env_id"])
        kwargs = json.loads(str(f.attrs["env_kwargs"]))
        seed = int(f.attrs["seed"])
        recorded = np.asarray(f["env_actions"])
        size = tuple(f["frames"].shape[1:3])
        fit = str(f.attrs["fit"])
        adapter_name = str(f.attrs["adapter"])
    if not 0 <= start <= len(recorded):
        raise ConfigError(f"{path}: start {start} outside the episode's 0 … {len(recorded)} steps")
    actions = recorded[start:] if actions is None else np.asarray(actions)
    adapter_class = get_registry().get("env_adapters", adapter_name)
    env = make_env(env_id, kwargs)
    try:
        env.reset(seed=seed)
        env.action_space.seed(seed)
        for a in recorded[:start]:
            env.step(_native(a))
        adapter = adapter_class(env)
        frames, rows = [render_rgb(env, env_id)], [adapter.start(env)]
        for a in actions:
            _, _, term, trunc, _ = env.step(_native(a))
            frames.append(render_rgb(env, env_id))
            rows.append(adapter.row(env, _native(a)))
            if term or trunc:
                break
    finally:
        env.close()
    return Replay(fit_frames(np.stack(frames), size, fit), adapter.modality, adapter.stack(rows))


def object_masks(path: str | Path) -> np.ndarray | None:
    """Where the recording's adapter says the objects that matter are (Breakout: the ball and the
    paddle, from the console's RAM), per frame, at the recorded size: bool [T, H, W]; None when the
    adapter knows no objects for this environment."""
    import h5py

    from astra_core.plugins import get_registry

    with h5py.File(path, "r") as f:
        adapter = get_registry().env_adapters.get(str(f.attrs.get("adapter", "")))
        if adapter is None or "render_shape" not in f.attrs:
            return None
        extras = {k: np.asarray(v) for k, v in f["extras"].items()} if "extras" in f else {}
        masks = adapter.objects(extras, str(f.attrs["env_id"]), tuple(int(v) for v in f.attrs["render_shape"]))
        size, fit = tuple(f["frames"].shape[1:3]), str(f.attrs["fit"])
    if masks is None:
        return None
    as_rgb = np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1)
    return fit_frames(as_rgb, size, fit)[..., 0] > 0


def is_recording(path: str | Path) -> bool:
    """Whether `path` is an episode file written by `astra record`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT and "env_actions" in f
    except (OSError, TypeError):
        return False


def recorded_env_actions(path: str | Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["env_actions"])


def _native(action: np.ndarray):
    """A stored action back in the form env.step takes (a Python int for a Discrete space)."""
    a = np.asarray(action)
    return int(a) if a.ndim == 0 and np.issubdtype(a.dtype, np.integer) else a
