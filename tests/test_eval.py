import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TINY_DIT, make_config

from astra_core.apps.cli import main
from astra_core.apps.evaluate import EVAL_SEED, psnr, sharpness, ssim, teacher_forced
from astra_core.checkpoint import save_checkpoint
from astra_core.config import ActionConfig
from astra_core.data.tokenizer import PixelTokenizer
from astra_core.data.video import frames_to_uint8
from astra_core.errors import ShapeError
from astra_core.model.actions import AstraNet
from astra_core.plugins import get_registry
from astra_core.world import DEFAULT_CHECKPOINT as SHIPPED


def test_psnr_and_ssim_basics():
    x = torch.rand(3, 4, 32, 32) * 2 - 1
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    assert psnr(x, x) == pytest.approx(58.92, abs=0.01) and abs(ssim(x, x) - 1) < 1e-5  # 8-bit quantisation
    assert 10 < psnr(noisy, x) < 40 and ssim(noisy, x) < 0.99
    mask = torch.zeros(4, 32, 32, dtype=torch.bool)
    mask[:, :4] = True
    worse = x.clone()
    worse[:, :, :4] = -worse[:, :, :4]
    assert psnr(worse, x, mask) < psnr(worse, x)  # the damage sits inside the mask


def test_eval_reports_every_horizon_asked_for(tmp_path, capsys):
    cfg = make_config(channels=48, chunk_size=2, window=4).model_copy(
        update={"action": ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=16, expert_hidden=16)}
    )
    path = save_checkpoint(tmp_path / "m.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
    argv = ["eval", "--checkpoint", str(path), "--episodes", "1", "--steps", "1", "--out", str(tmp_path / "e")]
    assert main([*argv, "--horizons", "2", "4", "6", "8", "--quiet"]) == 0
    report = (tmp_path / "e" / "eval.md").read_text()
    assert all(f"PSNR@{h} |" in report for h in (2, 4, 6, 8)), report
    assert "PSNR@8 |" in capsys.readouterr().out


def test_eval_cli_on_a_tiny_model(tmp_path, capsys):
    cfg = make_config(channels=48, chunk_size=2, window=4).model_copy(
        update={"action": ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=16, expert_hidden=16)}
    )
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(path),
                "--no-action",
                str(path),
                "--episodes",
                "2",
                "--horizons",
                "2",
                "4",
                "--steps",
                "1",
                "--out",
                str(out),
                "--plots",
                "--sheet",
                "2",
            ]
        )
        == 0
    )
    results = json.loads((out / "eval.json").read_text())
    assert list(results) == ["free_camera"]
    r = results["free_camera"]
    for label in ("astra", "no_action", "copy_last"):
        assert f"{label}/psnr@4" in r and f"{label}/ssim@2" in r
    assert r["astra/action_following"] > 0 and "astra/responsiveness_psnr" in r
    assert r["astra/psnr@4"] == r["no_action/psnr@4"]  # the same checkpoint twice
    assert "| free_camera | copy_last |" in (out / "eval.md").read_text()
    assert len(r["astra/psnr_curve"]) == 4 and len(r["copy_last/psnr_curve"]) == 4
    assert sum(r["astra/router_usage"]) == pytest.approx(1.0)
    for key in ("tf_psnr", "tf_margin", "tf_sharpness", "sharpness@4", "action_following@2", "action_following@4"):
        assert f"astra/{key}" in r and f"astra/{key}/std" in r
    assert r["astra/action_following"] == r["astra/action_following@4"]
    assert len(r["astra/tf_psnr_by_context"]) == 4 and "copy_last/tf_psnr" in r
    assert r["astra/tf_margin"] == pytest.approx(r["astra/tf_psnr"] - r["copy_last/tf_psnr"], abs=1e-9)
    assert r["astra/sampling_steps"] == 1
    report = (out / "eval.md").read_text()
    assert "| margin dB |" in report and "Settings: astra: 1 sampling steps" in report
    from PIL import Image

    for name in ("psnr_vs_horizon.png", "router_usage.png", "next_step_and_sharpness.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 300
    # Two episodes, each as truth / model / model driven by the other episode's actions, 64 x 64 frames:
    # the start frame and the 4 rolled-out ones. Every row begins with the last context frame; the truth
    # row ends with the episode's frame 4.
    sheet = np.asarray(Image.open(out / "contact_sheet.png")).astype(float)
    assert sheet.shape == (2 * (3 * 64 + 4), 128 + 5 * 64, 3)
    episode = frames_to_uint8(get_registry().worlds["free_camera"].episode(EVAL_SEED, 5).frames).astype(float)
    for row in range(3):  # below the column labels' text
        assert np.abs(sheet[row * 64 + 20 : row * 64 + 64, 128:192] - episode[0, 20:]).max() <= 1
    assert np.abs(sheet[20:64, 128 + 4 * 64 :] - episode[4, 20:]).max() <= 1
    assert np.abs(sheet[20:64, 128 + 4 * 64 :] - episode[0, 20:]).max() > 10  # the camera moved
    printed = capsys.readouterr().out
    assert "written: " + str(out / "router_usage.png") in printed and "contact_sheet.png" in printed
    assert main(["eval", "--checkpoint", str(path), "--sheet", "0", "--out", str(out)]) == 2
    assert "--sheet 0: give the number of episodes" in capsys.readouterr().err
    assert r["astra/warp_residual"] == 1.0  # recorded with the other sampling settings
    # this model predicts a velocity: it has no warp residual to weigh, and says so before any work
    assert main(["eval", "--checkpoint", str(path), "--warp-residual", "0.5", "--out", str(tmp_path / "e2")]) == 2
    assert "warp_residual=0.5: this model predicts 'velocity', not 'warp'" in capsys.readouterr().err
    assert not (tmp_path / "e2" / "eval.json").exists()


def test_eval_of_a_warp_model_anchored_and_re_warping(tmp_path):
    """`astra eval` samples a warp model as its checkpoint says (here anchored) or as `--no-warp-anchor`
    asks: the teacher-forced step starts from true frames, where both are the plain warp, so it scores
    the same; the rollout reads differently after its first chunk; the setting is recorded and printed."""
    from astra_core.config import FlowConfig, SamplerConfig

    cfg = make_config(channels=48, chunk_size=2, window=4)
    cfg = cfg.model_copy(
        update={
            "dit": cfg.dit.model_copy(update={"out_dim": 50}),  # the 48 channels' residual and a flow
            "action": ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=16, expert_hidden=16),
            "flow": FlowConfig(prediction="warp", warp_unshuffle=4),
            "sampler": SamplerConfig(num_steps=1, warp_anchor=True),
        }
    )
    torch.manual_seed(0)
    net = AstraNet(cfg)
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # a small residual and a flow of a few pixels
    path = save_checkpoint(tmp_path / "warp.safetensors", net, tokenizer=PixelTokenizer(4))
    results = {}
    for name, flag in (("anchored", []), ("rewarped", ["--no-warp-anchor"])):
        out = tmp_path / name
        argv = ["eval", "--checkpoint", str(path), "--episodes", "1", "--horizons", "2", "6", "--quiet"]
        assert main([*argv, *flag, "--out", str(out)]) == 0
        results[name] = json.loads((out / "eval.json").read_text())["free_camera"]
        settings = (out / "eval.md").read_text()
        assert ("anchored warp" in settings) == (name == "anchored")
    anchored, rewarped = results["anchored"], results["rewarped"]
    assert anchored["astra/warp_anchor"] == 1.0 and rewarped["astra/warp_anchor"] == 0.0
    assert anchored["astra/tf_psnr"] == pytest.approx(rewarped["astra/tf_psnr"], abs=1e-4)
    assert anchored["astra/psnr@2"] == pytest.approx(rewarped["astra/psnr@2"], abs=1e-4)  # the first chunk
    assert abs(anchored["astra/psnr@6"] - rewarped["astra/psnr@6"]) > 1e-3


