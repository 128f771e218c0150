"""`astra ablate`: variant configs, a whole (tiny) ablation run, reuse of finished runs, the results section."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from astra_core.apps.ablate import MARK_END, MARK_START, VARIANTS, variant_config
from astra_core.apps.cli import main
from astra_core.checkpoint import load_checkpoint
from astra_core.config import TrainConfig
from astra_core.errors import ConfigError
from astra_core.model.moae import FixedRouter, SharedActionEncoder

BASE = {
    "model": {
        "dit": {
            "preset": "tiny",
            "dim": 32,
            "ffn_dim": 64,
            "num_heads": 2,
            "num_layers": 1,
            "in_dim": 48,
            "out_dim": 48,
        },
        "action": {"encoder": "moae", "modalities": ["camera_se3", "robot_ee"], "token_dim": 16, "expert_hidden": 16},
        "history": {"chunk_size": 2, "window": 4},
        "guidance": {"action_dropout": 0.1, "scale": 1.5},
        "sampler": {"num_steps": 1},
    },
    "data": {
        "weights": {"free_camera": 1.0, "tabletop_arm": 1.0},
        "episodes_per_world": 2,
        "held_out_per_world": 1,
        "episode_frames": 9,
    },
    "optim": {"warmup_steps": 1},
    "steps": 2,
    "batch_size": 2,
    "eval_every": 0,
    "checkpoint_every": 0,
    "log_every": 1,
}


def test_variant_configs_change_only_their_fields(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    base = TrainConfig.from_yaml(path)
    for name, variant in VARIANTS.items():
        cfg = variant_config(base, variant, tmp_path / name, steps=7)
        assert cfg.steps == 7 and cfg.out_dir == str(tmp_path / name)
        fields = ("guidance", "history", "action", "dit")
        diff = {k for k in fields if getattr(cfg.model, k) != getattr(base.model, k)}
        expected = {
            "full": set(),
            "no_afg": {"guidance"},
            "no_noise_history": {"history"},
            "action_modulation": {"dit"},
        }
        assert diff == expected.get(name, {"action"}), name
    no_afg = variant_config(base, VARIANTS["no_afg"], tmp_path, None).model.guidance
    assert no_afg.action_dropout == 0 and no_afg.scale == 1.0
    assert variant_config(base, VARIANTS["no_noise_history"], tmp_path, None).model.history.noise_prob == 0


def test_ablation_runs_every_variant_and_writes_the_table(tmp_path, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(BASE))
    results_md = tmp_path / "results.md"
    results_md.write_text("# Results\n\nearlier text\n")
    out = tmp_path / "ablate"
    args = ["ablate", str(config), "--out", str(out), "--eval-episodes", "1", "--horizons", "16"]
    # Two variants at a time in worker processes, as on the 2-core machine.
    assert main(args + ["--results", str(results_md), "--quiet", "--jobs", "2"]) == 0
    table = capsys.readouterr().out
    for name in VARIANTS:
        assert f"| {name} |" in table
    data = json.loads((out / "ablation.json").read_text())
    assert list(data["variants"]) == list(VARIANTS)
    assert set(data["per_embodiment"]["full"]) == {"free_camera", "tabletop_arm"}
    for summary in data["variants"].values():
        assert summary["psnr@16"] > 0 and summary["action_following"] > 0
    # Copy-last-frame is scored on the same episodes as the variants: one reference row.
    assert data["baseline"]["psnr@16"] > 0 and "action_following" not in data["baseline"]
    assert "| copy last frame |" in table
    # The variants really are different models.
    shared = load_checkpoint(out / "shared_encoder" / "model.safetensors")
    fixed = load_checkpoint(out / "fixed_router" / "model.safetensors")
    assert isinstance(shared.moae, SharedActionEncoder) and isinstance(fixed.moae.router, FixedRouter)
    text = results_md.read_text()
    assert "earlier text" in text and text.count(MARK_START) == 1 and "| no_afg |" in text
    assert data["jobs"] == 2 and data["threads_per_job"] >= 1
    # A second run reuses the finished trainings (same weights) and their evaluations, and replaces
    # the section in place.
    before = load_checkpoint(out / "full" / "model.safetensors").state_dict()
    evaluated = (out / "full" / "ablate_eval.json").stat().st_mtime_ns
    assert main(args + ["--variants", "full", "--results", str(results_md), "--quiet"]) == 0
    after = load_checkpoint(out / "full" / "model.safetensors").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (out / "full" / "ablate_eval.json").stat().st_mtime_ns == evaluated
    again = json.loads((out / "ablation.json").read_text())
    assert again["variants"]["full"] == data["variants"]["full"]
    text = results_md.read_text()
    assert text.count(MARK_START) == 1 and text.count(MARK_END) == 1 and "| no_afg |" not in text


def test_unknown_variant(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="unknown \\['no_moae'\\]"):
        from astra_core.apps.ablate import run_ablation

        run_ablation(config, tmp_path, variants=["no_moae"])


def test_a_worker_whose_parent_dies_gets_sigterm(tmp_path):
    """`--jobs` workers stop (and their trainers checkpoint) when the ablation process is killed."""
    import subprocess
    import sys
    import time

    flag = tmp_path / "stopped"
    grandchild = (
        "import signal, sys, time\n"
        "from astra_core.apps.ablate import stop_when_orphaned\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(flag)!r}, 'w').close(), sys.exit(0)))\n"
        "stop_when_orphaned(int(sys.argv[1]), interval=0.05)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {grandchild!r}, str(os.getpid())], stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "os._exit(0)\n"  # the parent dies without stopping its child
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().isdigit()
    deadline = time.time() + 20
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists()
