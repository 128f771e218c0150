"""The wheel holds the whole package: built, installed into a fresh virtual environment (which borrows
only the third-party libraries of this one), `astra --help` runs and every subpackage imports from
the installed copy, shipped model included. A subpackage left out of the wheel fails here."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = [
    "astra_core",
    "astra_core.apps.cli",
    "astra_core.apps.train",
    "astra_core.data",
    "astra_core.data.cache",
    "astra_core.model",
    "astra_core.model.moae",
    "astra_core.plugins",
    "astra_experts",
    "astra_embodiments.readers",
    "astra_embodiments.toy",
]


def _run(args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_wheel_installs_into_a_fresh_environment_and_every_subpackage_imports(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ROOT])
    (wheel,) = dist.glob("astra_world-*.whl")
    env = tmp_path / "env"
    _run([sys.executable, "-m", "venv", env])
    python = env / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    # the third-party libraries (torch, ...) from this environment, behind the fresh one's own packages
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    assert "usage: astra" in _run([env / "bin" / "astra", "--help"], cwd=tmp_path)
    code = (
        "import importlib, astra_core\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
        "from astra_core.world import DEFAULT_CHECKPOINT\n"
        "assert DEFAULT_CHECKPOINT.is_file(), DEFAULT_CHECKPOINT\n"
        "print('ok', astra_core.__version__)\n"
    )
    assert _run([python, "-c", code], cwd=tmp_path).startswith("ok ")
