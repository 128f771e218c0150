"""`astra ablate`: variant configs, a whole (tiny) ablation run over seeds, reuse of finished runs, the
seeds' spread and the gaps it allows, the learned router's analysis, the results section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from astra_core.apps.ablate import (
    MARK_END,
    MARK_START,
    VARIANTS,
    changed_fields,
    differences,
    differences_by_world,
    mean_and_spread,
    only_expert,
    variant_config,
)
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
            "in_dim": 96,
            "out_dim": 48,
        },
        "action": {"encoder": "moae", "modalities": ["camera_se3", "robot_ee"], "token_dim": 16, "expert_hidden": 16},
        "history": {"chunk_size": 2, "window": 4, "last_frame_channels": True},
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
        cfg = variant_config(base, variant, tmp_path / name, steps=7, seed=3)
        assert cfg.steps == 7 and cfg.out_dir == str(tmp_path / name) and cfg.seed == 3
        fields = ("guidance", "history", "action", "dit")
        diff = {k for k in fields if getattr(cfg.model, k) != getattr(base.model, k)}
        expected = {
            "full": set(),
            "no_afg": {"guidance"},
            "no_noise_history": {"history"},
            "action_modulation": {"dit"},
            "no_frame_channels": {"history", "dit"},
        }
        assert diff == expected.get(name, {"action"}), name
    assert variant_config(base, VARIANTS["full"], tmp_path, None).seed == base.seed
    frames = variant_config(base, VARIANTS["no_frame_channels"], tmp_path, None).model
    assert not frames.history.last_frame_channels and frames.dit.in_dim == 48
    without = TrainConfig.model_validate({**base.model_dump(mode="json"), "model": frames.model_dump(mode="json")})
    with pytest.raises(ConfigError, match="no last frame on the input channels"):
        variant_config(without, VARIANTS["no_frame_channels"], tmp_path, None)
    no_afg = variant_config(base, VARIANTS["no_afg"], tmp_path, None).model.guidance
    assert no_afg.action_dropout == 0 and no_afg.scale == 1.0
    assert variant_config(base, VARIANTS["no_noise_history"], tmp_path, None).model.history.noise_prob == 0


def test_ablation_runs_every_variant_over_seeds_and_writes_the_table(tmp_path, capsys):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(BASE))
    results_md = tmp_path / "results.md"
    results_md.write_text("# Results\n\nearlier text\n")
    out = tmp_path / "ablate"
    args = ["ablate", str(config), "--out", str(out), "--eval-episodes", "1", "--horizons", "16"]
    # Every variant with one seed, two runs at a time in worker processes, as on the 2-core machine.
    assert main(args + ["--seeds", "0", "--results", str(results_md), "--quiet", "--jobs", "2"]) == 0
    table = capsys.readouterr().out
    for name in VARIANTS:
        assert f"| {name} |" in table
    data = json.loads((out / "ablation.json").read_text())
    assert list(data["variants"]) == list(VARIANTS) and data["seeds"] == [0]
    assert set(data["per_embodiment"]["full"]["0"]) == {"free_camera", "tabletop_arm"}
    for name, summary in data["variants"].items():
        assert summary["psnr@16"] > 0 and summary["action_following@16"] > 0, name
        assert {"tf_margin", "tf_sharpness", "sharpness@16"} <= set(summary), name
        assert all(v == 0 for v in data["spread"][name].values())  # one seed: no spread
    # Copy-last-frame is scored on the same episodes as the variants: one reference row.
    assert data["baseline"]["psnr@16"] > 0 and "action_following@16" not in data["baseline"]
    assert "| copy last frame |" in table
    # The variants really are different models.
    shared = load_checkpoint(out / "shared_encoder" / "seed-0" / "model.safetensors")
    fixed = load_checkpoint(out / "fixed_router" / "seed-0" / "model.safetensors")
    assert isinstance(shared.moae, SharedActionEncoder) and isinstance(fixed.moae.router, FixedRouter)
    plain = load_checkpoint(out / "no_frame_channels" / "seed-0" / "model.safetensors")
    assert plain.config.dit.in_dim == 48 and not plain.config.history.last_frame_channels
    # What the learned routers learned, for the variants that have one; none for the fixed table.
    assert set(data["router"]) == set(VARIANTS) - {"shared_encoder", "fixed_router"}
    arm = data["router"]["full"]["0"]["tabletop_arm"]
    assert arm["modality"] == "robot_ee" and len(arm["tf_psnr_expert_alone"]) == 4
    assert sum(arm["usage"]) == pytest.approx(1.0) and arm["tf_psnr"] > 0
    assert (out / "router.png").is_file() and "expert 0 alone" in table
    text = results_md.read_text()
    assert "earlier text" in text and text.count(MARK_START) == 1 and "| no_afg |" in text
    assert data["jobs"] == 2 and data["threads_per_job"] >= 1
    seconds = data["seconds"]["full"]["0"]
    assert seconds["train_cpu"] > 0 and seconds["eval_cpu"] > 0 and seconds["train"] > 0
    assert re.search(r"CPU-minutes \(2 runs at a time, \d+ torch threads? each;", text)
    assert json.loads((out / "full" / "seed-0" / "done.json").read_text())["jobs"] == 2
    # A second seed for two variants: seed 0's runs are reused (same weights, same evaluation), seed 1
    # trains; the table gives the mean and the spread, and the gaps that exceed it.
    before = load_checkpoint(out / "full" / "seed-0" / "model.safetensors").state_dict()
    evaluated = (out / "full" / "seed-0" / "ablate_eval.json").stat().st_mtime_ns
    two = ["--variants", "full", "no_afg", "--seeds", "0", "1", "--results", str(results_md), "--quiet"]
    assert main(args + two) == 0
    table = capsys.readouterr().out
    after = load_checkpoint(out / "full" / "seed-0" / "model.safetensors").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (out / "full" / "seed-0" / "ablate_eval.json").stat().st_mtime_ns == evaluated
    again = json.loads((out / "ablation.json").read_text())
    assert again["runs"]["full"]["0"] == data["variants"]["full"]
    runs = [again["runs"]["full"][s]["psnr@16"] for s in ("0", "1")]
    assert runs[0] != runs[1]  # another seed, another model
    assert again["variants"]["full"]["psnr@16"] == pytest.approx(sum(runs) / 2)
    assert again["spread"]["full"]["psnr@16"] == pytest.approx(abs(runs[0] - runs[1]))
    assert set(again["differences"]) == {"no_afg"} and "- no_afg: " in table and " ± " in table
    by_world = again["differences_by_world"]["no_afg"]
    assert set(by_world) == {"free_camera", "tabletop_arm"} and "tf_margin" in by_world["tabletop_arm"]
    text = results_md.read_text()
    assert text.count(MARK_START) == 1 and text.count(MARK_END) == 1 and "| shared_encoder |" not in text
    assert "seeds 0, 1" in text
    # The header says how each run trained, from the runs' records, not from this command alone.
    assert "2 runs: one run at a time, " in text and "2 runs: 2 runs at a time, " in text
    # A run's records alone (done.json, ablate_eval.json), the weights and state dropped and the folder
    # moved, still count as a finished, evaluated run: the table is rebuilt without training.
    kept = tmp_path / "kept"
    for seed in ("seed-0", "seed-1"):
        (kept / "full" / seed).mkdir(parents=True)
        for record in ("done.json", "ablate_eval.json"):
            (out / "full" / seed / record).rename(kept / "full" / seed / record)
    rebuilt = ["ablate", str(config), "--out", str(kept), "--eval-episodes", "1", "--horizons", "16"]
    assert main(rebuilt + ["--variants", "full", "--quiet"]) == 0
    assert json.loads((kept / "ablation.json").read_text())["runs"]["full"] == again["runs"]["full"]
    assert sorted(p.name for p in (kept / "full" / "seed-0").iterdir()) == ["ablate_eval.json", "done.json"]
    # ... but not under other benchmark settings (nothing to evaluate), nor for a changed config.
    capsys.readouterr()
    assert main(rebuilt[:4] + ["--eval-episodes", "2", "--horizons", "16", "--variants", "full", "--quiet"]) == 2
    assert "seed-0 holds a finished run without its weights" in capsys.readouterr().err
    changed = {**BASE, "optim": {"warmup_steps": 1, "lr": 0.002}}
    config.write_text(yaml.safe_dump(changed))
    assert main(rebuilt + ["--variants", "full", "--quiet"]) == 2
    assert "holds a finished run of another config (fields optim.lr)" in capsys.readouterr().err


def test_changed_fields_name_what_differs_and_skip_fields_the_record_predates(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = TrainConfig.from_yaml(path)
    stored = cfg.model_dump(mode="json")
    assert changed_fields(stored, cfg.model_copy(update={"out_dir": "elsewhere"})) == []  # records may move
    wider = cfg.model_dump(mode="json")
    wider["model"]["dit"]["dim"] = 64
    assert changed_fields(wider, cfg) == ["model.dit.dim"]
    older = cfg.model_dump(mode="json")
    del older["model"]["history"]["noise_prob"]  # a record written before the field existed: its default
    assert changed_fields(older, cfg) == []
    assert changed_fields(older, variant_config(cfg, VARIANTS["no_noise_history"], tmp_path, None)) == [
        "model.history.noise_prob"
    ]


def test_how_the_runs_trained_comes_from_their_records():
    from astra_core.apps.ablate import how_trained

    two = {"jobs": 2, "threads": 1}
    assert how_trained([two, two]) == "2 runs at a time, 1 torch thread each"
    assert how_trained([{"jobs": 1, "threads": 2}]) == "one run at a time, 2 torch threads each"
    mixed = how_trained([two, {"jobs": 1, "threads": 2}, {"jobs": None, "threads": None}])
    assert mixed == (
        "1 run: one run at a time, 2 torch threads each; 1 run: 2 runs at a time, 1 torch thread each; "
        "1 run: not in the records"
    )


def test_gaps_within_the_seeds_spread_count_as_none():
    full, spread_full = mean_and_spread([{"psnr@16": 20.0, "tf_margin": 1.0}, {"psnr@16": 21.0, "tf_margin": 1.2}])
    assert full == {"psnr@16": 20.5, "tf_margin": pytest.approx(1.1)}
    assert spread_full == {"psnr@16": 1.0, "tf_margin": pytest.approx(0.2)}
    other, spread_other = mean_and_spread([{"psnr@16": 21.2, "tf_margin": 2.0}, {"psnr@16": 21.6, "tf_margin": 2.1}])
    results = {"variants": {"full": full, "other": other}, "spread": {"full": spread_full, "other": spread_other}}
    gaps = differences(results)["other"]
    assert gaps["psnr@16"]["gap"] == pytest.approx(0.9) and not gaps["psnr@16"]["shown"]  # within full's 1.0
    assert gaps["tf_margin"]["shown"] and gaps["tf_margin"]["spread"] == pytest.approx(0.2)


def test_a_gap_on_one_world_shows_where_the_mean_over_worlds_hides_it():
    def runs(label, game):  # two seeds, two worlds: equal on the car, `game` on the game
        return {
            str(seed): {
                "car": {f"{label}/action_following@16": 1.3 + 0.01 * seed},
                "keyboard_game": {f"{label}/action_following@16": game[seed]},
            }
            for seed in (0, 1)
        }

    results = {"per_embodiment": {"full": runs("full", (2.3, 2.4)), "shared": runs("shared", (1.6, 1.3))}}
    gaps = differences_by_world(results)["shared"]
    assert not gaps["car"]["action_following@16"]["shown"]
    game = gaps["keyboard_game"]["action_following@16"]
    assert game["shown"] and game["gap"] == pytest.approx(-0.9) and game["spread"] == pytest.approx(0.3)
    # The same gap inside a wider spread (one seed far off) is none.
    results["per_embodiment"]["shared"] = runs("shared", (2.4, 1.0))
    assert not differences_by_world(results)["shared"]["keyboard_game"]["action_following@16"]["shown"]


def test_only_expert_routes_every_token_through_one_expert_and_restores_the_router():
    from astra_core.model.moae import MoAE, TopKRouter

    torch.manual_seed(0)
    moae = MoAE(["camera_se3", "robot_ee"], TopKRouter(k=2), num_experts=3, token_dim=8, out_dim=6, zero_init=False)
    actions = {"robot_ee": torch.randn(2, 3, 7)}
    learned = moae.router
    with only_expert(moae, 2):
        out = moae(actions, normalize=False)
        tokens = moae.encoders["robot_ee"](actions["robot_ee"], torch.ones(2, 3)).reshape(6, -1)
        assert torch.allclose(out.features.reshape(6, -1), moae.experts[2](tokens), atol=1e-6)
        assert out.stats["usage"]["robot_ee"] == [0.0, 0.0, 1.0]
    assert moae.router is learned


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
    # The worker notes the SIGTERM and goes on waiting, as an idle pool worker would: after the grace
    # period it exits anyway.
    grandchild = (
        "import signal, sys, time\n"
        "from astra_core.apps.ablate import stop_when_orphaned\n"
        f"signal.signal(signal.SIGTERM, lambda *a: open({str(flag)!r}, 'w').close())\n"
        "stop_when_orphaned(int(sys.argv[1]), interval=0.05, grace=0.5)\n"
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
    pid = out.stdout.strip()
    assert pid.isdigit()
    deadline = time.time() + 20
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists()

    def alive() -> bool:  # gone, or a zombie left for init to reap
        stat = Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    while alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not alive()


@pytest.mark.parametrize("config", ["examples/configs/ablate.yaml", "docs/ablation/ablate.yaml"])
def test_shipped_ablation_configs_build_every_variant(config):
    """Both ablation base configs load, and each variant changes them (none is the base in disguise)."""
    root = Path(__file__).resolve().parents[1]
    base = TrainConfig.from_yaml(root / config)
    for name, variant in VARIANTS.items():
        cfg = variant_config(base, variant, Path("runs") / name, None)
        changed = changed_fields(base.model_dump(mode="json"), cfg)
        assert (changed == []) == (name == "full"), (name, changed)


def test_ablation_records_match_the_config_they_keep():
    """docs/ablation rebuilds its table (docs/ablation/README.md): every record there was trained from
    docs/ablation/ablate.yaml with its variant's changes, so `astra ablate` reuses it, not refuses it."""
    root = Path(__file__).resolve().parents[1]
    base = TrainConfig.from_yaml(root / "docs/ablation/ablate.yaml")
    records = sorted((root / "docs/ablation").glob("*/seed-*/done.json"))
    assert len(records) >= 12
    for record in records:
        name, seed = record.parent.parent.name, int(record.parent.name.removeprefix("seed-"))
        cfg = variant_config(base, VARIANTS[name], record.parent, None, seed)
        assert changed_fields(json.loads(record.read_text())["config"], cfg) == [], record


def test_ablate_without_a_config_outside_a_checkout_says_where_the_default_lives(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # an installed copy run elsewhere: the repository's examples/ is not here
    assert main(["ablate", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "examples/configs/ablate.yaml is not here" in err and "checkout" in err
    assert not (tmp_path / "a").exists()
