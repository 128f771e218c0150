import json

import pytest
import torch
from _helpers import make_config

from astra_core.checkpoint import save_checkpoint
from astra_core.cli import main
from astra_core.config import ActionConfig
from astra_core.evaluate import psnr, ssim
from astra_core.model.actions import AstraNet
from astra_core.tokenizer import PixelTokenizer


def test_psnr_and_ssim_basics():
    x = torch.rand(3, 4, 32, 32) * 2 - 1
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    assert psnr(x, x) > 90 and abs(ssim(x, x) - 1) < 1e-5
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
    from PIL import Image

    for name in ("psnr_vs_horizon.png", "router_usage.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 300
    assert "written: " + str(out / "router_usage.png") in capsys.readouterr().out
