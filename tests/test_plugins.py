import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import astra_core
from astra_core.apps.cli import main
from astra_core.errors import CheckpointError
from astra_core.modality import AlignedActions, Modality
from astra_core.plugins import PluginError, get_registry, hookimpl, manager, plugins, reset_plugins

BUILTIN_MODALITIES = {"camera_se3", "vehicle_pose", "robot_ee", "discrete_cmd"}


class Toy(Modality):
    name = "toy_modality"
    action_dim = 2
    raw_format = "[T, 2]"

    def align(self, raw, temporal_factor):
        return AlignedActions(raw, raw[:, 0] * 0 + 1)


def safe_open_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


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


def test_a_second_plugin_taking_a_name_is_left_out_naming_both(fresh_plugins):
    class Clash(Toy):
        name = "camera_se3"

    hooks = dict(
        astra_register_modalities=lambda register: register(Clash()),
        astra_register_embodiments=lambda register: None,
    )
    fresh_plugins.register_plugin(_plugin(**hooks), "clasher", package="astra-clasher")
    try:
        registry = get_registry()
        assert registry.owner[("modalities", "camera_se3")] == "experts"  # the first keeps it
        assert type(registry.modalities["camera_se3"]).__name__ != "Clash"
        error = fresh_plugins.info["clasher"].error
        assert "'camera_se3' is registered by both plugin 'experts' (package 'astra-world')" in error
        assert "plugin 'clasher' (package 'astra-clasher')" in error
        assert fresh_plugins.info["clasher"].registers == {}
        with pytest.raises(PluginError, match="unknown modality 'sonar'.*'clasher'.*failed: modalities"):
            registry.get("modalities", "sonar")
    finally:
        fresh_plugins.unregister_plugin("clasher")


def _boom(register):
    raise RuntimeError("boom")


def _register_half_then_fail(register):
    register(Toy())
    raise ValueError("late")


@pytest.mark.parametrize(
    "hooks, reason",
    [
        (dict(astra_register_modalities=_boom), "astra_register_modalities raised RuntimeError: boom"),
        (dict(astra_register_modalities=lambda register: register(object())), "has no string `name`"),
        (dict(astra_register_modalities=lambda register: register(Toy(), Toy())), "takes one modality"),
        (
            dict(astra_register_modalities=lambda register: register(types.SimpleNamespace(name="fake"))),
            "not an astra_core.Modality",
        ),
        (dict(astra_register_routers=lambda register: register("r")), "register(name, router_class)"),
        (dict(astra_register_routers=lambda register: register(3, dict)), "register(name, router_class)"),
        (dict(astra_register_modalities=_register_half_then_fail), "raised ValueError: late"),
    ],
)
def test_a_failing_hook_marks_its_plugin_failed_and_the_rest_works(fresh_plugins, capsys, hooks, reason):
    fresh_plugins.register_plugin(_plugin(**hooks), "bad")
    try:
        registry = get_registry()
        assert BUILTIN_MODALITIES <= set(registry.modalities)
        assert "toy_modality" not in registry.modalities  # nothing of a failed plugin is kept
        assert reason in fresh_plugins.info["bad"].error
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert "FAILED TO LOAD" in out and reason in out
        shipped = Path(astra_core.__file__).parent / "assets" / "toy_default.safetensors"
        assert main(["info", str(shipped)]) == 0  # a command that reads the registry still works
    finally:
        fresh_plugins.unregister_plugin("bad")


def test_two_packages_declaring_one_entry_point_name_are_both_named(fresh_plugins, monkeypatch):
    one = _plugin(astra_register_modalities=lambda register: register(Toy()))
    eps = [_EntryPoint("dup", one, package="astra-dup-one"), _EntryPoint("dup", one, package="astra-dup-two")]
    monkeypatch.setattr(manager, "entry_points", lambda group: eps if group == "astra" else [])
    reg = get_registry()
    assert "toy_modality" in reg.modalities
    second = fresh_plugins.info["dup (astra-dup-two)"]
    assert "'dup' is taken by plugin 'dup' (package 'astra-dup-one')" in second.error
    assert "rename one of the two" in second.error


