import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_moae_api_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "moae_api.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("topk") and "features (2, 4, 64)" in line for line in lines)
    assert "camera_se3" in lines[0]


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = text.split("## Python API (latent space)", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "model.safetensors").is_file()
