"""The docs match the code: docs/python-api.md's Python blocks execute in order in one namespace (in a
temporary folder), its YAML block describes the same router the Python built, and every command-line
flag and config key the docs name exists."""

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


def _doc_files() -> list[Path]:
    """The pages a user reads: the README, the changelog and docs/."""
    return [DOCS.parent / "README.md", DOCS.parent / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


def test_every_command_line_flag_the_docs_show_exists():
    """Each `astra COMMAND ... --flag` in the README, the changelog and docs/ names an option that
    COMMAND's parser has: the docs cannot drift from the command line unnoticed."""
    from astra_core.apps.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    seen, unknown = 0, []
    for path in _doc_files():
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


def _has_key(model, parts: list[str]) -> bool:
    """Whether the dotted config key `parts` names a field of the pydantic `model` (a key below a field
    that is not a pydantic model, such as `data.weights.car`, counts as the field's)."""
    import typing

    from pydantic import BaseModel

    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return True
        if part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else annotation
    return True


def test_every_config_key_the_docs_name_exists():
    """Each dotted config key the docs name in backticks (`model.flow.warp_mode`, `data.phases`, or the
    short form below `model`, `flow.splat_rank`) is a field of the config, so a renamed or removed
    option cannot live on in the docs."""
    from astra_core.config import AstraConfig, TrainConfig

    below_model = list(AstraConfig.model_fields)
    pattern = r"`((?:model|data|optim|" + "|".join(below_model) + r")(?:\.[a-z_0-9]+)+)(?=[`:\s=])"
    seen, unknown = 0, []
    for path in _doc_files():
        for m in re.finditer(pattern, path.read_text()):
            parts = m.group(1).split(".")
            if parts[-1] in ("safetensors", "py", "yaml", "md", "json"):  # a file name, not a key
                continue
            seen += 1
            config = TrainConfig if parts[0] in ("model", "data", "optim") else AstraConfig
            if not _has_key(config, parts):
                unknown.append(f"{path.name}: {m.group(1)}")
    assert seen > 50
    assert not unknown, unknown
