"""`astra record`: Gymnasium environments recorded, read back, replayed and trained on."""

from __future__ import annotations

import importlib
import json
import os

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from astra_core.apps.cli import main
from astra_core.errors import ConfigError
from astra_core.plugins import get_registry


def need(module: str):
    """The gym extra's `module`: skipped with the reason when it is not installed, unless
    ASTRA_REQUIRE_GYM is set (as `.ci/run` does), where its absence fails the run."""
    if os.environ.get("ASTRA_REQUIRE_GYM"):
        try:
            return importlib.import_module(module)
        except ImportError as err:
            pytest.fail(f"ASTRA_REQUIRE_GYM is set but {module} is not importable ({err}): pip install -e '.[gym]'")
    return pytest.importorskip(module, reason=f"{module} comes with the 'gym' extra: pip install -e '.[gym]'")


gymnasium = need("gymnasium")
need("ale_py")

from astra_experts.categorical import ATARI_MEANINGS  # noqa: E402

from astra_core.apps.record import (  # noqa: E402
    RecordSettings,
    fit_frames,
    record,
    replay_episode,
)


@pytest.fixture(scope="module")
def breakout(tmp_path_factory):
    out = tmp_path_factory.mktemp("breakout")
    settings = RecordSettings("ALE/Breakout-v5", episodes=2, steps=30, size=(84, 84), policy="sticky", seed=5)
    summary = record(settings, out, progress=False)
    return out, settings, summary


def test_breakout_is_recorded_with_actions_by_meaning(breakout):
    out, _, summary = breakout
    assert summary["written"] == 2 and summary["modality"] == "atari_action" and summary["embodiment"] == "atari"
    episode = get_registry().get("readers", "gym_record").read(out / "episode_000000.h5")
    assert episode.embodiment == "atari" and episode.frames.shape == (3, 31, 84, 84)
    assert episode.meta["env_id"] == "ALE/Breakout-v5" and episode.meta["seed"] == 5
    # Breakout's minimal set (NOOP, FIRE, RIGHT, LEFT) is stored as indices into ALE's full 18.
    stream = episode.actions["atari_action"]
    with h5py.File(out / "episode_000000.h5") as f:
        native = np.asarray(f["env_actions"])
        assert f["extras/ram"].shape == (31, 128) and f.attrs["adapter"] == "ale"
    meanings = episode.meta["action_meanings"]
    assert meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert [ATARI_MEANINGS[i] for i in stream[1:]] == [meanings[a] for a in native]
    aligned = get_registry().get("modalities", "atari_action").align(stream, 1)
    assert aligned.actions.shape == (31, 18) and np.allclose(aligned.actions[1:].sum(1), 1.0)


def test_a_replay_reproduces_the_recorded_frames_exactly(breakout):
    out, _, _ = breakout
    path = out / "episode_000001.h5"
    with h5py.File(path) as f:
        frames = np.asarray(f["frames"])
        actions = np.asarray(f["env_actions"])
        stream = np.asarray(f["actions/atari_action"])
    replay = replay_episode(path)
    assert np.array_equal(replay.frames, frames) and np.array_equal(replay.stream[1:], stream[1:])
    # From a later frame: the first 10 recorded actions, then the rest.
    later = replay_episode(path, start=10)
    assert np.array_equal(later.frames, frames[10:]) and np.array_equal(later.stream[1:], stream[11:])
    # Other actions from frame 10 give another future (the environment is the ground truth for them).
    other = replay_episode(path, actions=np.full(len(actions) - 10, 3), start=10)
    assert np.array_equal(other.frames[0], frames[10]) and not np.array_equal(other.frames, frames[10:])
    assert other.modality == "atari_action" and np.all(other.stream[1:] == ATARI_MEANINGS.index("LEFT"))


def test_recording_resumes_and_refuses_other_settings(breakout, tmp_path):
    out, settings, _ = breakout
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("episode_*.h5")}
    more = RecordSettings(**{**settings.__dict__, "episodes": 3})
    summary = record(more, out, progress=False)
    assert summary["written"] == 1 and summary["kept"] == 2
    assert all(p.stat().st_mtime_ns == before[p.name] for p in out.glob("episode_*.h5") if p.name in before)
    other = RecordSettings(**{**settings.__dict__, "seed": 6})
    with pytest.raises(ConfigError, match="seed: 5 there, 6 now"):
        record(other, out, progress=False)


