"""`astra new-plugin`: the package it writes installs, passes its own tests, and takes a user from its
sample data to an evaluated model with the commands its README gives."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from astra_core.apps.cli import main

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _tutorial() -> list[str]:
    """The bash block of docs/plugins.md's tutorial, one command per line, comments dropped."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    block = re.search(r"## Add your embodiment.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_plugin_tutorial_runs_from_zero_to_an_evaluated_model(tmp_path):
    """docs/plugins.md's commands, run as written (pip without build isolation, so no download; 3
    training steps): the package installs, passes its tests, encodes, trains and evaluates."""
    lines = _tutorial()
    assert lines[0] == "astra new-plugin hexapod" and lines[1] == "cd astra-hexapod"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "2"}
    cwd = tmp_path
    outputs = {}
    try:
        for line in lines:
            if line.startswith("cd "):
                cwd = cwd / line[3:]
                continue
            command = line
            if command == "pip install -e .":
                command = f"{sys.executable} -m pip install -q --no-deps --no-build-isolation -e ."
            if command.startswith("astra train"):
                command += " --steps 3"
            result = subprocess.run(
                command, shell=True, executable="/bin/bash", cwd=cwd, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            outputs[line] = result.stdout
        assert "hexapod_cmd" in outputs["astra plugins"] and "hexapod_npz" in outputs["astra plugins"]
        # the package's own README gives the same commands as the tutorial, from the install on
        readme = re.search(r"```bash\n(.*?)```", (cwd / "README.md").read_text(), flags=re.S).group(1)
        readme_lines = [line.split("  #")[0].strip() for line in readme.splitlines() if line.strip()]
        assert readme_lines == lines[2:]
        for folder in ("eval", "eval-files"):  # from the cache, and straight from the plugin's reader
            figures = json.loads((cwd / folder / "eval.json").read_text())["hexapod"]
            assert "astra/tf_margin" in figures and "astra/action_following@8" in figures
        info = subprocess.run(
            [str(BIN / "astra"), "info", "runs/hexapod/model.safetensors"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(info.stdout)["plugins"]["modality:hexapod_cmd"]["package"] == "astra-hexapod"
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "astra-hexapod"], capture_output=True)


@pytest.mark.parametrize(
    "name, message",
    [
        ("Bad-Name", "lowercase"),
        ("x", "lowercase"),
        ("class", "lowercase"),
        ("car", "already registers the embodiment 'car'; choose another name"),  # a built-in embodiment
        ("discrete", "already registers the modality 'discrete_cmd'"),  # the plugin's modality would be taken
        ("world", "clash with the installed distribution 'astra-world'"),  # the framework's own distribution
        ("core", "clash with the importable package 'astra_core'"),
        ("experts", "clash with the "),  # astra_experts: the package and the entry point both taken
    ],
)
def test_new_plugin_refuses_bad_names_and_used_folders(name, message, tmp_path, capsys):
    assert main(["new-plugin", name, "--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "p").exists()
    (tmp_path / "used").mkdir()
    assert main(["new-plugin", "fine_name", "--out", str(tmp_path / "used")]) == 2
    assert "already exists" in capsys.readouterr().err
