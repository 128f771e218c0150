"""The docs match the code: docs/python-api.md's Python blocks execute in order in one namespace (in a
temporary folder), its YAML block describes the same router the Python built, and every command-line
flag the docs show exists."""

import argparse
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


def test_every_command_line_flag_the_docs_show_exists():
    """Each `astra COMMAND ... --flag` in the README, the changelog and docs/ names an option that
    COMMAND's parser has: the docs cannot drift from the command line unnoticed."""
    from astra_core.apps.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    root = DOCS.parent
    seen, unknown = 0, []
    for path in [root / "README.md", root / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]:
        for m in re.finditer(r"(?<![\w/.-])astra ([a-z][a-z-]*)([^`#\n|;)]*)", path.read_text()):
            command, rest = m.groups()
            if command not in commands:  # prose ("astra world"), not a command line
                continue
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                seen += 1
                if flag not in commands[command]._option_string_actions:
                    unknown.append(f"{path.name}: astra {command} {flag}")
    assert seen > 50  # the docs show many command lines; a pattern that matched none would pass vacuously
    assert not unknown, unknown
