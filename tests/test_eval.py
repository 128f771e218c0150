import json

import pytest
import torch
from _helpers import make_config

from astra_core.checkpoint import save_checkpoint
from astra_core.cli import main
from astra_core.config import ActionConfig
from astra_core.evaluate import psnr, sharpness, ssim, teacher_forced
from astra_core.model.actions import AstraNet
from astra_core.tokenizer import PixelTokenizer


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
    assert "written: " + str(out / "router_usage.png") in capsys.readouterr().out


def test_sharpness_on_constructed_frames():
    torch.manual_seed(0)
    truth = torch.rand(3, 4, 32, 32) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(truth.flatten(0, 1), 3, stride=1, padding=1).view_as(truth)
    noisy = truth + 0.3 * torch.randn_like(truth)
    assert sharpness(truth, truth) == pytest.approx(1.0)
    assert sharpness(blurred, truth) < 0.5
    assert sharpness(noisy, truth) > 1.2
    assert sharpness(torch.zeros_like(truth), truth) == 0.0


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
