"""The docs' code runs: docs/python-api.md's Python blocks execute in order in one namespace (in a
temporary folder), and its YAML block describes the same router the Python built."""

import re
from pathlib import Path

import yaml

from astra_core.plugins import reset_plugins

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_python_api_page_runs(tmp_path, monkeypatch):
    text = (DOCS / "python-api.md").read_text()
    blocks = _blocks(text, "python")
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "python_api_page"}
    reset_plugins()
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"docs/python-api.md block {number}", "exec"), namespace)
        assert (tmp_path / "runs" / "api-walkthrough" / "model.safetensors").is_file()
        # the YAML form of the composed router is the spec the Python one stores
        from astra_core.model.moae import build_router, router_spec

        (action,) = [yaml.safe_load(b)["action"] for b in _blocks(text, "yaml") if "router:" in b]
        from_yaml = build_router({"name": action["router"], "options": action["router_options"]})
        assert router_spec(from_yaml) == router_spec(namespace["router"])
    finally:
        reset_plugins()
