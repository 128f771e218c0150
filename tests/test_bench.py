"""The GPU check's code path, run on CPU at a tiny size: it must work before a GPU session spends
its few minutes on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    return gpu_check


def test_gpu_check_times_cache_against_recompute_on_cpu(gpu_check, capsys):
    # fp32: a CPU without native bf16 (AVX2) emulates a bf16 matmul far below the peak of its fp32 ones
    size = ["--height", "64", "--width", "64", "--chunk", "2"]
    args = ["--device", "cpu", "--preset", "tiny", *size, "--precision", "fp32"]
    assert gpu_check.main([*args, "--repeats", "1", "--peak-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "16 tokens per latent frame" in out and "history 1 + 4 frames (80 tokens)" in out
    cached, recompute = (
        float(re.search(rf"^{name}\s+([\d.]+)", out, re.M).group(1)) for name in ("kv cache", "recompute")
    )
    assert cached > 0 and recompute > 0
    ratio = float(re.search(r"recompute / kv cache = ([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(recompute / cached, rel=0.05, abs=0.01)
    mfu = float(re.search(r"MFU ([\d.]+)%", out).group(1))
    assert 0 < mfu < 100


def test_gpu_check_refuses_sizes_the_latents_cannot_tile(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu", "--preset", "tiny", "--height", "60", "--width", "64"]) == 2
    assert "multiples of 16" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA device")
def test_gpu_check_without_cuda_says_so_and_fails(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out
    env = {**os.environ, "PYTHON": sys.executable}
    shell = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, env=env)
    assert shell.returncode == 2 and "no CUDA device" in shell.stderr


def test_rollout_casts_actions_for_the_action_path_when_only_the_dit_is_bf16():
    """A bf16 DiT beside a float32 action encoder (what --precision bf16 builds): actions go to the
    encoder in float32, the DiT gets bf16."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet
    from astra_core.model.rollout import LatentWorldModel

    torch.manual_seed(0)
    config = AstraConfig(
        dit=dit_preset("tiny", in_dim=4, out_dim=4, num_layers=1),
        action=ActionConfig(action_dim=3),
        history=HistoryConfig(chunk_size=1, window=2),
    )
    net = AstraNet(config).eval()
    net.dit.to(torch.bfloat16)
    wm = LatentWorldModel(net, num_steps=1)
    wm.reset(torch.randn(1, 4, 1, 4, 4))
    out = wm.step(torch.randn(1, 1, 3))
    assert wm.action_dtype == torch.float32 and wm.dtype == torch.bfloat16
    assert out.shape == (1, 4, 1, 4, 4) and torch.isfinite(out).all()


def test_arm_response_probe_sees_the_shipped_model_answer_position_commands(monkeypatch):
    """`bench/arm_response.py`: the shipped model moves the arm the way the world does after opposite
    position commands (a positive correlation at the first frame), and every figure is a real number."""
    monkeypatch.syspath_prepend(str(BENCH))
    import arm_response

    from astra_core.world import WorldModel

    rows = arm_response.arm_response(WorldModel.from_checkpoint(None), [3_000_000, 3_000_001])
    (corr, energy), (grip_corr, grip_energy) = rows.values()
    assert len(corr) == len(energy) == arm_response.FRAMES
    assert corr[0] > 0.3 and 0 < energy[0] < 2
    assert all(-1 <= c <= 1 for c in corr + grip_corr) and all(e >= 0 for e in grip_energy)


def test_following_by_chunk_ratio_and_the_shipped_model_reading_the_arms_actions(monkeypatch):
    """`bench/following_by_chunk.py`: the ratio is the other actions' error over the true ones' (2 where
    the error doubles, per episode then averaged); on the shipped model, given the true frames, other
    actions for a chunk make its prediction worse at every chunk scored."""
    monkeypatch.syspath_prepend(str(BENCH))
    import following_by_chunk

    from astra_core.world import WorldModel

    truth = torch.zeros(2, 3, 2, 4, 4)
    true = truth + torch.tensor([1.0, 2.0])[:, None, None, None, None]
    assert following_by_chunk._ratio(true * 2**0.5, true, truth) == pytest.approx(2.0)
    assert following_by_chunk._ratio(true, true, truth) == pytest.approx(1.0)

    rows = following_by_chunk.following_by_chunk(
        WorldModel.from_checkpoint(None), "tabletop_arm", [3_000_000, 3_000_001], chunks=3
    )
    assert set(rows) == {"rollout", "teacher-forced"}
    assert all(len(v) == 3 for v in rows.values())
    assert min(rows["teacher-forced"]) > 1.05 and rows["rollout"][0] > 1.05


def test_resampling_detail_sees_bicubic_ring_and_catmull_rom_not(monkeypatch, capsys):
    """`bench/resampling_detail.py`: warps that cancel out leave a true frame in place; after 48 of them
    grid_sample's bicubic kernel has added detail that is not there (ringing), Catmull–Rom has not, and
    keeps the frame closer to the truth."""
    monkeypatch.syspath_prepend(str(BENCH))
    import resampling_detail

    from astra_core.apps.evaluate import psnr, sharpness
    from astra_core.plugins import get_registry

    frames = get_registry().worlds["free_camera"].episode(3_000_000, 1).frames[:, 0][None].float()
    back = resampling_detail.resampled(frames, 2, 1.0, "bilinear")  # a pixel there and back: only the border lost
    assert torch.allclose(back[..., 1:-1, 1:-1], frames[..., 1:-1, 1:-1], atol=1e-5)
    ringing = resampling_detail.resampled(frames, 48, 0.5, "bicubic")
    damped = resampling_detail.resampled(frames, 48, 0.5, "catmull_rom")
    assert sharpness(ringing, frames) > 2 and sharpness(damped, frames) < 1
    assert psnr(damped, frames) > psnr(ringing, frames) + 5
    monkeypatch.setattr(sys, "argv", ["resampling_detail.py", "--episodes", "1", "--warps", "2", "--shifts", "0.5"])
    resampling_detail.main()
    table = capsys.readouterr().out
    assert "| tabletop_arm | catmull_rom | 0.5 |" in table and table.count("\n") == 2 + 4 * 3


def test_bench_train_times_the_toy_recipe_past_its_opening_phase(monkeypatch, capsys):
    """`bench/bench_train.py` on the shipped recipe: its warm-up waits for every history layout, which the
    recipe's 2,000-step opening (one world, no history) would withhold; the bench times the main mix."""
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_train

    args = ["bench_train.py", "--steps", "1", "--episodes", "2", "--variants", "fp32"]
    monkeypatch.setattr(sys, "argv", args)
    bench_train.main()
    out = capsys.readouterr().out
    warmup = re.search(r"^fp32 .*1\.00x\s+(\d+) steps in", out, re.M)
    assert warmup and int(warmup.group(1)) < 100, out