def test_sharpness_on_constructed_frames():
    torch.manual_seed(0)
    truth = torch.rand(3, 4, 32, 32) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(truth.flatten(0, 1), 3, stride=1, padding=1).view_as(truth)
    noisy = truth + 0.3 * torch.randn_like(truth)
    assert sharpness(truth, truth) == pytest.approx(1.0)
    assert sharpness(blurred, truth) < 0.5
    assert sharpness(noisy, truth) > 1.2
    assert sharpness(torch.zeros_like(truth), truth) == 0.0
    # a flat truth (a view pressed against a wall) has no detail to compare with: undefined, not huge
    flat = torch.full_like(truth, 0.3)
    assert math.isnan(sharpness(truth, flat)) and math.isnan(sharpness(flat, flat))
    assert sharpness(flat, truth) == 0.0


class _OracleLatent:
    """A latent session that knows the true latents: `step` returns the true next chunk (a perfect
    predictor) or repeats the last known frame (copy-last)."""

    def __init__(self, latents, chunk, perfect):
        self.latents, self.perfect = latents, perfect
        self.history_cfg = type("H", (), {"chunk_size": chunk})()
        self.device = torch.device("cpu")

    def reset(self, context, *actions):
        self.frames = context.shape[2]

    def observe(self, latents, *actions):
        assert torch.equal(latents, self.latents[:, :, self.frames : self.frames + latents.shape[2]])
        self.frames += latents.shape[2]

    def step(self, *actions):
        chunk = self.history_cfg.chunk_size
        if self.perfect:
            return self.latents[:, :, self.frames : self.frames + chunk]
        return self.latents[:, :, self.frames - 1 : self.frames].expand(-1, -1, chunk, -1, -1)