def test_an_interrupted_recording_keeps_its_finished_episodes(tmp_path, monkeypatch):
    policy = tmp_path / "stops.py"
    policy.write_text(
        "calls = 0\n"
        "def act(env, observation, rng):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if calls > 25:\n"
        "        raise KeyboardInterrupt\n"
        "    return 1\n"
    )
    settings = RecordSettings("ALE/Breakout-v5", episodes=4, steps=10, policy=f"{policy}:act")
    with pytest.raises(KeyboardInterrupt):
        record(settings, tmp_path / "rec", progress=False)
    kept = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert kept == ["episode_000000.h5", "episode_000001.h5", "record.json"]  # nothing half-written


def test_highway_records_the_ego_pose(tmp_path):
    need("highway_env")
    settings = RecordSettings("highway-v0", episodes=1, steps=8, seed=0, policy="tests/fixtures/gym_policies.py:idle")
    summary = record(settings, tmp_path, progress=False)
    assert summary["modality"] == "vehicle_pose" and summary["fps"] == 5.0
    episode = get_registry().get("readers", "gym_record").read(tmp_path / "episode_000000.h5")
    assert episode.frames.shape[1] == 9 and float(episode.frames.std()) > 0.05  # drawn, not blank
    aligned = get_registry().get("modalities", "vehicle_pose").align(episode.actions["vehicle_pose"], 1)
    forward = aligned.actions[1:, 0]  # metres along the car's heading per frame
    assert np.all(forward > 2.0) and np.all(np.abs(aligned.actions[1:, 1]) < 1.0)  # 20-30 m/s at 5 frames/s


def test_the_pybullet_arm_records_its_end_effector(tmp_path):
    need("pybullet")
    settings = RecordSettings("astra/BulletArm-v0", episodes=1, steps=6, seed=1)
    record(settings, tmp_path, progress=False)
    path = tmp_path / "episode_000000.h5"
    episode = get_registry().get("readers", "gym_record").read(path)
    stream = episode.actions["robot_ee"]
    assert stream.shape == (7, 7) and np.all(stream[0] == 0)
    with h5py.File(path) as f:
        commands = np.asarray(f["env_actions"])
    # The measured end-effector motion follows the commanded target motion (3 cm per unit, per step).
    commanded = commands[:, :3] * 0.03
    assert np.corrcoef(commanded.ravel(), stream[1:, :3].ravel())[0, 1] > 0.8
    assert np.array_equal(stream[1:, 6], (commands[:, 3] > 0).astype(float))
    replay = replay_episode(path)
    assert np.array_equal(replay.frames, np.asarray(h5py.File(path)["frames"]))
    assert np.allclose(replay.stream, stream)


def test_a_box_space_is_scaled_to_unit_range(tmp_path):
    settings = RecordSettings("Pendulum-v1", episodes=1, steps=5, size=(32, 32), seed=0)
    summary = record(settings, tmp_path, progress=False)
    assert summary["modality"] == "box_action" and summary["embodiment"] == "gym_box"
    with h5py.File(tmp_path / "episode_000000.h5") as f:
        stream = np.asarray(f["actions/box_action"])
        native = np.asarray(f["env_actions"])
        assert json.loads(f.attrs["meta"])["action_low"] == [-2.0]
    assert np.allclose(stream[1:, 0], native[:, 0] / 2.0)  # Pendulum's torque lies in [-2, 2]
    aligned = get_registry().get("modalities", "box_action").align(stream, 1)
    assert aligned.actions.shape == (6, 16) and np.all(aligned.actions[:, 1:] == 0)


