import json
import subprocess
import sys
import types

import pytest

import astra_core
from astra_core.cli import main
from astra_core.modality import AlignedActions, Modality
from astra_core.plugins import PluginError, get_registry, hookimpl, manager, plugins, reset_plugins

BUILTIN_MODALITIES = {"camera_se3", "vehicle_pose", "robot_ee", "discrete_cmd"}


class Toy(Modality):
    name = "toy_modality"
    action_dim = 2
    raw_format = "[T, 2]"

    def align(self, raw, temporal_factor):
        return AlignedActions(raw, raw[:, 0] * 0 + 1)


def _plugin(**hooks):
    module = types.ModuleType("fake_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


@pytest.fixture
def fresh_plugins():
    reset_plugins()
    yield plugins()
    reset_plugins()


def test_hookimpl_is_exported_from_the_core():
    assert astra_core.hookimpl is hookimpl


def test_builtins_load_through_entry_points(fresh_plugins):
    reg = get_registry()
    assert BUILTIN_MODALITIES <= set(reg.modalities)
    assert {"topk", "soft", "fixed", "shared"} <= set(reg.routers)
    assert reg.owner[("modalities", "camera_se3")] == "experts"
    assert {"free_camera", "car", "tabletop_arm", "keyboard_game"} <= set(reg.embodiments)


def test_a_plugin_registered_by_hand_and_unregistered_in_finally(fresh_plugins):
    fresh_plugins.register_plugin(_plugin(astra_register_modalities=lambda register: register(Toy())), "toy")
    try:
        assert "toy_modality" in get_registry().modalities
        assert fresh_plugins.info["toy"].registers == {"modalities": ["toy_modality"]}
    finally:
        fresh_plugins.unregister_plugin("toy")
    assert "toy_modality" not in get_registry().modalities


def test_two_plugins_registering_one_name_fail_naming_both(fresh_plugins):
    class Clash(Toy):
        name = "camera_se3"

    fresh_plugins.register_plugin(_plugin(astra_register_modalities=lambda register: register(Clash())), "clasher")
    try:
        with pytest.raises(
            PluginError, match="'camera_se3' is registered by both plugin 'experts' and plugin 'clasher'"
        ):
            get_registry()
    finally:
        fresh_plugins.unregister_plugin("clasher")


class _EntryPoint:
    def __init__(self, name, target, fail=None):
        self.name, self.value, self._target, self._fail = name, f"{name}.plugin", target, fail
        self.dist = types.SimpleNamespace(version="9.9")

    def load(self):
        if self._fail:
            raise self._fail
        return self._target


def test_a_broken_plugin_is_reported_and_the_rest_still_load(fresh_plugins, monkeypatch, capsys):
    good = _plugin(astra_register_modalities=lambda register: register(Toy()))
    eps = [_EntryPoint("broken", None, ImportError("No module named 'missing_dep'")), _EntryPoint("good", good)]
    monkeypatch.setattr(manager, "entry_points", lambda group: eps if group == "astra" else [])
    reg = get_registry()
    assert "toy_modality" in reg.modalities
    assert fresh_plugins.info["broken"].error == "ImportError: No module named 'missing_dep'"
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["plugins"]}
    assert rows["broken"]["error"].startswith("ImportError") and rows["good"]["version"] == "9.9"
    assert rows["good"]["registers"] == {"modalities": ["toy_modality"]}
    reset_plugins()
    main(["plugins"])
    text = capsys.readouterr().out
    assert "FAILED TO LOAD: ImportError" in text and "toy_modality" in text


def test_autoload_can_be_turned_off(fresh_plugins, monkeypatch):
    monkeypatch.setenv("ASTRA_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = get_registry()
    assert not reg.modalities and set(reg.routers) == {"topk", "soft", "fixed", "shared"}


def test_unknown_names_are_clear(fresh_plugins):
    with pytest.raises(PluginError, match="unknown modality 'sonar'; registered: .*camera_se3"):
        get_registry().get("modalities", "sonar")


def test_the_core_never_imports_the_builtin_plugins():
    code = (
        "import pkgutil, importlib, sys, astra_core\n"
        "for m in pkgutil.walk_packages(astra_core.__path__, 'astra_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "from astra_core.plugins import get_registry\n"
        "bad = [m for m in sys.modules if m.startswith(('astra_experts', 'astra_embodiments'))]\n"
        "print(bad)\n"
    )
    env = {"ASTRA_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
    import pathlib

    core = pathlib.Path(astra_core.__file__).parent
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert "astra_experts" not in text and "astra_embodiments" not in text, path