class _OracleWorld:
    def __init__(self, frames, perfect):
        self.tokenizer = PixelTokenizer(4)
        self.frames_per_step = 2
        self.latent = _OracleLatent(self.tokenizer.encode(frames), 2, perfect)

    def align_streams(self, streams, num_frames):
        return {"m": torch.zeros(len(streams), num_frames, 1)}, {"m": torch.ones(len(streams), num_frames)}

    def _for_net(self, vectors, masks):
        return vectors, masks


def test_teacher_forced_step_scores_a_perfect_predictor_above_copy_last():
    from astra_core.plugins import get_registry

    world = get_registry().worlds["free_camera"]
    frames = torch.stack([world.episode(seed, 9).frames for seed in (5, 6)])
    streams = [{"m": None}] * 2
    perfect = teacher_forced(_OracleWorld(frames, True), frames, streams, contexts=4)
    copying = teacher_forced(_OracleWorld(frames, False), frames, streams, contexts=4)
    for good, copy in zip(perfect, copying):
        assert good["tf_margin"] > 20 and good["tf_sharpness"] == pytest.approx(1.0, abs=1e-4)
        assert copy["tf_margin"] == pytest.approx(0.0, abs=1e-6)
        assert good["tf_copy_last_psnr"] == pytest.approx(copy["tf_psnr"], abs=1e-6)
        assert len(good["tf_psnr_by_context"]) == 4
    # an episode whose next frames are one flat colour has no sharpness (NaN, left out of the means)
    flat = frames.clone()
    flat[1] = flat[1, :, :1].mean(dim=(-1, -2), keepdim=True).expand_as(flat[1])
    scored = teacher_forced(_OracleWorld(flat, True), flat, streams, contexts=4)
    assert scored[0]["tf_sharpness"] == pytest.approx(1.0, abs=1e-4) and math.isnan(scored[1]["tf_sharpness"])