class _NoRender(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"]}
    action_space = gymnasium.spaces.Discrete(2)
    observation_space = gymnasium.spaces.Discrete(1)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, 0.0, False, False, {}

    def render(self):
        return None


class _NoRgb(_NoRender):
    metadata = {"render_modes": ["human"]}


class _MultiDiscrete(_NoRender):
    action_space = gymnasium.spaces.MultiDiscrete([3, 3])

    def render(self):
        return np.zeros((8, 8, 3), dtype=np.uint8)


def test_clear_errors_for_unknown_unrenderable_and_unmappable_environments(tmp_path):
    with pytest.raises(ConfigError, match="unknown environment 'ALE/Breakuot-v5'; did you mean ALE/Breakout-v5"):
        record(RecordSettings("ALE/Breakuot-v5"), tmp_path / "a", progress=False)
    gymnasium.register("test/NoRender-v0", entry_point=_NoRender)
    gymnasium.register("test/MultiDiscrete-v0", entry_point=_MultiDiscrete)
    gymnasium.register("test/NoRgb-v0", entry_point=_NoRgb)
    with pytest.raises(ConfigError, match="test/NoRgb-v0: does not render 'rgb_array' frames"):
        record(RecordSettings("test/NoRgb-v0", episodes=1, steps=2), tmp_path / "f", progress=False)
    with pytest.raises(ConfigError, match="render\\(\\) gave nothing"):
        record(RecordSettings("test/NoRender-v0", episodes=1, steps=2), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="cannot map the action space MultiDiscrete"):
        record(RecordSettings("test/MultiDiscrete-v0", episodes=1, steps=2), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="--stream pose: no pose adapter matches"):
        record(RecordSettings("ALE/Breakout-v5", stream="pose"), tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="not in the action space"):
        record(
            RecordSettings("ALE/Breakout-v5", policy="tests/fixtures/gym_policies.py:too_large"), tmp_path / "e", False
        )
    assert not any((tmp_path / name).exists() and any((tmp_path / name).glob("*.h5")) for name in "abcdef")


def test_a_plugin_adds_an_environment_adapter(tmp_path):
    """A third-party adapter, registered through the hook, maps an action space no built-in one takes."""
    import types

    from astra_core.envs import EnvAdapter
    from astra_core.plugins import hookimpl, plugins, reset_plugins

    class TwoDials(EnvAdapter):
        name = "two_dials"
        stream = "space"
        modality = "box_action"
        embodiment = "gym_box"

        @classmethod
        def matches(cls, env):
            return isinstance(env.action_space, gymnasium.spaces.MultiDiscrete)

        def start(self, env):
            return np.zeros(2)

        def row(self, env, action):
            return np.asarray(action, dtype=float) - 1.0  # 0, 1, 2 -> -1, 0, 1

    if "test/MultiDiscrete-v0" not in gymnasium.registry:
        gymnasium.register("test/MultiDiscrete-v0", entry_point=_MultiDiscrete)
    module = types.ModuleType("dials_plugin")
    module.astra_register_env_adapters = hookimpl(lambda register: register(TwoDials))
    reset_plugins()
    try:
        plugins().register_plugin(module, "dials")
        summary = record(RecordSettings("test/MultiDiscrete-v0", episodes=1, steps=4), tmp_path, progress=False)
        assert summary["modality"] == "box_action"
        with h5py.File(tmp_path / "episode_000000.h5") as f:
            assert f.attrs["adapter"] == "two_dials"
            assert np.array_equal(f["actions/box_action"][1:], f["env_actions"][:] - 1.0)
    finally:
        reset_plugins()


def test_fit_frames_letterboxes_or_crops():
    frames = np.zeros((1, 20, 10, 3), dtype=np.uint8)
    frames[:, :, :, 0] = 200
    boxed = fit_frames(frames, (10, 10), "letterbox")
    assert boxed.shape == (1, 10, 10, 3)
    assert (
        np.all(boxed[0, :, 2:7, 0] >= 199) and np.all(boxed[0, :, :2, 0] == 0) and np.all(boxed[0, :, 7:, 0] == 0)
    )  # pillarboxed, all kept
    cropped = fit_frames(frames, (10, 10), "crop")
    assert np.all(cropped[..., 0] >= 199)


def test_record_encode_train_end_to_end(tiny_atari, capsys):
    """The recorded episodes went through `astra encode` and trained a model on the atari_action modality
    (the `tiny_atari` fixture); the checkpoint says so."""
    checkpoint, _ = tiny_atari
    capsys.readouterr()
    assert main(["info", str(checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["action"]["modalities"] == ["atari_action"]


def test_three_domains_recorded_encoded_and_trained_as_one_model(tmp_path, capsys):
    """Two short episodes of each domain (Breakout, highway-env, the pybullet arm) recorded at 64 x 64,
    encoded, and two training steps of one model over the three action spaces, as gym_mixed.yaml does."""
    need("highway_env")
    need("pybullet")
    domains = {
        "breakout": RecordSettings("ALE/Breakout-v5", episodes=2, steps=8, size=(64, 64), policy="sticky", seed=3),
        "highway": RecordSettings(
            "highway-v0", episodes=2, steps=8, size=(64, 64), seed=0, policy="tests/fixtures/gym_policies.py:idle"
        ),
        "arm": RecordSettings("astra/BulletArm-v0", episodes=2, steps=8, size=(64, 64), seed=1),
    }
    caches = []
    for name, settings in domains.items():
        record(settings, tmp_path / "rec" / name, progress=False)
        files = [str(f) for f in sorted((tmp_path / "rec" / name).glob("episode_*.h5"))]
        assert len(files) == 2
        assert main(["encode", "--reader", "gym_record", *files, "--out", str(tmp_path / "cache" / name)]) == 0
        caches.append(f"{tmp_path / 'cache' / name}/shard-*.h5")
    config = tmp_path / "mixed.yaml"
    config.write_text(
        "model:\n"
        "  dit: {preset: tiny, dim: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, in_dim: 48, out_dim: 48}\n"
        "  action: {encoder: moae, modalities: [atari_action, vehicle_pose, robot_ee], num_experts: 2,\n"
        "           token_dim: 16, expert_hidden: 16}\n"
        "  history: {chunk_size: 2, context_frames: 1, window: 2}\n"
        f"data:\n  source: cache\n  cache: {json.dumps(caches)}\n"
        "  weights: {atari: 1.0, highway: 1.0, bullet_arm: 1.0}\n  history_chunks: 1\n"
        f"steps: 2\nbatch_size: 3\neval_every: 0\nlog_every: 1\nout_dir: {tmp_path / 'run'}\n"
    )
    capsys.readouterr()
    assert main(["train", str(config)]) == 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2] and all(np.isfinite(m["loss"]) for m in logged)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "run" / "model.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["action"]["modalities"] == ["atari_action", "vehicle_pose", "robot_ee"]


def test_cli_record_and_its_errors(tmp_path, capsys):
    assert (
        main(["record", "ALE/Breakout-v5", "--out", str(tmp_path), "--episodes", "1", "--steps", "3", "--quiet"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["written"] == 1
    assert main(["record", "NoSuchEnv-v9", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown environment 'NoSuchEnv-v9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["record", "ALE/Breakout-v5", "--out", str(tmp_path), "--env-arg", "not a pair"])


@pytest.mark.parametrize("name", ["gym_breakout", "gym_highway", "gym_arm", "gym_mixed"])
def test_the_gym_example_configs_name_registered_bodies(name):
    from astra_core.config import TrainConfig

    cfg = TrainConfig.from_yaml(f"examples/configs/{name}.yaml")
    registry = get_registry()
    for embodiment in cfg.data.weights:
        body = registry.get("embodiments", embodiment)
        assert body.reader == "gym_record" and set(body.modalities) <= set(cfg.model.action.modalities)


def test_replayed_counterfactual_is_the_environment_s_own_future(breakout):
    """Replaying an episode with its own actions gives back its frames; with the next episode's
    actions, the frames the environment makes of them, and the streams the model is driven by."""
    from astra_core.apps.evaluate import episodes_from_reader, replayed_counterfactual

    out, _, _ = breakout
    reader = get_registry().get("readers", "gym_record")
    episodes = episodes_from_reader(reader, [str(p) for p in sorted(out.glob("episode_*.h5"))[:2]], held_out=False)
    same_streams, same = replayed_counterfactual(episodes, episodes, 1, 21)
    assert same.shape == (2, 3, 20, 84, 84)
    assert torch.equal(same, torch.stack([e.frames[:, 1:21] for e in episodes]))
    assert np.array_equal(same_streams[0]["atari_action"], episodes[0].actions["atari_action"][:21])
    swapped_streams, swapped = replayed_counterfactual(episodes, episodes[::-1], 1, 21)
    other_rows = episodes[1].actions["atari_action"][1:21]
    assert np.array_equal(swapped_streams[0]["atari_action"][1:], other_rows)
    assert not torch.equal(swapped, same)


@pytest.fixture(scope="module")
def tiny_atari(breakout, tmp_path_factory):
    """A one-step model of the recorded Breakout episodes at 64 x 64, and its cache."""
    out, _, _ = breakout
    tmp = tmp_path_factory.mktemp("tiny_atari")
    cache = tmp / "cache"
    files = [str(p) for p in sorted(out.glob("episode_*.h5"))[:2]]
    assert main(["encode", "--reader", "gym_record", *files, "--out", str(cache), "--size", "64x64"]) == 0
    config = tmp / "atari.yaml"
    config.write_text(
        "model:\n"
        "  dit: {preset: tiny, dim: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, in_dim: 48, out_dim: 48}\n"
        "  action: {encoder: moae, modalities: [atari_action], num_experts: 2, token_dim: 16, expert_hidden: 16}\n"
        "  history: {chunk_size: 2, context_frames: 1, window: 2}\n"
        f"data:\n  source: cache\n  cache: ['{cache}/shard-*.h5']\n  weights: {{atari: 1.0}}\n  history_chunks: 1\n"
        f"steps: 1\nbatch_size: 2\neval_every: 0\nout_dir: {tmp / 'run'}\n"
    )
    assert main(["train", str(config)]) == 0
    return tmp / "run" / "model.safetensors", cache


def test_eval_on_recorded_episodes_scores_against_the_replayed_environment(tiny_atari, tmp_path):
    checkpoint, cache = tiny_atari
    # From the cache (frames at the model's 64 x 64): the sources are the recordings, replayed and resized.
    args = ["eval", "--checkpoint", str(checkpoint), "--cache", f"{cache}/shard-*.h5"]
    args += ["--all-episodes", "--horizons", "4", "8", "--out", str(tmp_path / "eval"), "--steps", "1", "--sheet", "5"]
    assert main(args) == 0
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    atari = results["atari"] if "atari" in results else results["results"]["atari"]
    for key in ("astra/counterfactual_psnr@8", "astra/env_following@8", "copy_last/counterfactual_psnr@4"):
        assert np.isfinite(atari[key]), key
    assert "PSNR vs the environment@4" in (tmp_path / "eval" / "eval.md").read_text()
    # The recordings were made at 84 x 84 from ALE's 210 x 160 screen: ball and paddle are scored too.
    assert np.isfinite(atari["astra/object_psnr@8"]) and np.isfinite(atari["copy_last/object_psnr@8"])
    assert "object PSNR@8" in (tmp_path / "eval" / "eval.md").read_text()
    # The contact sheet: both episodes (of the 5 asked for), each as truth / model / model with the other
    # episode's actions / what the emulator did with them.
    sheet = iio.imread(tmp_path / "eval" / "contact_sheet.png")
    assert sheet.shape == (2 * (4 * 64 + 4), 128 + 9 * 64, 3)


def test_play_beside_the_real_environment(tiny_atari, tmp_path, capsys):
    """`astra play --env`: the keys drive the environment and the model; the environment's half of each
    frame is what the environment itself renders for those actions."""
    from astra_core.apps.play import PlaySession
    from astra_core.apps.play_env import EnvWorld
    from astra_core.apps.record import fit_frames, make_env
    from astra_core.data.video import uint8_to_frames
    from astra_core.world import WorldModel

    checkpoint, _ = tiny_atari
    world = EnvWorld("ALE/Breakout-v5", (64, 64))
    session = PlaySession(WorldModel.from_checkpoint(str(checkpoint), num_steps=1), world, seed=3)
    assert session.start.shape == (3, 64, 130)
    first = session.step(["SPACE"])
    second = session.step(["LEFT", "UP"])  # Breakout has no UPLEFT: LEFT
    assert first.frames.shape == (3, 2, 64, 130)
    env = make_env("ALE/Breakout-v5")
    env.reset(seed=3)
    expected = []
    for action in (1, 1, 3, 3):  # FIRE twice, then LEFT (index 3 of NOOP, FIRE, RIGHT, LEFT) twice
        env.step(action)
        expected.append(env.render())
    env.close()
    truth = uint8_to_frames(fit_frames(np.stack(expected), (64, 64)))
    shown = torch.cat([first.frames, second.frames], dim=1)[:, :, :, 66:]
    assert torch.equal(shown, truth)
    world.close()
    # The CLI: a script of steps, written to a video.
    args = ["play", "--env", "ALE/Breakout-v5", "--checkpoint", str(checkpoint), "--keys", "space left .", "--steps"]
    assert main([*args, "1", "--no-preview", "--out", str(tmp_path / "play.mp4")]) == 0
    assert (tmp_path / "play.mp4").stat().st_size > 0
    # The model was trained at 64 x 64 (the checkpoint says so), and plays at that size unless told otherwise.
    assert WorldModel.from_checkpoint(str(checkpoint)).frame_size == (64, 64)
    assert main([*args, "1", "--no-preview", "--size", "32"]) == 2
    assert "frames: 32×32, but this model was trained on 64×64 frames" in capsys.readouterr().err
    # The environment made as the episodes were recorded: gymnasium.make's keywords and the stream.
    world = EnvWorld("ALE/Breakout-v5", (64, 64), env_kwargs={"frameskip": 2})
    assert world.env.spec.kwargs["frameskip"] == 2
    world.close()
    assert main([*args, "1", "--no-preview", "--stream", "pose"]) == 2
    assert "--stream pose: no pose adapter matches 'ALE/Breakout-v5'" in capsys.readouterr().err


def test_breakout_s_ball_and_paddle_come_from_the_ram(tmp_path):
    """At ALE's own 210 x 160, every ball or paddle pixel (their red, below the bricks, inside the
    walls) lies in the masks made from the RAM, and the masks stay small."""
    from astra_core.apps.record import object_masks

    settings = RecordSettings("ALE/Breakout-v5", episodes=1, steps=120, size=(210, 160), policy="sticky", seed=2)
    record(settings, tmp_path, progress=False)
    masks = object_masks(tmp_path / "episode_000000.h5")
    frames = np.asarray(h5py.File(tmp_path / "episode_000000.h5")["frames"])
    red = np.abs(frames.astype(int) - [200, 72, 72]).sum(-1) < 30
    red[:, :100] = False  # the red bricks
    red[:, :, :8] = red[:, :, 152:] = False  # the walls' markers
    assert red.sum() > 100 and np.all(masks[red])
    assert masks.mean() < 0.02


def test_a_missing_gym_package_skips_or_under_the_switch_fails(monkeypatch):
    monkeypatch.delenv("ASTRA_REQUIRE_GYM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="comes with the 'gym' extra"):
        need("no_such_gym_package")
    monkeypatch.setenv("ASTRA_REQUIRE_GYM", "1")
    with pytest.raises(pytest.fail.Exception, match="ASTRA_REQUIRE_GYM is set but no_such_gym_package"):
        need("no_such_gym_package")
    assert need("gymnasium") is gymnasium


def test_astra_start_up_imports_no_environment_package():
    """Every plugin, the environment adapters included, registers without importing gymnasium, ALE,
    highway-env or pybullet: those load only when a command records, replays or plays an environment."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from astra_core.apps.cli import main\n"
        "from astra_core.plugins import get_registry\n"
        "main(['presets'])\n"
        "assert get_registry().env_adapters\n"
        "envs = {'gymnasium', 'ale_py', 'highway_env', 'pybullet', 'pygame'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & envs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
