"""`astra new-plugin`: the package it writes installs, passes its own tests, and takes a user from its
sample data to an evaluated model with the commands its README gives."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astra_core.cli import main

BIN = Path(sys.executable).parent


def _run(args, cwd, **env):
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2", **env}
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_new_plugin_installs_tests_trains_and_evaluates(tmp_path, capsys):
    assert main(["new-plugin", "scaffoldtest", "--out", str(tmp_path / "pkg")]) == 0
    pkg = tmp_path / "pkg"
    assert (pkg / "pyproject.toml").is_file() and (pkg / "README.md").is_file()
    pip = [sys.executable, "-m", "pip"]
    _run(pip + ["install", "-q", "--no-deps", "--no-build-isolation", "-e", str(pkg)], tmp_path)
    try:
        listed = json.loads(_run([str(BIN / "astra"), "plugins", "--json"], pkg))
        (row,) = [r for r in listed["plugins"] if r["name"] == "scaffoldtest"]
        assert row["registers"] == {
            "modalities": ["scaffoldtest_cmd"],
            "readers": ["scaffoldtest_npz"],
            "embodiments": ["scaffoldtest"],
        }
        _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], pkg)
        _run([sys.executable, "-m", "astra_scaffoldtest.sample", "data"], pkg)
        data = sorted(str(p) for p in (pkg / "data").glob("*.npz"))
        _run([str(BIN / "astra"), "encode", "--reader", "scaffoldtest_npz", *data, "--out", "cache"], pkg)
        _run([str(BIN / "astra"), "train", "configs/train.yaml", "--steps", "3"], pkg)
        checkpoint = pkg / "runs" / "scaffoldtest" / "model.safetensors"
        info = json.loads(_run([str(BIN / "astra"), "info", str(checkpoint)], pkg))
        assert info["plugins"]["modality:scaffoldtest_cmd"]["package"] == "astra-scaffoldtest"
        _run(
            [
                str(BIN / "astra"),
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--cache",
                "cache/*.h5",
                "--steps",
                "1",
                "--horizons",
                "8",
                "--out",
                "eval",
            ],
            pkg,
        )
        figures = json.loads((pkg / "eval" / "eval.json").read_text())["scaffoldtest"]
        assert "astra/tf_margin" in figures and "astra/action_following@8" in figures
    finally:
        _run(pip + ["uninstall", "-y", "-q", "astra-scaffoldtest"], tmp_path)


@pytest.mark.parametrize("name, message", [("Bad-Name", "lowercase"), ("x", "lowercase"), ("class", "lowercase")])
def test_new_plugin_refuses_bad_names_and_used_folders(name, message, tmp_path, capsys):
    assert main(["new-plugin", name, "--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "p").exists()
    (tmp_path / "used").mkdir()
    assert main(["new-plugin", "fine_name", "--out", str(tmp_path / "used")]) == 2
    assert "already exists" in capsys.readouterr().err