# ------------------------------------------------------------------------------------------------
# your own data: astra eval --cache / --reader
# ------------------------------------------------------------------------------------------------
def _reader_fixture(name, tmp_path):
    """Two episodes' inputs for a built-in reader, from test_readers' fixture writers -> PATHS."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import test_readers as tr

    from astra_core.data.video import frames_to_uint8, write_mp4
    from astra_core.plugins import get_registry

    paths = []
    for i in range(2):
        root = tmp_path / f"ep{i}"
        root.mkdir()
        if name == "realestate10k":
            ep = tr._toy_episode(frames=9)
            tr._write_re10k(root / "clip.txt", ep.actions["camera_se3"], np.arange(9) * 100_000)
            write_mp4(root / "clip.mp4", frames_to_uint8(ep.frames), fps=10)
            paths.append(root / "clip.txt")
        elif name == "spatialvid":
            folder, _ = tr._write_spatialvid(root, tr._toy_episode(frames=9), stride=2)
            paths.append(folder)
        elif name == "robot_hdf5":
            paths.append(tr._write_robomimic(root / "lift.hdf5", demos=1, frames=9))
        elif name == "nuscenes":
            tables, _ = tr._write_nuscenes(root, frames=9)
            paths.append(f"{tables}:scene-0061")
        elif name == "lerobot":
            tr._write_lerobot(root, "v2.1", episodes=1, frames=9)
            paths.append(f"{root}:0")
        elif name == "rt1_tfrecord":
            shard = root / "fractal20220817_data-train.tfrecord-00000-of-01024"
            shard.write_bytes(tr._frame(tr._example(steps=5, seed=i)[0]))
            paths.append(shard)
        elif name == "game_log":
            ep = get_registry().get("worlds", "keyboard_game").episode(seed=3 + i, num_frames=9)
            write_mp4(root / "run.mp4", frames_to_uint8(ep.frames), fps=20)
            records = [{"keyboard": {"keys": ["key.keyboard.w"]}, "mouse": {"dx": 1.0, "dy": 0}}] * 9
            (root / "run.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
            paths.append(root / "run.mp4")
    return [str(p) for p in paths]


READERS = ["realestate10k", "spatialvid", "robot_hdf5", "nuscenes", "lerobot", "rt1_tfrecord", "game_log"]


@pytest.mark.parametrize("reader", READERS)
def test_eval_scores_the_shipped_model_on_each_readers_fixture(reader, tmp_path, capsys):
    from astra_core.apps.cli import main

    paths = _reader_fixture(reader, tmp_path)
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--checkpoint",
            str(SHIPPED),
            "--reader",
            reader,
            *paths,
            "--all-episodes",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "eval.json").read_text())
    (figures,) = results.values()
    for key in ("astra/psnr@", "copy_last/psnr@", "astra/action_following@"):
        assert any(k.startswith(key) for k in figures), key
    # the rt1 fixture's frames are each one flat colour: no detail to compare with, so no sharpness
    has_sharpness = any(k.startswith("astra/sharpness@") for k in figures)
    assert has_sharpness == (reader != "rt1_tfrecord") and ("astra/tf_sharpness" in figures) == has_sharpness
    assert "astra/tf_margin" in figures and "copy_last/tf_psnr" in figures
    assert math.isfinite(figures["astra/tf_psnr"])
    assert "next step PSNR" in capsys.readouterr().out


def test_eval_reads_a_readers_files_at_the_frame_size_the_model_was_trained_on(tmp_path, capsys):
    from astra_core.world import WorldModel

    shipped = WorldModel.from_checkpoint(SHIPPED)
    small = save_checkpoint(
        tmp_path / "small.safetensors", shipped.net, tokenizer=shipped.tokenizer, frame_size=(48, 48)
    )
    paths = _reader_fixture("realestate10k", tmp_path)
    argv = ["eval", "--reader", "realestate10k", *paths, "--all-episodes", "--steps", "1", "--horizons", "4"]
    assert main([*argv, "--checkpoint", str(small), "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    assert "realestate10k" in json.loads((tmp_path / "eval" / "eval.json").read_text())
    capsys.readouterr()
    # two checkpoints of different frame sizes cannot share one reading of the files
    code = main([*argv, "--checkpoint", str(small), "--no-action", str(SHIPPED), "--out", str(tmp_path / "two")])
    assert code == 2 and "trained on frames of different sizes" in capsys.readouterr().err
    assert not (tmp_path / "two").exists()


def test_eval_on_a_cache_uses_the_held_out_episodes_of_the_training_split(tmp_path, capsys):
    from astra_core.apps.cli import main
    from astra_core.data.cache import read_shard, split_episodes

    cache = tmp_path / "cache"
    assert main(["encode", "--world", "car", "--episodes", "12", "--frames", "9", "--out", str(cache)]) == 0
    capsys.readouterr()
    episodes = [e for p in sorted(cache.glob("shard-*.h5")) for e in read_shard(p)]
    train, held = split_episodes(episodes)
    assert len(held) == 1 and {e.source for e in held}.isdisjoint({e.source for e in train})
    out = tmp_path / "eval"
    argv = ["eval", "--cache", str(cache / "*.h5"), "--steps", "1", "--out", str(out)]  # the shipped model
    threads = torch.get_num_threads()
    try:
        assert main([*argv, "--quiet", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert "eval car" not in capsys.readouterr().err  # --quiet: no progress bar
    car = json.loads((out / "eval.json").read_text())["car"]
    assert main([*argv[:1], "--checkpoint", str(SHIPPED), *argv[1:], "--quiet"]) == 0  # named: the same figures
    named = json.loads((out / "eval.json").read_text())["car"]
    scalars = {k: v for k, v in car.items() if isinstance(v, float)}
    assert len(scalars) > 10 and {k: named[k] for k in scalars} == pytest.approx(scalars, rel=1e-5, nan_ok=True)
    assert "astra/action_following@8" not in car  # one held-out episode: nothing to swap actions with
    assert "astra/psnr@8" in car and car["astra/tf_margin/std"] == 0.0
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(SHIPPED),
                "--cache",
                str(cache / "*.h5"),
                "--all-episodes",
                "--steps",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "eval car" in capsys.readouterr().err
    assert "astra/action_following@8" in json.loads((out / "eval.json").read_text())["car"]


def test_split_holds_out_whole_episodes_and_training_never_sees_them(tmp_path):
    """No episode on both sides: the trainer's held-out clips come only from held-out episodes."""
    from astra_core.apps.cli import main
    from astra_core.apps.train import Trainer
    from astra_core.config import TrainConfig
    from astra_core.data.cache import read_shard, split_episodes

    cache = tmp_path / "cache"
    assert main(["encode", "--world", "free_camera", "--episodes", "20", "--frames", "9", "--out", str(cache)]) == 0
    episodes = [e for p in sorted(cache.glob("shard-*.h5")) for e in read_shard(p)]
    train, held = split_episodes(episodes)
    assert [e.source for e in held] == [episodes[0].source, episodes[1].source]  # the first 10 % in order
    cfg = TrainConfig.from_dict(
        {
            "model": {
                "dit": TINY_DIT,
                "action": {"encoder": "moae", "modalities": ["camera_se3"], "token_dim": 8, "expert_hidden": 8},
                "history": {"chunk_size": 2, "window": 2},
            },
            "data": {
                "source": "cache",
                "cache": [str(cache / "*.h5")],
                "weights": {"free_camera": 1.0},
                "history_chunks": 1,
            },
            "steps": 1,
            "out_dir": str(tmp_path / "run"),
        }
    )
    trainer = Trainer(cfg, progress=False)

    def from_held(clip):
        return any(torch.equal(clip.latents[:, 0], e.latents[:, t]) for e in held for t in range(e.latents.shape[1]))

    assert trainer.held_out["free_camera"] and all(from_held(c) for c in trainer.held_out["free_camera"])
    assert not any(from_held(c) for c in trainer.pools["free_camera"])