class _EntryPoint:
    def __init__(self, name, target, fail=None, package=""):
        self.name, self.value, self._target, self._fail = name, f"{name}.plugin", target, fail
        self.dist = types.SimpleNamespace(version="9.9", name=package)

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
    assert not reg.modalities and set(reg.routers) == {"topk", "soft", "fixed", "shared", "per_modality", "mixture"}


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


def test_a_checkpoint_names_the_plugins_it_needs(fresh_plugins, tmp_path, capsys):
    """The package and version of the plugin behind each modality and the router are stored; loading
    without that plugin says which package to install; `astra info` shows them."""
    from astra_core.checkpoint import load_world_checkpoint, save_checkpoint
    from astra_core.config import ActionConfig, AstraConfig, dit_preset
    from astra_core.model.actions import AstraNet

    class Sonar(Toy):
        name = "sonar_ping"

    hooks = _plugin(astra_register_modalities=lambda register: register(Sonar()))
    fresh_plugins.register_plugin(hooks, "sonar", version="1.4.2", package="astra-sonar")
    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=16, out_dim=16),
        action=ActionConfig(encoder="moae", modalities=("camera_se3", "sonar_ping"), token_dim=8, expert_hidden=8),
    )
    path = save_checkpoint(tmp_path / "m.safetensors", AstraNet(cfg))
    assert main(["info", str(path)]) == 0
    provenance = json.loads(capsys.readouterr().out)["plugins"]
    assert provenance["modality:sonar_ping"] == {"plugin": "sonar", "package": "astra-sonar", "version": "1.4.2"}
    assert provenance["modality:camera_se3"]["plugin"] == "experts"
    assert provenance["router:topk"]["plugin"] == "astra_core"
    fresh_plugins.unregister_plugin("sonar")
    with pytest.raises(
        CheckpointError,
        match=r"needs the modality 'sonar_ping' from plugin 'sonar' \(package "
        r"'astra-sonar' 1\.4\.2\).*pip install astra-sonar",
    ):
        load_world_checkpoint(path)
    assert main(["info", str(path)]) == 2
    assert "pip install astra-sonar" in capsys.readouterr().err


def test_a_checkpoint_names_the_plugin_of_a_router_inside_a_combinator(fresh_plugins, tmp_path):
    """A plugin's router given as one of `mixture`'s (or `per_modality`'s) routers is recorded too, so
    loading without it names the package, as for the top-level router."""
    from astra_core.checkpoint import load_world_checkpoint, save_checkpoint
    from astra_core.config import ActionConfig, AstraConfig, dit_preset
    from astra_core.model.actions import AstraNet
    from astra_core.model.moae import FixedRouter

    class Nearest(FixedRouter):
        pass

    hooks = _plugin(astra_register_routers=lambda register: register("nearest", Nearest))
    fresh_plugins.register_plugin(hooks, "routing", version="0.3", package="astra-routing")
    dit = dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=16, out_dim=16)
    for router, options in [
        ("mixture", {"routers": [{"name": "nearest"}, "topk"]}),
        ("per_modality", {"routers": {"camera_se3": "nearest"}, "default": {"name": "soft", "options": {}}}),
    ]:
        action = ActionConfig(
            encoder="moae", modalities=("camera_se3",), router=router, router_options=options, token_dim=8
        )
        path = save_checkpoint(tmp_path / f"{router}.safetensors", AstraNet(AstraConfig(dit=dit, action=action)))
        provenance = json.loads(safe_open_metadata(path)["plugins"])
        assert provenance[f"router:{router}"]["plugin"] == "astra_core"
        assert provenance["router:nearest"] == {"plugin": "routing", "package": "astra-routing", "version": "0.3"}
    fresh_plugins.unregister_plugin("routing")
    with pytest.raises(CheckpointError, match="pip install astra-routing"):
        load_world_checkpoint(path)
