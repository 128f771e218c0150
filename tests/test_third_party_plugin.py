"""Installs examples/astra-quadrotor for real (no network) and uses it from a fresh interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "astra-quadrotor"

TRAIN = r"""
import numpy as np, torch
from astra_core.config import ActionConfig
from astra_core.model.actions import AstraNet
from astra_core.model.objective import WorldModelObjective
from astra_core.plugins import get_registry
from _helpers import make_config

reg = get_registry()
episode = reg.readers["quadrotor_csv"].read(LOG)
aligned = reg.modalities["quadrotor_rates"].align(episode.actions["quadrotor_rates"], 4)
cfg = make_config().model_copy(update={"action": ActionConfig(
    encoder="moae", modalities=("quadrotor_rates", "camera_se3"), token_dim=16, expert_hidden=32)})
torch.manual_seed(0)
net = AstraNet(cfg).train()
acts = torch.tensor(aligned.actions)[None, :5]
mask = torch.tensor(aligned.mask)[None, :5]
net.moae.normalizers["quadrotor_rates"].fit(torch.tensor(aligned.actions), torch.tensor(aligned.mask))
before = net.moae.encoders["quadrotor_rates"].rates.weight.detach().clone()
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
objective = WorldModelObjective(net)
latents = torch.randn(1, 8, 5, 4, 4)
gen = torch.Generator().manual_seed(0)
losses = []
for _ in range(5):
    loss, logs = objective.loss(latents, {"quadrotor_rates": acts}, {"quadrotor_rates": mask}, 3, generator=gen)
    opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
changed = not torch.equal(before, net.moae.encoders["quadrotor_rates"].rates.weight)
print(json.dumps({"fps": episode.fps, "frames": len(aligned.actions), "losses": losses, "encoder_trained": changed,
                  "usage": logs["router_usage"]}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(PLUGIN),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.pop("ASTRA_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def test_installed_plugin_shows_up_in_astra_plugins(installed):
    out = subprocess.run(
        [sys.executable, "-m", "astra_core.apps.cli", "plugins", "--json"],
        env=installed,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)["plugins"]}
    assert rows["quadrotor"]["version"] == "0.1.0" and rows["quadrotor"]["error"] is None
    assert rows["quadrotor"]["registers"] == {
        "modalities": ["quadrotor_rates"],
        "readers": ["quadrotor_csv"],
        "embodiments": ["quadrotor"],
    }
    assert "experts" in rows  # the built-ins are still there


def test_a_model_with_the_plugin_modality_trains(installed, tmp_path):
    log = tmp_path / "flight.csv"
    lines = ["t,p,q,r,thrust"] + [f"{i / 20:.3f},{0.1 * i % 1:.3f},0.2,-0.1,{0.5 + 0.01 * i:.3f}" for i in range(33)]
    log.write_text("\n".join(lines) + "\n")
    code = f"import json\nLOG = {str(log)!r}\n" + TRAIN
    out = subprocess.run([sys.executable, "-c", code], env=installed, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["fps"] == pytest.approx(20.0) and result["frames"] == 9
    assert all(x == x and x < 1e3 for x in result["losses"]) and result["encoder_trained"]
    assert set(result["usage"]) == {"quadrotor_rates"}


def test_the_core_does_not_know_the_plugin():
    core = ROOT / "astra_core"
    assert not [p for p in core.rglob("*.py") if "quadrotor" in p.read_text()]


CHECKS = r"""
import json, numpy as np
from astra_core.errors import ReaderError, ShapeError
from astra_core.plugins import get_registry

reg = get_registry()
said = {}
try:
    reg.readers["quadrotor_csv"].read(BAD)
except ReaderError as err:
    said["reader"] = str(err)
rates = np.tile([0.1, 0.2, -0.1, 0.5], (9, 1))
rates[5, 3] = 3.0  # thrust in newtons, not normalised
try:
    reg.modalities["quadrotor_rates"].align(rates, 4)
except ShapeError as err:
    said["bounds"] = str(err)
print(json.dumps(said))
"""


def test_the_plugin_refuses_a_bad_log_and_values_past_its_bounds(installed, tmp_path):
    bad = tmp_path / "flight.csv"
    bad.write_text("time,p,q,r,thrust\n0,0,0,0,0.5\n")
    code = f"BAD = {str(bad)!r}\n" + CHECKS
    out = subprocess.run([sys.executable, "-c", code], env=installed, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    said = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(bad) in said["reader"] and "t,p,q,r,thrust" in said["reader"]
    assert "quadrotor_rates" in said["bounds"] and "thrust" in said["bounds"] and "frame 5" in said["bounds"]