def test_eval_refuses_data_and_worlds_the_checkpoint_does_not_cover(tmp_path, capsys):
    from astra_core.apps.cli import main
    from astra_core.checkpoint import save_checkpoint
    from astra_core.config import ActionConfig, AstraConfig, dit_preset
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.actions import AstraNet

    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=48, out_dim=48),
        action=ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=8, expert_hidden=8),
    )
    path = save_checkpoint(tmp_path / "cam.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
    cache = tmp_path / "cache"
    assert main(["encode", "--world", "tabletop_arm", "--episodes", "2", "--frames", "5", "--out", str(cache)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path), "--cache", str(cache / "*.h5"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "modalities ['camera_se3'] cover none of the data's modalities ['robot_ee']" in err
    assert not (tmp_path / "e").exists()
    assert main(["eval", "--checkpoint", str(path), "--out", str(tmp_path / "e"), "somefile"]) == 2
    assert "without --reader" in capsys.readouterr().err


def test_the_benchmark_refuses_a_checkpoint_that_drives_no_toy_world(tmp_path, capsys):
    """A model of a plugin's modality alone: `astra eval` without --cache/--reader is one clear error,
    never an empty table with exit 0."""
    import types

    from astra_core import hookimpl
    from astra_core.config import AstraConfig, dit_preset
    from astra_core.modality import AlignedActions, Modality
    from astra_core.plugins import plugins, reset_plugins

    class Sonar(Modality):
        name, action_dim, raw_format = "sonar_ping", 2, "[T, 2]"

        def align(self, raw, temporal_factor):
            return AlignedActions(raw, raw[:, 0] * 0 + 1)

    module = types.ModuleType("sonar_plugin")
    module.astra_register_modalities = hookimpl(lambda register: register(Sonar()))
    reset_plugins()
    try:
        plugins().register_plugin(module, "sonar")
        cfg = AstraConfig(
            dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=48, out_dim=48),
            action=ActionConfig(encoder="moae", modalities=("sonar_ping",), token_dim=8, expert_hidden=8),
        )
        path = save_checkpoint(tmp_path / "sonar.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
        assert main(["eval", "--checkpoint", str(path), "--episodes", "1", "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err
        assert "['sonar_ping'] drive none of the toy worlds" in err and "--cache or --reader" in err
        assert not (tmp_path / "e").exists()
    finally:
        reset_plugins()


def test_bf16_sessions_match_fp32_within_the_teacher_forced_tolerance():
    """The DiT in bf16 (`precision="bf16"`, `--precision bf16`): the teacher-forced next step of the
    shipped model stays close to fp32 on every world (0.5 dB on these 2 episodes; docs/results.md has
    the benchmark's 20); the action path stays in float32."""
    from astra_core.apps.evaluate import teacher_forced
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    models = {p: WorldModel.from_checkpoint(None, precision=p) for p in ("fp32", "bf16")}
    assert next(models["bf16"].net.dit.parameters()).dtype == torch.bfloat16
    assert models["bf16"].latent.dtype == torch.bfloat16
    assert next(models["bf16"].net.moae.parameters()).dtype == torch.float32
    for world in get_registry().worlds.values():
        eps = [world.episode(3_100_000 + i, 5) for i in range(2)]
        frames = torch.stack([e.frames for e in eps])
        streams = [{world.modality: e.actions[world.modality]} for e in eps]
        psnr = {p: sum(r["tf_psnr"] for r in teacher_forced(m, frames, streams, 2)) / 2 for p, m in models.items()}
        assert abs(psnr["bf16"] - psnr["fp32"]) < 0.5, (world.name, psnr)
    with pytest.raises(ShapeError, match="precision 'fp16'"):
        WorldModel.from_checkpoint(None, precision="fp16")


def test_next_step_table_lists_each_following_horizon_once():
    from astra_core.apps.evaluate import next_step_table

    r = {"astra/tf_psnr": 30.0, "copy_last/tf_psnr": 28.0, "astra/tf_margin": 2.0, "astra/action_following@16": 1.5}
    one = next_step_table({"arm": r}, (16,))
    assert one.count("action following@16") == 1 and "| 2.00 |" in one and "| 1.50 |" in one
    two = next_step_table({"arm": {**r, "astra/action_following@32": 1.2}}, (16, 32))
    assert "action following@16 | action following@32" in two and two.splitlines()[2].endswith("| 1.50 | 1.20 |")


def test_rollout_table_marks_a_horizon_an_embodiment_could_not_reach():
    from astra_core.apps.evaluate import markdown_table

    long = {"astra/psnr@16": 30.0, "astra/psnr_changed@16": 20.0, "astra/ssim@16": 0.9, "astra/psnr@32": 28.0}
    long.update({"astra/psnr_changed@32": 19.0, "astra/ssim@32": 0.8})
    short = {"astra/psnr@16": 25.0, "astra/psnr_changed@16": 18.0, "astra/ssim@16": 0.7}
    table = markdown_table({"arm": long, "highway": short}, (16, 32))
    assert "| highway | astra | 25.00 | 18.00 | 0.700 | – | – | – |" in table and "nan" not in table


def test_min_frames_leaves_short_episodes_out_instead_of_cutting_every_episode(tmp_path):
    """A crash-ended episode among long ones: without --min-frames every episode of the embodiment is
    cut to its length (horizon 16 is lost); with it, that episode is left out, and the count says so."""
    from astra_core.apps.evaluate import EvalSettings, evaluate_data, markdown_table
    from astra_core.errors import AstraError, ConfigError
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    car = get_registry().worlds["car"]
    episodes = [car.episode(1_000_000 + i, n) for i, n in enumerate((17, 9, 17))]
    models = {"astra": WorldModel.from_checkpoint(SHIPPED, num_steps=1)}
    cut = evaluate_data(episodes, models, EvalSettings(horizons=(16,)), progress=False, replay=False)["car"]
    assert "astra/psnr@16" not in cut and "astra/psnr@8" in cut and cut["episodes_left_out"] == 0
    settings = EvalSettings(horizons=(16,), min_frames=17)
    kept = evaluate_data(episodes, models, settings, progress=False, replay=False)
    assert "astra/psnr@16" in kept["car"] and kept["car"]["episodes"] == 2 and kept["car"]["episodes_left_out"] == 1
    table = markdown_table(kept, (16,))
    assert "car 2 (car: 1 shorter than --min-frames left out)" in table and "| car | episodes |" not in table
    with pytest.raises(AstraError, match="no episode has --min-frames 40 frames \\(the longest has 17\\)"):
        evaluate_data(episodes, models, EvalSettings(horizons=(16,), min_frames=40), progress=False, replay=False)
    with pytest.raises(ConfigError, match="min_frames=-1"):
        EvalSettings(min_frames=-1)


def test_the_flags_for_your_own_episodes_are_refused_on_the_toy_benchmark(capsys, tmp_path):
    out = tmp_path / "eval"
    for flags, named in (
        (["--min-frames", "20"], "--min-frames"),
        (["--all-episodes"], "--all-episodes"),
        (["--no-replay", "--all-episodes"], "--all-episodes and --no-replay"),
    ):
        assert main(["eval", "--checkpoint", str(SHIPPED), *flags, "--episodes", "1", "--out", str(out)]) == 2
        assert f"{named}: for your own episodes (--cache or --reader)" in capsys.readouterr().err
    assert not out.exists()
